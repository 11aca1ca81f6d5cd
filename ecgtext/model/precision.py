"""Numeric precision of inference: what this CPU does natively, what ``auto`` means,
and the ECG feature path prepared once for the chosen precision.

Rule (one place; the provenance block records its result):

- ``fp32``: the reference model, bit-for-bit the conformance path.
- ``bf16``: on a CPU, :class:`~ecgtext.model.fast_ecg.FastEcgPath` (weights cast
  once, fused layers); on CUDA, bf16 autocast around the reference model.
- ``int8``: CPU only, opt-in: the fast path in float32 with its transformer
  linear layers dynamically quantised to int8 by ``torchao`` (optional extra
  ``ecgtext[int8]``).
- ``auto``: the ``ECGTEXT_PRECISION`` environment variable when set, otherwise
  bf16 on CUDA (when the GPU supports it) and on CPUs with native bf16
  (AVX512-BF16 or AMX), fp32 on every other CPU.

Fallbacks, documented: ``bf16`` asked for explicitly on a CPU without native
bf16 still runs (same numbers as on a native CPU up to rounding, useful to
reproduce bf16 features) with a warning that it is slower than fp32 there.
``int8`` on a CPU without int8 dot-product instructions (AVX512-VNNI, AVX-VNNI,
AMX) or without ``torchao`` is a one-line error: it would be slower than fp32.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from ..errors import ConfigError
from .text_encoder import quiet_torchao_import

if TYPE_CHECKING:  # pragma: no cover
    from .dbeta import DBeta

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "int8")  # what may be asked for
RESOLVED = ("fp32", "bf16", "int8")  # what a model runs in (and provenance records)
ENV_VAR = "ECGTEXT_PRECISION"

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class CpuFeatures:
    """What this CPU can do for low-precision inference.

    ``flags``: the instruction-set flags of ``/proc/cpuinfo`` (empty elsewhere);
    ``capability``: ``torch.backends.cpu.get_cpu_capability()`` (``"AVX512"``,
    ``"AVX2"``, ``"DEFAULT"``, ...), the kernels torch dispatches to.
    """

    model: str
    flags: frozenset[str]
    capability: str

    @property
    def native_bf16(self) -> bool:
        """bf16 matrix products in hardware: AVX512-BF16, AMX, or an Arm CPU with BF16."""
        return any(f in self.flags for f in _BF16_FLAGS) or (
            "bf16" in self.flags and platform.machine().lower() in ("aarch64", "arm64"))

    @property
    def amx(self) -> bool:
        return "amx_bf16" in self.flags or "amx_tile" in self.flags

    @property
    def fast_int8(self) -> bool:
        """int8 dot products in hardware (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
        return any(f in self.flags for f in _INT8_FLAGS)

    def describe(self) -> str:
        """One line: model, torch kernels and the low-precision instructions present."""
        low = [f for f in _BF16_FLAGS + ("amx_tile",) + _INT8_FLAGS if f in self.flags]
        return f"{self.model} (torch kernels {self.capability}; {', '.join(low) or 'no bf16/int8 instructions'})"


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This machine's :class:`CpuFeatures` (read once; Linux reads ``/proc/cpuinfo``)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and value.strip():
                    model = value.strip()
                elif key in ("flags", "features"):  # x86 / Arm spelling
                    flags.update(value.split())
                elif not line.strip() and flags:
                    break  # the first processor is enough
    except OSError:
        pass
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - older torch builds
        capability = "unknown"
    return CpuFeatures(model=model, flags=frozenset(flags), capability=capability)


def _cuda_bf16(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_precision(precision: str | None = "auto", device: str | torch.device = "cpu") -> str:
    """The precision a model on ``device`` runs in: ``"fp32"``, ``"bf16"`` or ``"int8"``.

    ``precision`` is the option (``auto``, ``fp32``, ``bf16``, ``int8``; ``None`` =
    ``auto``); for ``auto`` the ``ECGTEXT_PRECISION`` environment variable, when
    set, decides instead. The result is what provenance records with every output.
    Raises :class:`~ecgtext.errors.ConfigError` (one line) for an unknown value,
    for int8 on a GPU, on a CPU without int8 instructions, or without ``torchao``.
    """
    asked = "auto" if precision is None else str(getattr(precision, "value", precision)).strip().lower()
    if asked not in PRECISIONS:
        raise ConfigError(f"unknown precision {asked!r}; expected one of {', '.join(PRECISIONS)}",
                          field="precision", value=asked, option="precision")
    why = "asked for"
    if asked == "auto" and os.environ.get(ENV_VAR, "").strip():
        asked = os.environ[ENV_VAR].strip().lower()
        if asked not in PRECISIONS:
            raise ConfigError(f"{ENV_VAR}={asked!r} is not a precision; expected one of {', '.join(PRECISIONS)}",
                              field="precision", value=asked)
        why = f"from {ENV_VAR}"
    dev = torch.device(device)
    cpu = cpu_features() if dev.type == "cpu" else None
    if asked == "auto":
        if dev.type == "cuda":
            resolved, why = ("bf16", "auto: GPU with bf16") if _cuda_bf16(dev) else ("fp32", "auto: GPU without bf16")
        elif cpu is not None and cpu.native_bf16:
            resolved, why = "bf16", "auto: this CPU has native bf16"
        else:
            resolved, why = "fp32", "auto: this CPU has no native bf16"
    else:
        resolved = asked
    if resolved == "int8":
        _check_int8(dev, cpu)
    elif resolved == "bf16" and cpu is not None and not cpu.native_bf16 and not _warned_emulated:
        _warned_emulated.append(True)  # once per process
        logger.warning("bf16 on a CPU without native bf16 (%s) is emulated: correct, but slower than fp32; "
                       "auto picks fp32 on this CPU", cpu.model)
    _log_choice(resolved, why, str(dev) if cpu is None else cpu.describe())
    return resolved


_last_choice: tuple[str, ...] = ()
_warned_emulated: list[bool] = []


def _log_choice(*choice: str) -> None:
    # said once per distinct choice: every output resolves it again for its provenance
    global _last_choice
    if choice != _last_choice:
        _last_choice = choice
        logger.info("precision %s (%s) on %s", *choice)


def _check_int8(dev: torch.device, cpu: CpuFeatures | None) -> None:
    if dev.type != "cpu":
        raise ConfigError(f"int8 precision runs on the CPU only, not on {dev.type}; use bf16 on a GPU",
                          field="precision", value="int8", option="precision")
    assert cpu is not None
    if not cpu.fast_int8:
        raise ConfigError(f"int8 precision needs int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX), "
                          f"which this CPU ({cpu.model}) lacks, so it would be slower than fp32",
                          field="precision", value="int8", option="precision")
    if not torchao_available():
        raise ConfigError("int8 precision needs the optional package torchao: pip install 'ecgtext[int8]'",
                          field="precision", value="int8")


def torchao_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchao") is not None


# ---------------------------------------------------------------- running the ECG path
EcgFeatureFn = Callable[[torch.Tensor], torch.Tensor]


def ecg_feature_fn(model: "DBeta", precision: str, device: str | torch.device | None = None) -> EcgFeatureFn:
    """A function (B, in_d, N) float32 mV -> (B, D) float32 unimodal ECG features that runs
    ``model`` in the *resolved* ``precision`` (see :func:`resolve_precision`) on its device.

    Low-precision forms are built once per model and precision and kept on the
    model (a bf16 copy of the base ECG path is ~0.2 GB). Call it under
    ``torch.inference_mode()``.
    """
    if precision not in RESOLVED:
        raise ConfigError(f"precision {precision!r} is not resolved; expected one of {', '.join(RESOLVED)}",
                          field="precision", value=precision)
    dev = torch.device(device) if device is not None else model.device
    if precision == "fp32":
        return model.encode_ecg
    if dev.type == "cuda":
        if precision != "bf16":
            raise ConfigError(f"{precision} precision runs on the CPU only", field="precision", value=precision)

        def run_autocast(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return model.encode_ecg(x).float()

        return run_autocast
    cache = model.__dict__.setdefault("_precision_forms", {})
    if precision not in cache:
        cache[precision] = build_fast_form(model, precision)
    return cache[precision]


def build_fast_form(model: "DBeta", precision: str) -> torch.nn.Module | EcgFeatureFn:
    """The CPU form of ``model``'s ECG path for ``bf16`` or ``int8`` (no capability checks).

    A tokenizer that cannot run as GEMMs falls back to the reference model with
    its weights cast to bf16 (a copy), still without autocast.
    """
    from .fast_ecg import FastEcgPath, supports_fast_path

    if precision == "bf16":
        if supports_fast_path(model):
            return FastEcgPath(model, torch.bfloat16)
        import copy

        ref = copy.deepcopy(model).to(torch.bfloat16).eval()
        return lambda x: ref.encode_ecg(x.to(torch.bfloat16)).float()
    if precision == "int8":
        return quantize_int8(FastEcgPath(model, torch.float32) if supports_fast_path(model)
                             else _Encode(model))
    raise ConfigError(f"no CPU form for precision {precision!r}", field="precision", value=precision)


class _Encode(torch.nn.Module):
    def __init__(self, model: "DBeta"):
        super().__init__()
        import copy

        self.model = copy.deepcopy(model).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_ecg(x)


def quantize_int8(module: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation (int8 weights, per-token int8 activations) of the
    transformer's linear layers with ``torchao.quantize_``, in place.

    The tokenizer GEMMs (K = 24..512, < 2 % of the work) and the output
    projection/pooler stay in float32: they are cheap and set the feature's scale.
    """
    if not torchao_available():
        raise ConfigError("int8 precision needs the optional package torchao: pip install 'ecgtext[int8]'",
                          field="precision", value="int8")
    with quiet_torchao_import():
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    def in_transformer(mod: torch.nn.Module, fqn: str) -> bool:
        return isinstance(mod, torch.nn.Linear) and ("layers." in fqn)

    quantize_(module, Int8DynamicActivationInt8WeightConfig(), filter_fn=in_transformer)
    return module

