"""The random-encoder baseline: the same protocol, the same architecture, random weights.

A randomly initialised encoder with a linear probe is a strong baseline for ECG
representations, so every evaluation can be run twice -- with the pretrained
weights and with the architecture of the same model directory at a seeded
random initialisation (the reference's own initialisers, see
:func:`ecgtext.model.loading.build_model`; the tokenizer is the model's) --
and report both results and their difference per class and macro (or per
retrieval metric). The same seed gives the same weights, hence the same numbers.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ecgtext.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ecgtext.model.dbeta import DBeta

logger = logging.getLogger(__name__)

BASELINES = ("random",)


def random_model(source: "str | os.PathLike | DBeta", seed: int = 0, components: str = "all",
                 device=None) -> "DBeta":
    """The architecture of ``source`` (model directory, registry name, ``hf-hub:`` id or a
    loaded model) at the seeded random initialisation ``seed``; eval mode.

    Weights come from ``torch``'s generator seeded with ``seed`` inside
    ``torch.random.fork_rng`` (the caller's random state is untouched). The model
    has no ``model_dir`` (its features must not pass for the pretrained ones'); its
    tokenizer is ``source``'s.
    """
    import torch

    from ecgtext.config import load_config
    from ecgtext.hub.load import resolve_source
    from ecgtext.model.dbeta import DBeta
    from ecgtext.model.loading import build_model

    if isinstance(source, DBeta):
        config, model_dir = source.config, source.model_dir
    else:
        model_dir = resolve_source(source)
        config = load_config(model_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = build_model(config, components=components, random_init=True)
    if components == "all" and model_dir is not None:
        from ecgtext.model.tokenizer import load_tokenizer

        model._tokenizer = load_tokenizer(model_dir)
    model.model_dir = None
    model.eval()
    if device is not None:
        from ecgtext.inference.engine import resolve_device

        model.to(resolve_device(device))
    return model


def baseline_info(source: "str | os.PathLike | DBeta", seed: int) -> dict[str, Any]:
    """Provenance of a random baseline: which architecture, which seed."""
    from ecgtext.model.dbeta import DBeta

    name = None
    if isinstance(source, DBeta):
        name = getattr(source.config, "name", None)
    else:
        try:
            from ecgtext.hub.load import resolve_source
            from ecgtext.inference.engine import model_identity

            ident = model_identity(resolve_source(source))
            name = ident.name
            arch_of = ident.short()
        except Exception:  # noqa: BLE001 - provenance is best effort
            arch_of = str(source)
        return {"name": f"{name} (random init, seed {seed})", "id": f"random-init:{arch_of}:seed{seed}",
                "init": "random", "seed": int(seed), "architecture_of": arch_of, "source": str(source)}
    return {"name": f"{name} (random init, seed {seed})", "init": "random", "seed": int(seed)}


def _diff(a, b):
    return None if a is None or b is None else float(a) - float(b)


def compare_reports(pretrained: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, Any]:
    """``pretrained - random`` for every class (AUROC, F1) and the macro figures, or for
    every retrieval metric and direction."""
    out: dict[str, Any] = {}
    if pretrained.get("mode") == "retrieval":
        for direction in ("ecg_to_text", "text_to_ecg"):
            a, b = pretrained.get(direction, {}), baseline.get(direction, {})
            out[direction] = {k: _diff(a.get(k), b.get(k)) for k in a}
        return out
    per = {}
    for c, v in (pretrained.get("per_class") or {}).items():
        w = (baseline.get("per_class") or {}).get(c, {})
        per[c] = {k: _diff(v.get(k), w.get(k)) for k in ("auroc", "f1") if k in v}
    out["per_class"] = per
    for k in ("macro_auroc", "macro_f1"):
        if k in pretrained:
            out[k] = _diff(pretrained.get(k), baseline.get(k))
    return out


def with_random_baseline(evaluate: Callable[["str | os.PathLike | DBeta", dict[str, Any] | None], Mapping[str, Any]],
                         source: "str | os.PathLike | DBeta", seed: int = 0,
                         components: str = "all") -> dict[str, Any]:
    """Run ``evaluate(model, info)`` with the pretrained ``source`` (``info=None``) and with
    :func:`random_model` (``info`` = its provenance); report both and the difference.

    Returns ``{"mode", "baseline": "random", "seed", "pretrained": report,
    "random": report, "difference": compare_reports(...)}``.
    """
    pre = dict(evaluate(source, None))
    rnd_model = random_model(source, seed, components=components)
    info = baseline_info(source, seed)
    rnd = dict(evaluate(rnd_model, info))
    rnd["model"] = info
    return {"mode": pre.get("mode"), "dataset": pre.get("dataset"), "task": pre.get("task"),
            "baseline": "random", "seed": int(seed), "pretrained": pre, "random": rnd,
            "difference": compare_reports(pre, rnd),
            "difference_definition": "pretrained minus random-init baseline (same protocol, same architecture)"}


def check_baseline(name: str | None) -> str | None:
    """``None`` or a known baseline name (else a :class:`ConfigError`)."""
    if name is not None and name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}",
                          field="baseline", value=name, option="baseline")
    return name


# --------------------------------------------------------------------------- the protocols, twice
def _write(report: Mapping[str, Any], out_dir: str | os.PathLike | None, name: str) -> None:
    if out_dir is None:
        return
    import json
    from pathlib import Path

    from ecgtext.evaluation.reports import _jsonable
    from ecgtext.fsutil import atomic_write_text

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out_dir) / name, json.dumps(_jsonable(dict(report)), indent=2, allow_nan=False) + "\n")


def probe_with_baseline(ds, config=None, *, model_source: str | None = None, features=None, seed: int = 0,
                        read_options=None, embed_batch_size: int = 32, num_workers: int = 0, device=None,
                        precision: str = "auto", out_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Linear probing (:func:`ecgtext.evaluation.probe.run_probe`) with the pretrained model (or its
    saved ``features``) and with the random-init baseline; outputs of the pretrained run in
    ``out_dir``, the baseline's in ``out_dir/random-init``, both reports in ``out_dir/baseline.json``."""
    from pathlib import Path

    from ecgtext.evaluation.datasets.features import dataset_features
    from ecgtext.evaluation.probe import fit_probe, run_probe, save_outputs
    from ecgtext.inference.engine import resolve_device

    source = model_source or "dbeta-base"
    device = str(resolve_device(device))  # "auto" -> the device it means, recorded as such

    def evaluate(model, info):
        if info is None:
            return run_probe(ds, config, features=features, model_source=model_source, read_options=read_options,
                             embed_batch_size=embed_batch_size, num_workers=num_workers, device=device,
                             precision=precision, out_dir=out_dir).report
        feats = dataset_features(ds, model=model, read_options=read_options, batch_size=embed_batch_size,
                                 num_workers=num_workers, device=device, precision=precision)
        result = fit_probe(feats, config, model=info)
        if out_dir is not None:
            save_outputs(result, feats.dataset, Path(out_dir) / "random-init")
        return result.report

    report = with_random_baseline(evaluate, source, seed, components="ecg")
    _write(report, out_dir, "baseline.json")
    return report


def zeroshot_with_baseline(ds, model_source: str, label_set, *, features=None, seed: int = 0, read_options=None,
                           batch_size: int = 32, num_workers: int = 0, device=None, precision: str = "auto",
                           out_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Dataset zero-shot (:func:`ecgtext.evaluation.zeroshot.zeroshot_dataset`) with the pretrained
    model and with the random-init baseline (random ECG and text towers)."""
    from ecgtext.evaluation.zeroshot import zeroshot_dataset
    from ecgtext.inference.engine import resolve_device

    device = str(resolve_device(device))

    def evaluate(model, info):
        ev = zeroshot_dataset(ds, model, label_set, features=features if info is None else None,
                              read_options=read_options, batch_size=batch_size, num_workers=num_workers,
                              device=device, precision=precision)
        return ev.report

    report = with_random_baseline(evaluate, model_source, seed, components="all")
    _write(report, out_dir, "baseline.json")
    return report


def retrieval_with_baseline(pairs, model_source: str, *, seed: int = 0, split: str = "test", how: str = "raw",
                            read_options=None, batch_size: int = 32, num_workers: int = 0, device=None,
                            precision: str = "auto", out_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Retrieval metrics (:func:`ecgtext.evaluation.retrieval.evaluate_retrieval`) with the pretrained
    model and with the random-init baseline."""
    from ecgtext.evaluation.retrieval import evaluate_retrieval

    def evaluate(model, info):
        return evaluate_retrieval(pairs, model, split=split, how=how, read_options=read_options,
                                  batch_size=batch_size, num_workers=num_workers, device=device,
                                  precision=precision, model_info=info).report

    report = with_random_baseline(evaluate, model_source, seed, components="all")
    _write(report, out_dir, "baseline.json")
    return report
