"""The T5 SentencePiece tokenizer of a model directory."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError

# every file that makes up a tokenizer in a model directory (copied, downloaded and hashed as a set)
TOKENIZER_FILES = ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")


def load_tokenizer(model_dir: str | Path):
    """Load the tokenizer files of ``model_dir`` (no network access)."""
    d = Path(model_dir)
    if not any((d / f).exists() for f in ("spiece.model", "tokenizer.json")):
        raise ModelError(f"{d}: no tokenizer files (spiece.model / tokenizer.json); "
                         "download the model again or copy the Flan-T5 tokenizer files there", path=str(d))
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    except Exception as exc:  # transformers raises many types for broken files
        raise ModelError(f"{d}: cannot load the tokenizer ({exc})") from None
