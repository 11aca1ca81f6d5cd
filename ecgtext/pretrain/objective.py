"""The pretraining objective: the model's losses weighted into one total."""

from __future__ import annotations

import torch
from torch import nn


class Objective(nn.Module):
    """The four D-BETA losses as one module, so DDP sees one forward per micro-batch."""

    def __init__(self, model: nn.Module, gather_text=None, norm_pix: bool = False,
                 ets_scale: float = 1.0, ets_bias: float | None = None):
        super().__init__()
        self.model = model
        self.gather_text = gather_text
        self.norm_pix = norm_pix
        self.ets_scale, self.ets_bias = ets_scale, ets_bias

    def forward(self, ecg, input_ids, attention_mask, mlm_labels, is_aligned, noise):
        from ..model.dbeta import pretraining_losses

        seen = {}

        def gather(text):
            out = self.gather_text(text) if self.gather_text else (text, 0)
            seen["cols"] = out[0].shape[0]
            return out

        parts, out = pretraining_losses(self.model, ecg, input_ids, attention_mask, mlm_labels, is_aligned,
                                        noise=noise, norm_pix=self.norm_pix, gather_text=gather,
                                        ets_scale=self.ets_scale, ets_bias=self.ets_bias)
        with torch.no_grad():
            picked = mlm_labels != -100
            mlm_ok = (out.mlm_logits.argmax(-1) == mlm_labels) & picked
            etm_ok = out.etm_logits.argmax(-1) == is_aligned
        return {"total": parts.total, "mlm": parts.mlm, "mem": parts.mem, "etm": parts.etm, "ets": parts.ets,
                "mlm_correct": mlm_ok.sum(), "mlm_count": picked.sum(), "etm_correct": etm_ok.sum(),
                "ets_cols": torch.tensor(seen.get("cols", ecg.shape[0]), device=ecg.device)}
