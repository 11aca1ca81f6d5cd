"""ONNX export of a model's two unimodal encoders, for serving stacks (ONNX Runtime, Triton).

``export_onnx(model, out_dir)`` writes::

    ecg_encoder.onnx    ecg (batch, 12, samples) float32 mV, leads in the model's order
                        -> features (batch, D) float32 unimodal ECG features
    text_encoder.onnx   input_ids, attention_mask (batch, length) int64
                        -> features (batch, D) float32 unimodal text features
    config.json         the model's config: the preprocessing contract (rate, window, leads, units)
    tokenizer files     the model's T5 tokenizer (texts -> input_ids / attention_mask)
    onnx_export.json    what was exported: inputs, outputs, opset, torch/onnx versions,
                        weights sha256, and the verification result

Batch (and text length) are dynamic; ``samples`` is the model's window
(``config.json`` ``preprocess.window``). Scores are ``ecg @ text.T`` as in
``ecgtext zeroshot``. The fp32 reference model is exported (the conformance
path). After writing, each graph is run with ONNX Runtime on a batch size other
than the one traced and compared with torch: the export fails unless the largest
absolute difference is <= ``atol`` (1e-4). Needs the optional extra ``ecgtext[onnx]``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ecgtext.errors import ConfigError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ecgtext.model.dbeta import DBeta

logger = logging.getLogger(__name__)

ECG_FILE = "ecg_encoder.onnx"
TEXT_FILE = "text_encoder.onnx"
MANIFEST = "onnx_export.json"
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
VERIFY_TEXTS = ("sinus rhythm. normal ecg", "atrial fibrillation with rapid ventricular response",
                "left bundle branch block")


@dataclass
class ExportResult:
    """Where the export went and how well ONNX Runtime reproduced torch."""

    out_dir: Path
    files: list[str]
    max_abs_error: dict[str, float] = field(default_factory=dict)  # per graph, ONNX Runtime vs torch
    atol: float = 1e-4
    opset: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


def require_onnx() -> None:
    """One-line error unless the optional ONNX packages are importable."""
    import importlib.util

    missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError(f"ONNX export needs the optional package(s) {', '.join(missing)}: "
                          "pip install 'ecgtext[onnx]'", field="packages", value=missing)


def export_onnx(model: "DBeta | str | os.PathLike", out_dir: str | os.PathLike, *, text: bool = True,
                verify: bool = True, atol: float = 1e-4, opset: int | None = None,
                overwrite: bool = False) -> ExportResult:
    """Export ``model`` (a loaded full ``DBeta``, or a model source) to ONNX in ``out_dir``.

    ``text=False`` exports the ECG encoder only. The folder is written atomically
    (a failed export leaves no half folder); an existing non-empty ``out_dir`` is
    an error unless ``overwrite``. Returns the files written and, with ``verify``,
    the largest |ONNX Runtime - torch| per graph (an error above ``atol``).
    """
    require_onnx()
    import torch

    from ecgtext.fsutil import atomic_dir

    if isinstance(model, (str, os.PathLike)):
        from ecgtext.hub.load import load_model

        model = load_model(model, device="cpu", components="all" if text else "ecg")
    if text and model.components != "all":
        raise ModelError("text encoder export needs the full model (loaded with components='all')")
    if model.model_dir is None:
        raise ModelError("the model has no directory to take config.json and the tokenizer from; "
                         "load it with ecgtext.load_model(...)")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(f"{out}: exists and is not empty; choose another folder or overwrite it",
                          path=str(out), field="output", option="overwrite")
    model = model.to("cpu").eval()
    result = ExportResult(out_dir=out, files=[], atol=atol)
    with atomic_dir(out, replace=True) as tmp, _quiet_exporter():
        result.opset = _export_ecg(model, tmp / ECG_FILE, opset)
        result.files.append(ECG_FILE)
        if text:
            _export_text(model, tmp / TEXT_FILE, opset)
            result.files.append(TEXT_FILE)
        shutil.copyfile(Path(model.model_dir) / "config.json", tmp / "config.json")
        result.files.append("config.json")
        if text:
            from ecgtext.model.loading import copy_tokenizer_files

            copy_tokenizer_files(model.model_dir, tmp)
            result.files += sorted(p.name for p in tmp.iterdir() if p.name not in result.files and
                                   not p.name.endswith(".onnx"))
        if verify:
            with torch.inference_mode():
                result.max_abs_error = verify_export(model, tmp, text=text)
            for graph, err in result.max_abs_error.items():
                if not err <= atol:
                    raise ModelError(f"{out}: ONNX Runtime differs from torch by {err:.3g} on {graph} "
                                     f"(more than {atol:g}); export not kept", path=str(out))
        _write_manifest(model, tmp, result)
        result.files.append(MANIFEST)
    if verify:
        logger.info("ONNX export verified with onnxruntime: max |onnx - torch| %s (<= %g)",
                    ", ".join(f"{k} {v:.2g}" for k, v in result.max_abs_error.items()), atol)
    return result


# ----------------------------------------------------------------- graphs
def _ecg_module(model: "DBeta") -> "torch.nn.Module":
    import torch

    class EcgEncoder(torch.nn.Module):
        def __init__(self, m: "DBeta"):
            super().__init__()
            self.m = m

        def forward(self, ecg: torch.Tensor) -> torch.Tensor:
            return self.m.encode_ecg(ecg)

    return EcgEncoder(model).eval()


def _text_module(model: "DBeta") -> "torch.nn.Module":
    import torch

    class TextEncoder(torch.nn.Module):
        def __init__(self, m: "DBeta"):
            super().__init__()
            self.m = m

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.m.encode_text(input_ids, attention_mask)

    return TextEncoder(model).eval()


def example_ecg(model: "DBeta", batch: int, seed: int = 0) -> "torch.Tensor":
    """(batch, in_d, window) float32 ECG-like values in mV (seeded)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    return 0.3 * torch.randn(batch, cfg.model.in_d, cfg.preprocess.window, generator=g)


def _export_ecg(model: "DBeta", path: Path, opset: int | None) -> int | None:
    import torch

    batch = torch.export.Dim("batch", min=1, max=65536)
    prog = torch.onnx.export(_ecg_module(model), (example_ecg(model, 2),), str(path), dynamo=True,
                             input_names=["ecg"], output_names=["features"], opset_version=opset,
                             dynamic_shapes={"ecg": {0: batch}}, verbose=False, external_data=False)
    return _opset_of(prog, opset)


def _export_text(model: "DBeta", path: Path, opset: int | None) -> None:
    import torch

    ids, mask = model.tokenize(list(VERIFY_TEXTS[:2]), lowercase=True)
    batch = torch.export.Dim("batch", min=1, max=65536)
    length = torch.export.Dim("length", min=1, max=4096)
    enc = model.language_encoder
    saved = getattr(enc.config, "_attn_implementation", None)
    # transformers' SDPA attention reshapes a transposed tensor with a view that the
    # exporter's decomposition cannot express for a dynamic length; eager attention
    # is the same function (verified below against the model as it normally runs)
    enc.set_attn_implementation("eager")
    try:
        torch.onnx.export(_text_module(model), (ids, mask), str(path), dynamo=True,
                          input_names=["input_ids", "attention_mask"], output_names=["features"],
                          opset_version=opset, verbose=False, external_data=False,
                          dynamic_shapes={"input_ids": {0: batch, 1: length},
                                          "attention_mask": {0: batch, 1: length}})
    finally:
        if saved is not None:
            enc.set_attn_implementation(saved)


def _opset_of(prog, asked: int | None) -> int | None:
    try:
        return int(next(o.version for o in prog.model_proto.opset_import if o.domain in ("", "ai.onnx")))
    except Exception:  # noqa: BLE001 - only informative
        return asked


# ----------------------------------------------------------------- verification
def verify_export(model: "DBeta", folder: str | os.PathLike, *, text: bool = True) -> dict[str, float]:
    """Largest |ONNX Runtime - torch| per exported graph, on a batch of 3 (the trace used 2)."""
    import numpy as np
    import onnxruntime as ort

    folder = Path(folder)
    out: dict[str, float] = {}
    sess = ort.InferenceSession(str(folder / ECG_FILE), providers=["CPUExecutionProvider"])
    x = example_ecg(model, 3, seed=1)
    got = sess.run(None, {"ecg": x.numpy()})[0]
    out["ecg_encoder"] = float(np.abs(got - model.encode_ecg(x).numpy()).max())
    if text:
        sess = ort.InferenceSession(str(folder / TEXT_FILE), providers=["CPUExecutionProvider"])
        ids, mask = model.tokenize(list(VERIFY_TEXTS), lowercase=True)  # right-padded: the mask matters
        got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        out["text_encoder"] = float(np.abs(got - model.encode_text(ids, mask).numpy()).max())
    return out


def _write_manifest(model: "DBeta", folder: Path, result: ExportResult) -> None:
    import onnx
    import onnxruntime
    import torch

    from ecgtext import __version__
    from ecgtext.inference.engine import model_identity

    ident = model_identity(model.model_dir)
    pre = model.config.preprocess
    d = model.embed_dim
    manifest = {
        "format": "onnx",
        "ecgtext_version": __version__,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "opset": result.opset,
        "model_name": ident.name,
        "weights_sha256": ident.weights_sha256,
        "precision": "fp32",
        "graphs": {
            "ecg_encoder": {"file": ECG_FILE,
                            "inputs": {"ecg": {"shape": ["batch", len(pre.leads), int(pre.window)],
                                               "dtype": "float32", "units": pre.units,
                                               "leads": list(pre.leads), "sample_rate": float(pre.sample_rate)}},
                            "outputs": {"features": {"shape": ["batch", d], "dtype": "float32"}}},
        },
        "score": "ecg_features @ text_features.T (raw dot product)",
        "verification": {"max_abs_error": result.max_abs_error, "atol": result.atol,
                         "runtime": "onnxruntime CPUExecutionProvider"} if result.max_abs_error else None,
    }
    if TEXT_FILE in result.files:
        manifest["graphs"]["text_encoder"] = {
            "file": TEXT_FILE,
            "inputs": {"input_ids": {"shape": ["batch", "length"], "dtype": "int64"},
                       "attention_mask": {"shape": ["batch", "length"], "dtype": "int64"}},
            "outputs": {"features": {"shape": ["batch", d], "dtype": "float32"}},
            "tokenizer": "T5 SentencePiece in this folder; lower-case texts, EOS appended, right-padded"}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The torch exporter logs and warns about things that do not concern our graphs
    (torchvision ops, axis names); shown only when ecgtext logs at debug level."""
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch.utils._pytree",
                                              "torch._dynamo", "torchao", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
