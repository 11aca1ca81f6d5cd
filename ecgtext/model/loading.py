"""Build, load and save D-BETA models: strict, safe, no random-weight fallback.

A model directory holds ``config.json``, weights as ``model.safetensors`` or a
published-format ``*.pt`` (``{"model": state_dict}``), and tokenizer files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Mapping

import torch

from ..config import ModelDirConfig, load_config, load_preset
from ..errors import CheckpointMismatchError, ModelError
from .dbeta import ECG_PATH_PREFIXES, TOLERATED_EXTRA_KEYS, Components, DBeta
from .tokenizer import TOKENIZER_FILES

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


def read_checkpoint(path: str | Path, prefixes: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a (published-format) torch file.

    Torch files are read with ``weights_only=True``: no pickled code runs. A
    ``{"model": state_dict}`` wrapper and DDP ``module.`` prefixes are unwrapped.
    With ``prefixes``, safetensors files are read partially (only those keys),
    which is what makes ECG-only loading of a base model cheap.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: weights file not found")
    try:
        if p.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                keys = [k for k in f.keys() if prefixes is None or k.startswith(prefixes)]
                sd = {k: f.get_tensor(k) for k in keys}
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
            sd = obj.get("model", obj) if isinstance(obj, Mapping) else obj
    except Exception as exc:  # corrupt / truncated / unsafe pickle
        raise ModelError(f"{p}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{p}: not a state dict (expected a mapping of tensors, or {{'model': state_dict}})")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def find_weights(model_dir: Path) -> Path:
    """The weights file of a model directory: ``model.safetensors``, else the one torch file."""
    st = model_dir / "model.safetensors"
    if st.is_file():
        return st
    cands = sorted(p for p in model_dir.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not cands:
        raise ModelError(f"{model_dir}: no weights (model.safetensors or a *.pt checkpoint); "
                         "refusing to use random weights")
    if len(cands) > 1:
        raise ModelError(f"{model_dir}: several weight files ({', '.join(p.name for p in cands)}); keep one")
    return cands[0]


def _summarise(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_strict(model: DBeta, sd: Mapping[str, torch.Tensor], where: str = "checkpoint") -> None:
    """Load ``sd`` into ``model``; any missing / unexpected key or shape mismatch is an error.

    Only ``ecg_encoder.mask_emb`` (unused, in published files) is dropped. For an
    ECG-only model, keys outside the ECG path are ignored.
    """
    sd = {k: v for k, v in sd.items() if k not in TOLERATED_EXTRA_KEYS}
    if model.components == "ecg":
        sd = {k: v for k, v in sd.items() if k.startswith(ECG_PATH_PREFIXES)}
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad_shape = sorted(f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
                       for k in set(own) & set(sd) if tuple(sd[k].shape) != tuple(own[k].shape))
    problems = []
    if missing:
        problems.append(f"missing keys: {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_summarise(unexpected)}")
    if bad_shape:
        problems.append(f"shape mismatch (checkpoint vs model): {_summarise(bad_shape)}")
    if problems:
        raise CheckpointMismatchError(f"{where} does not match the architecture in config.json: "
                                      + "; ".join(problems))
    # assign=True keeps meta-built models cheap; dtype follows the model's
    sd = {k: v.to(own[k].dtype) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    # tied T5 input embedding: assign=True replaces the Parameter objects, re-tie them
    if model.components == "all" and hasattr(model.language_encoder, "encoder"):
        enc = model.language_encoder
        if not torch.equal(enc.shared.weight, enc.encoder.embed_tokens.weight):
            raise CheckpointMismatchError(
                f"{where}: language_encoder.shared.weight and language_encoder.encoder.embed_tokens.weight differ")
        enc.encoder.embed_tokens.weight = enc.shared.weight


def build_model(config: ModelDirConfig | str, components: Components = "all", *, random_init: bool = True) -> DBeta:
    """The one model builder: a model from a config or a preset name.

    ``random_init=True`` initialises weights as the reference does (pretraining,
    random baselines, tests); ``False`` leaves them uninitialised for a strict
    load to fill (fast, see :func:`skip_random_init`).
    """
    if isinstance(config, str):
        config = load_preset(config)
    if random_init:
        return DBeta(config, components=components)
    with skip_random_init():
        return DBeta(config, components=components)


_SKIPPED_INITS = ("normal_", "uniform_", "kaiming_normal_", "kaiming_uniform_", "xavier_normal_",
                  "xavier_uniform_", "trunc_normal_", "orthogonal_")


class _SkipInit(torch.overrides.TorchFunctionMode):
    """Turns random initialisers into no-ops for the thread that enters it.

    Torch-function modes live on a per-thread stack, so other threads building
    or initialising modules at the same time are unaffected (unlike patching
    ``torch.nn.init``). Random init costs > 1 s for the base ECG path on 2 cores,
    and building on the meta device instead makes torch import ``torch._dynamo``
    (1.5-15 s): that is why we skip init this way.
    """

    _funcs = frozenset(
        [getattr(torch.nn.init, n) for n in _SKIPPED_INITS if hasattr(torch.nn.init, n)]
        + [getattr(torch.Tensor, n) for n in ("normal_", "uniform_")])

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self._funcs:
            return args[0] if args else (kwargs or {}).get("tensor")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def skip_random_init():
    """Build modules without random initialisation (weights left as ``torch.empty``).

    A strict load then replaces every parameter and persistent buffer.
    Thread-safe: only the calling thread is affected.
    """
    with _SkipInit():
        yield


def load_model_dir(model_dir: str | os.PathLike, device: str | torch.device | None = None,
                   components: Components = "all", dtype: torch.dtype | None = None) -> DBeta:
    """Load a ready model (eval mode) from a model directory (``config.json`` + weights).

    ``components="ecg"`` loads only the ECG feature path (fast; enough for
    ``encode_ecg``). Weights must match the architecture exactly. Registry names
    and ``hf-hub:`` ids are resolved by :func:`ecgtext.load_model` (the Hub layer).
    """
    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: no such model directory", path=str(model_dir))
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir}: no config.json (not a model directory)")
    config = load_config(model_dir)
    weights = find_weights(model_dir)
    sd = read_checkpoint(weights, prefixes=ECG_PATH_PREFIXES if components == "ecg" else None)
    model = build_model(config, components, random_init=False)
    load_state_strict(model, sd, where=str(weights))
    _check_no_uninitialised_buffers(model)
    model.model_dir = model_dir
    model.eval()
    if dtype is not None:
        model.to(dtype)
    if device is not None:
        model.to(device)
    return model


# Directory-only loader under its historical name (``ecgtext.load_model`` resolves names too).
load_model = load_model_dir


def _check_no_uninitialised_buffers(model: DBeta) -> None:
    """Non-persistent buffers are not in the state dict, so nothing would fill them."""
    stray = {n for n, _ in model.named_buffers()} - set(model.state_dict())
    if stray:
        raise ModelError(f"internal: non-persistent buffers {sorted(stray)} are not in the checkpoint")


def state_dict_for_saving(model: DBeta) -> dict[str, torch.Tensor]:
    """The model's state dict in the published naming, every tensor its own storage
    (safetensors refuses shared storage; the T5 embedding appears under two names)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_model_dir(model: DBeta, out_dir: str | Path, tokenizer_from: str | Path | None = None,
                   extra_config: dict | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (+ tokenizer files) atomically."""
    from ..fsutil import atomic_dir

    if model.components != "all":
        raise ModelError("only a full model (components='all') can be saved as a model directory")
    out = Path(out_dir)
    # written next to ``out`` and swapped in; an existing ``out`` survives any failure
    with atomic_dir(out) as tmp:
        cfg = model.config.to_dict()
        if extra_config:
            cfg.update(extra_config)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        save_safetensors(state_dict_for_saving(model), tmp / "model.safetensors")
        src = Path(tokenizer_from) if tokenizer_from else model.model_dir
        if src is not None:
            copy_tokenizer_files(src, tmp)
    return out


def save_safetensors(state: dict, path: str | os.PathLike) -> None:
    """Write a state dict as safetensors; tensors that share storage (the tied T5
    embedding appears as ``language_encoder.shared.weight`` and
    ``language_encoder.encoder.embed_tokens.weight``) are cloned so every key is stored."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        v = v.detach()
        ptr = v.untyped_storage().data_ptr()
        if ptr and ptr in seen:
            v = v.clone()
        seen.add(ptr)
        out[k] = v.contiguous()
    save_file(out, str(path), metadata={"format": "pt"})
    from ..fsutil import apply_umask

    apply_umask(path)  # safetensors creates its files 0600; model folders are shared


def copy_tokenizer_files(src: str | Path, dst: str | Path) -> None:
    for name in TOKENIZER_FILES:
        f = Path(src) / name
        if f.is_file():
            shutil.copyfile(f, Path(dst) / name)  # the umask's mode, not the source's
