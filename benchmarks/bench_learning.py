"""Evidence that pretraining learns: the tiny D-BETA architecture pretrained for a fixed
time budget on PTB-XL folds 1-8, against the same architecture at a random initialisation.

1. Pretrain ``dbeta-tiny`` (ecgtext/presets/dbeta-tiny.json, the tiny tokenizer;
   ``--window`` samples per crop, 4 s by default: 2.5x cheaper steps than 10 s)
   from scratch on the ECG-report pairs of PTB-XL folds 1-8 in
   ``../shared/data/ptbxl`` for ``--budget-s`` seconds (a 3-step calibration run
   measures the step time; the main run gets as many steps as fit; a machine
   that gets busier meanwhile makes the run overshoot, reported as wall time).
2. Build the random-init baseline with the same architecture and tokenizer
   (:func:`ecgtext.evaluation.baseline.random_model`, seed ``--seed``).
3. For both models report, on held-out folds 9-10 (labels never used in pretraining):
   - linear probe, PTB-XL ``super`` (train folds 1-8, validation fold 9, test fold 10; the
     published protocol: Adam 1e-3, batch 16, 100 epochs, best validation macro AUROC;
     and one-vs-rest logistic regression with C chosen on validation);
   - zero-shot macro AUROC on folds 9-10, raw and cosine scores, with the English
     ``ptbxl-super`` descriptions and with German ones (the PTB-XL reports the
     tiny model learns from are mostly German);
   - retrieval on folds 9-10: R@1/5/10 and mean rank both ways, N stated, chance level
     (ECG -> text: one query per ECG; text -> ECG: one per distinct report).

Prints a table and writes all numbers to ``--out`` (JSON). Usage:

    python benchmarks/bench_learning.py [--budget-s 180 | --steps 200] [--ets-scale 10 --ets-bias -10]
        [--data ../shared/data/ptbxl] [--out learning.json]

``--steps`` trains a fixed number of steps (runs comparable whatever the machine's load);
``--ets-scale``/``--ets-bias`` set the ETS logits (default: the reference's 1 and none;
SigLIP's 10 and -10 keep short runs from collapsing the ECG features, docs/results.md).
The first line of the table is the ECG features' spread (0 = collapsed to one vector).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import cpu_info  # same folder

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "tests" / "data" / "conformance" / "dbeta-tiny"
GERMAN_SUPER = {  # phrases as they appear in PTB-XL's (German) reports
    "NORM": "sinusrhythmus normales ekg",
    "MI": "qrs(t) abnormal inferiorer infarkt",
    "STTC": "st-t abnormal",
    "CD": "schenkelblock",
    "HYP": "linkshypertrophie",
}


def pretrain_tiny(data: Path, out: Path, budget_s: float, seed: int, window: int,
                  ets_scale: float = 1.0, ets_bias: float | None = None,
                  fixed_steps: int | None = None) -> tuple[Path, dict]:
    import pandas as pd

    from ecgtext.config import load_preset
    from ecgtext.pretrain import load_train_config, pretrain

    arch = load_preset("dbeta-tiny").to_dict()
    arch["preprocess"]["window"] = window  # a shorter crop: more steps in the budget (a random crop per epoch)
    (out / "arch.json").write_text(json.dumps(arch))

    db = pd.read_csv(data / "ptbxl_database.csv")
    rows = [{"path": str(data / f"{f}.hea"), "report": r}
            for f, r, fold in zip(db.filename_hr, db.report, db.strat_fold)
            if int(fold) <= 8 and isinstance(r, str) and r.strip() and (data / f"{f}.hea").is_file()]
    manifest = out / "folds1-8.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    common = dict(dataset="manifest", manifest=str(manifest), init="scratch", arch=str(out / "arch.json"),
                  tokenizer=str(TOKENIZER), num_workers=0, batch_size=32, lr=1e-3, seed=seed, device="cpu",
                  save_every=100_000, log_every=1, ets_scale=ets_scale, ets_bias=ets_bias)
    t0 = time.perf_counter()
    if fixed_steps:  # a fixed number of steps instead of a time budget: comparable between runs
        return _run(common, out, fixed_steps, len(rows), window, ets_scale, ets_bias, step_s=None)
    pretrain(load_train_config(None, dict(common, out=str(out / "calib"), max_steps=8, warmup_steps=0)))
    recs = [json.loads(x) for x in (out / "calib" / "metrics.jsonl").read_text().splitlines()]
    # the median of steps 3-8: the first steps also pay for start-up (allocations, caches), which
    # made a 3-step calibration allot a 180-s budget only ~40 s of training
    rates = sorted(r["samples_per_s"] for r in recs if "samples_per_s" in r and r.get("step", 0) >= 3)
    step_s = 32 / rates[len(rates) // 2] if rates else (time.perf_counter() - t0) / 8
    return _run(common, out, max(10, int(budget_s / step_s)), len(rows), window, ets_scale, ets_bias, step_s)


def _run(common: dict, out: Path, steps: int, n_pairs: int, window: int, ets_scale: float,
         ets_bias: float | None, step_s: float | None) -> tuple[Path, dict]:
    from ecgtext.pretrain import load_train_config, pretrain

    t0 = time.perf_counter()
    model_dir = pretrain(load_train_config(None, dict(common, out=str(out / "run"), max_steps=steps,
                                                      warmup_ratio=0.05, schedule="cosine", log_every=10)))
    took = time.perf_counter() - t0
    recs = [json.loads(x) for x in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in recs if "loss" in r]
    info = {"ets_scale": ets_scale, "ets_bias": ets_bias, "pairs": n_pairs, "steps": steps, "window": window,
            "batch_size": 32, "epochs": round(steps * 32 / n_pairs, 1), "wall_s": round(took, 1),
            "step_s": None if step_s is None else round(step_s, 3),
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None}
    return model_dir, info


def zeroshot_auroc(ds, X: np.ndarray, model, labels: dict[str, str], how: str) -> float | None:
    from ecgtext.evaluation.metrics import evaluate_scores
    from ecgtext.inference.zeroshot import label_features, score

    classes = [c for c in ds.classes if c in labels]
    T = label_features(model, {c: labels[c] for c in classes}, use_cache=False).numpy()
    Y = ds.Y[:, [ds.classes.index(c) for c in classes]]
    return evaluate_scores(Y, score(X, T, how), classes)["macro_auroc"]


def evaluate(model_or_dir, name: str, data: Path, seed: int) -> dict:
    from ecgtext.evaluation.datasets import load_dataset
    from ecgtext.evaluation.datasets.features import dataset_features
    from ecgtext.evaluation.probe import ProbeConfig, fit_probe
    from ecgtext.evaluation.retrieval import ReportPairs, evaluate_retrieval, load_ptbxl_pairs
    from ecgtext.hub.load import load_model
    from ecgtext.labels import load_label_set

    model = load_model(model_or_dir, components="all") if isinstance(model_or_dir, (str, Path)) else model_or_dir
    ds = load_dataset("ptbxl", str(data), "super")
    feats = dataset_features(ds, model=model, batch_size=32)
    probe = fit_probe(feats, ProbeConfig(seeds=(seed,)), model={"name": name}).report
    probe_lr = fit_probe(feats, ProbeConfig(seeds=(seed,), head="sklearn"), model={"name": name}).report
    held = np.flatnonzero(np.isin(feats.dataset.split, ["val", "test"]))
    sub, Xh = feats.dataset.select(held), feats.X[held]
    X = feats.X.astype(np.float64)
    mu = X.mean(axis=0)
    # how far the ECG features are from one constant vector (collapse): mean distance to their
    # mean, relative to the mean's norm
    spread = float(np.linalg.norm(X - mu, axis=1).mean() / max(np.linalg.norm(mu), 1e-12))
    out = {"feature_spread": spread, "probe_macro_auroc": probe["macro_auroc"], "probe_sklearn_macro_auroc": probe_lr["macro_auroc"],
           "probe_n_train": probe["n_train"],
           "probe_n_test": probe["n_test"], "probe_per_class": {c: v["auroc"] for c, v in probe["per_class"].items()},
           "zeroshot_n": len(held)}
    for lang, labels in (("en", load_label_set("ptbxl-super")), ("de", GERMAN_SUPER)):
        for how in ("raw", "cosine"):
            out[f"zeroshot_{lang}_{how}"] = zeroshot_auroc(sub, Xh, model, labels, how)
    pairs = load_ptbxl_pairs(data)
    heldout = np.where(np.isin(pairs.split, ["val", "test"]), "test", "train").astype(object)
    pairs = ReportPairs(pairs.name, pairs.root, pairs.keys, pairs.reports, heldout, pairs.meta)
    out["retrieval"] = evaluate_retrieval(pairs, model, model_info={"name": name}).report
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ptbxl")
    ap.add_argument("--budget-s", type=float, default=180.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=int, default=2000,
                    help="training and feature window in samples at 500 Hz (the preset's is 5000 = 10 s)")
    ap.add_argument("--steps", type=int, default=None,
                    help="train exactly this many steps (ignores --budget-s): comparable between runs")
    ap.add_argument("--ets-scale", type=float, default=1.0,
                    help="ETS logit scale (1 = the reference; SigLIP: 10)")
    ap.add_argument("--ets-bias", type=float, default=None,
                    help="ETS logit bias (none = the reference; SigLIP: -10)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the pretrained model directory here")
    ap.add_argument("--out", type=Path, default=None, help="write every number here (JSON)")
    args = ap.parse_args()
    if not (args.data / "ptbxl_database.csv").is_file():
        print(f"{args.data}: no PTB-XL data", file=sys.stderr)
        return 2
    import torch

    from ecgtext.evaluation.baseline import random_model

    print(f"CPU: {cpu_info()}; torch threads {torch.get_num_threads()}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at start: {load:.1f} (other work on the machine slows every step)")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, train = pretrain_tiny(args.data, Path(tmp), args.budget_s, args.seed, args.window,
                                         args.ets_scale, args.ets_bias, args.steps)
        if args.keep is not None:
            import shutil

            shutil.copytree(model_dir, args.keep, dirs_exist_ok=True)
        print(f"ETS logits: {args.ets_scale:g} x <ecg, text>"
              + (f" {args.ets_bias:+g}" if args.ets_bias is not None else "")
              + (" (the reference)" if args.ets_scale == 1 and args.ets_bias is None else ""))
        print(f"pretrained: {train['steps']} steps x batch 32 on {train['pairs']} pairs ({train['epochs']} epochs) "
              f"in {train['wall_s']} s; loss {train['loss_first']:.3f} -> {train['loss_last']:.3f}")
        pre = evaluate(model_dir, "pretrained", args.data, args.seed)
        rnd = evaluate(random_model(model_dir, seed=args.seed), "random init", args.data, args.seed)
    rows = [("linear probe macro AUROC (super, test fold 10; Adam, 100 ep.)", "probe_macro_auroc"),
            ("linear probe macro AUROC (super, test fold 10; logistic reg.)", "probe_sklearn_macro_auroc")]
    for lang in ("en", "de"):
        for how in ("raw", "cosine"):
            rows.append((f"zero-shot macro AUROC, {lang} descriptions, {how} (folds 9-10)", f"zeroshot_{lang}_{how}"))
    print(f"\n{'':60} {'pretrained':>10} {'random':>10} {'diff':>8}")
    print(f"{'ECG feature spread, % of the mean feature norm (collapse: ~0)':60} "
          f"{100 * pre['feature_spread']:10.3f} {100 * rnd['feature_spread']:10.3f}")
    for label, key in rows:
        a, b = pre[key], rnd[key]
        d = "-" if a is None or b is None else f"{100 * (a - b):+.1f}"
        print(f"{label:60} {100 * a:10.1f} {100 * b:10.1f} {d:>8}")
    r_pre, r_rnd = pre["retrieval"], rnd["retrieval"]
    print(f"\nretrieval, folds 9-10: N = {r_pre['n_candidates']} candidates, {r_pre['n_distinct_reports']} distinct "
          "reports")
    for direction in ("ecg_to_text", "text_to_ecg"):
        print(f"{direction}: {r_pre['n_queries'][direction]} queries; chance R@1/5/10 = "
              + "/".join(f"{100 * r_pre['chance'][direction][k]:.1f}" for k in ("R@1", "R@5", "R@10")))
    for direction in ("ecg_to_text", "text_to_ecg"):
        for key in ("R@1", "R@5", "R@10", "mean_rank"):
            a, b = r_pre[direction][key], r_rnd[direction][key]
            scale = 1 if key == "mean_rank" else 100
            print(f"{direction + ' ' + key:60} {scale * a:10.1f} {scale * b:10.1f} {scale * (a - b):+8.1f}")
    if args.out:
        args.out.write_text(json.dumps({"cpu": cpu_info(), "load_at_start": load, "pretraining": train,
                                        "pretrained": pre, "random": rnd}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
