"""The D-BETA model: ECG encoder, T5 text encoder, cross-attention fusion, heads."""
