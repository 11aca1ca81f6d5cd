"""``ecgtext probe``: linear probing and dataset-level zero-shot on labelled datasets.

Applying a saved head to new records is ``ecgtext predict`` (``probe --predict``
still works, hidden, for existing scripts)."""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .options import DeviceOption, Precision, PrecisionOption, with_read_options
from .options import ReportFormat as Fmt

DATA = "Dataset"
PROTO = "Probing protocol"
RUN = "Model and features"
OUT = "Output"


class Kind(str, enum.Enum):
    ptbxl = "ptbxl"
    cinc = "cinc"
    code15 = "code15"
    generic = "generic"


class Head(str, enum.Enum):
    linear = "linear"
    sklearn = "sklearn"


class Missing(str, enum.Enum):
    error = "error"
    redraw = "redraw"
    keep = "keep"


class Baseline(str, enum.Enum):
    random = "random"


@with_read_options
def command(
    inputs: Annotated[Optional[list[str]], typer.Argument(
        help="The dataset: a folder (ptbxl, cinc, code15) or manifest file(s) (generic). "
             "With --predict: the ECG files to classify.", show_default=False)] = None,
    dataset: Annotated[Optional[Kind], typer.Option(
        "--dataset", "-d", rich_help_panel=DATA,
        help="Dataset layout: ptbxl, cinc (PhysioNet/CinC .hea+.mat with '# Dx:'), code15 (CODE-test), "
             "generic (CSV/Parquet manifest).")] = None,
    task: Annotated[Optional[str], typer.Option(
        "--task", "-t", rich_help_panel=DATA,
        help="PTB-XL task: super, sub, form or rhythm; or retrieval: ECG <-> report R@1/5/10 and ranks on the "
             "test split (ptbxl, or a generic manifest with a report column).")] = None,
    rate: Annotated[int, typer.Option("--rate", rich_help_panel=DATA,
                                      help="PTB-XL records to use: 500 or 100 Hz.")] = 500,
    classes: Annotated[str, typer.Option(
        "--classes", rich_help_panel=DATA,
        help="cinc: 'scored' (the Challenge's scored classes), 'all', or a label set (cpsc2018, FILE.json) "
             "whose codes are Challenge abbreviations.")] = "scored",
    split_file: Annotated[Optional[list[Path]], typer.Option(
        "--split-file", rich_help_panel=DATA,
        help="Take splits from this file (repeatable): a CSV with a record column and a 'split' column "
             "(e.g. a previous splits.csv), or MERL's *_train.csv / *_val.csv / *_test.csv.")] = None,
    split_seed: Annotated[int, typer.Option(
        "--split-seed", rich_help_panel=DATA,
        help="Seed of the stratified 70/10/20 split of datasets without an official one.")] = 0,
    data_root: Annotated[Optional[Path], typer.Option(
        "--data-root", rich_help_panel=DATA,
        help="generic: folder that relative paths in the manifest start from (default: its folder).")] = None,
    path_column: Annotated[Optional[str], typer.Option(
        "--path-column", rich_help_panel=DATA, help="generic: the column holding record paths.")] = None,
    label_column: Annotated[Optional[str], typer.Option(
        "--label-column", rich_help_panel=DATA,
        help="generic: one column of labels, several joined by ';'.")] = None,
    report_column: Annotated[str, typer.Option(
        "--report-column", rich_help_panel=DATA, help="generic, --task retrieval: the column holding reports.")] = "report",
    label_columns: Annotated[Optional[str], typer.Option(
        "--label-columns", rich_help_panel=DATA,
        help="generic: 0/1 class columns, 'A,B,C' or a range 'A:C' (default: every 0/1 column).")] = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", rich_help_panel=RUN,
        help="Model directory, registry name or hf-hub:org/repo. Default: dbeta-base "
             "(with --predict: the model the head was trained on).")] = None,
    features: Annotated[Optional[Path], typer.Option(
        "--features", rich_help_panel=RUN,
        help="Read ECG features from this Parquet file (written by 'ecgtext embed') instead of "
             "computing them; rows are matched to records by path.")] = None,
    fraction: Annotated[float, typer.Option(
        "--fraction", rich_help_panel=PROTO, help="Fraction of the training split to train on: 0.01, 0.1, 1.0.")] = 1.0,
    seeds: Annotated[str, typer.Option(
        "--seeds", rich_help_panel=PROTO,
        help="Comma-separated seeds (subset draw and head initialisation); several give mean +- std.")] = "0",
    head: Annotated[Head, typer.Option(
        "--head", rich_help_panel=PROTO,
        help="linear: the published protocol (Adam, BCE, best validation macro AUROC); "
             "sklearn: one-vs-rest logistic regression with C chosen on validation.")] = Head.linear,
    epochs: Annotated[int, typer.Option("--epochs", min=1, rich_help_panel=PROTO)] = 100,
    lr: Annotated[float, typer.Option("--lr", rich_help_panel=PROTO, help="Adam learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, rich_help_panel=PROTO,
                                            help="Training batch size of the linear head.")] = 16,
    weight_decay: Annotated[float, typer.Option("--weight-decay", rich_help_panel=PROTO)] = 0.0,
    missing_class: Annotated[Missing, typer.Option(
        "--missing-class", rich_help_panel=PROTO,
        help="A class without a positive in the training subset: error, redraw (draw again with the same "
             "seed's generator) or keep (train anyway, MERL's protocol).")] = Missing.error,
    zeroshot: Annotated[bool, typer.Option(
        "--zeroshot", rich_help_panel=PROTO,
        help="Zero-shot evaluation on the test split instead of probing (no training).")] = False,
    labels: Annotated[Optional[str], typer.Option(
        "--labels", rich_help_panel=PROTO,
        help="Zero-shot label set: built-in name or JSON file {code: description}. "
             "Default: ptbxl-<task>, cpsc2018 / code15 where they fit.")] = None,
    baseline: Annotated[Optional[Baseline], typer.Option(
        "--baseline", rich_help_panel=PROTO,
        help="Also run the same protocol with the same architecture at a seeded random initialisation; "
             "report both and their difference per class and macro.", show_default=False)] = None,
    baseline_seed: Annotated[int, typer.Option(
        "--baseline-seed", rich_help_panel=PROTO, help="Seed of the random initialisation.")] = 0,
    predict: Annotated[bool, typer.Option(
        "--predict", rich_help_panel=OUT, hidden=True,
        help="Classify the ECG files given as INPUTS with a saved head (--head-dir).")] = False,
    head_dir: Annotated[Optional[Path], typer.Option(
        "--head-dir", rich_help_panel=OUT, help="A head saved with --save-head (for --predict).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out-dir", "-o", rich_help_panel=OUT,
        help="Where result.json, splits.csv and predictions.csv go "
             "(default: probe-results/<dataset>-<task>-<mode>).")] = None,
    save_head: Annotated[Optional[Path], typer.Option(
        "--save-head", rich_help_panel=OUT,
        help="Save the trained head (first seed) here: head.safetensors + head.json.")] = None,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", rich_help_panel=OUT, help="Write ROC curves of the test split to this PNG.")] = None,
    fmt: Annotated[Optional[Fmt], typer.Option(
        "--format", rich_help_panel=OUT,
        help="table or json (results); with --predict also jsonl or csv. Default: table on a terminal, "
             "else json (jsonl with --predict).", show_default=False)] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    embed_batch_size: Annotated[int, typer.Option("--embed-batch-size", min=1, rich_help_panel=RUN,
                                                  help="Windows per model batch.")] = 32,
    num_workers: Annotated[int, typer.Option("--num-workers", min=0, rich_help_panel=RUN,
                                             help="Reading worker processes.")] = 0,
    force: Annotated[bool, typer.Option(
        "--force", rich_help_panel=RUN,
        help="Use --features even when their provenance (weights, precision, preprocessing) differs from "
             "the model's, or is missing; the differences are noted in the report.")] = False,
    allow_missing: Annotated[bool, typer.Option(
        "--allow-missing", rich_help_panel=RUN,
        help="Leave test records without features out (counted in the report) instead of failing.")] = False,
    *,
    read_options: Any = None,  # ReadOptions, filled in by with_read_options
):
    """Evaluate on a labelled dataset: linear probing (default) or zero-shot (--zeroshot).

    Probing trains a linear head on frozen ECG features of --fraction of the
    training split (the D-BETA paper's protocol), picks the epoch on the
    validation split and reports per-class and macro AUROC and F1 on the test
    split. Examples:

      ecgtext probe /data/ptb-xl -d ptbxl -t super --fraction 0.1 --features ptbxl.parquet

      ecgtext probe /data/ptb-xl -d ptbxl -t rhythm --zeroshot

      ecgtext probe /data/ptb-xl -d ptbxl -t retrieval --baseline random

      ecgtext predict --head-dir head/ rec1.hea rec2.hea   (apply a saved head)
    """
    from ..errors import ConfigError

    inputs = list(inputs or [])
    if fmt is None:
        fmt = Fmt.table if sys.stdout.isatty() else (Fmt.jsonl if predict else Fmt.json)
    if predict:
        if head_dir is None:
            raise ConfigError("--predict needs --head-dir DIR (a head saved with --save-head)")
        from .predict import render_predictions

        return render_predictions(inputs, head_dir, model, features, read_options, fmt.value, embed_batch_size,
                                  num_workers, device, precision.value, force=force)
    if dataset is None:
        raise ConfigError("give the dataset layout with --dataset (ptbxl, cinc, code15 or generic)")
    if not inputs:
        raise ConfigError("give the dataset folder (or manifest file) as an argument")
    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
    common = dict(read_options=read_options, num_workers=num_workers, device=device, precision=precision.value)
    if task == "retrieval":
        from ecgtext.evaluation.retrieval import load_report_pairs, run_retrieval_evaluation

        pairs = load_report_pairs(dataset.value, inputs, rate=rate, path_column=path_column,
                                  report_column=report_column, data_root=None if data_root is None else str(data_root))
        out = out_dir if out_dir is not None else Path("probe-results") / f"{pairs.name}-retrieval"
        if baseline is not None:
            from ecgtext.evaluation.baseline import retrieval_with_baseline

            report = retrieval_with_baseline(pairs, model or "dbeta-base", seed=baseline_seed, out_dir=out,
                                             batch_size=embed_batch_size, **common)
        else:
            report = run_retrieval_evaluation(pairs, model or "dbeta-base", out_dir=out,
                                              batch_size=embed_batch_size, **common)
        return _render(report, fmt)
    from ecgtext.evaluation.datasets.options import (
        DatasetOptions,
        default_label_set,
        load_dataset_from_options,
    )

    ds = load_dataset_from_options(DatasetOptions(
        kind=dataset.value, inputs=inputs, task=task, rate=rate, classes=classes,
        split_files=[str(p) for p in split_file or []], split_seed=split_seed,
        data_root=None if data_root is None else str(data_root), path_column=path_column,
        label_column=label_column, label_columns=label_columns))
    mode = "zeroshot" if zeroshot else f"linear-{100 * fraction:g}pct"
    out = out_dir if out_dir is not None else Path("probe-results") / "-".join(
        x for x in (ds.name, ds.task, mode) if x)
    if baseline is not None:
        from ecgtext.evaluation import baseline as base

        if zeroshot:
            report = base.zeroshot_with_baseline(ds, model or "dbeta-base", labels or default_label_set(ds, classes),
                                                 features=features, seed=baseline_seed, out_dir=out,
                                                 batch_size=embed_batch_size, **common)
        else:
            from ecgtext.evaluation.probe import ProbeConfig

            cfg = ProbeConfig(fraction=fraction, seeds=seed_list, head=head.value, epochs=epochs, lr=lr,
                              batch_size=batch_size, weight_decay=weight_decay, missing_class=missing_class.value)
            report = base.probe_with_baseline(ds, cfg, model_source=model, features=features, seed=baseline_seed,
                                              out_dir=out, embed_batch_size=embed_batch_size, **common)
        return _render(report, fmt)
    if zeroshot:
        from ecgtext.evaluation.zeroshot import run_zeroshot_evaluation

        report = run_zeroshot_evaluation(ds, model or "dbeta-base", labels or default_label_set(ds, classes),
                                         features=features, batch_size=embed_batch_size, out_dir=out,
                                         plot=plot, force=force, allow_missing=allow_missing, **common).report
    else:
        from ecgtext.evaluation.probe import ProbeConfig, run_probe

        cfg = ProbeConfig(fraction=fraction, seeds=seed_list, head=head.value, epochs=epochs, lr=lr,
                          batch_size=batch_size, weight_decay=weight_decay, missing_class=missing_class.value)
        report = run_probe(ds, cfg, features=features, model_source=model, embed_batch_size=embed_batch_size,
                           out_dir=out, save_head=save_head, plot=plot, force=force, allow_missing=allow_missing,
                           **common).report
    _errors(report.get("features", {}))
    if fmt in (Fmt.json, Fmt.jsonl):
        typer.echo(json.dumps(report, indent=None if fmt is Fmt.jsonl else 2))
    else:
        _print_report(report)


def _render(report: dict, fmt: Fmt) -> None:
    """Reports of --task retrieval and --baseline: JSON, or a table per result plus the differences."""
    for part in (report.get("pretrained"), report.get("random")) if "pretrained" in report else (report,):
        _errors(part.get("features", {}))
    if fmt in (Fmt.json, Fmt.jsonl):
        typer.echo(json.dumps(report, indent=None if fmt is Fmt.jsonl else 2))
        return
    parts = [("pretrained", report["pretrained"]), ("random init", report["random"])] if "pretrained" in report \
        else [("", report)]
    for label, r in parts:
        if label:
            typer.echo(f"== {label}")
        if r["mode"] == "retrieval":
            _print_retrieval(r)
        else:
            _print_report(r)
    if "difference" in report:
        d = report["difference"]
        if report["mode"] == "retrieval":
            for direction in ("ecg_to_text", "text_to_ecg"):
                typer.echo(f"pretrained - random, {direction}: " + ", ".join(
                    f"{k} {v:+.3f}" for k, v in d[direction].items() if v is not None))
        else:
            per = ", ".join(f"{c} {100 * v['auroc']:+.2f}" for c, v in d["per_class"].items()
                            if v.get("auroc") is not None)
            macro = d.get("macro_auroc")
            typer.echo(f"pretrained - random, AUROC points: macro {'-' if macro is None else f'{100 * macro:+.2f}'}"
                       f"; per class: {per}")


def _print_retrieval(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    model = (r.get("model") or {}).get("id") or (r.get("model") or {}).get("name") or "?"
    console = Console()
    console.print(f"retrieval {r['dataset']}, {r['split']} split, N = {r['n_candidates']} candidates "
                  f"({r['n_distinct_reports']} distinct reports), score {r['score']}, model {model}", highlight=False)
    t = Table()
    t.add_column("direction")
    for k in ("R@1", "R@5", "R@10"):
        t.add_column(f"{k} %", justify="right")
    t.add_column("median rank", justify="right")
    t.add_column("mean rank", justify="right")
    for direction in ("ecg_to_text", "text_to_ecg"):
        v = r[direction]
        t.add_row(f"{direction.replace('_to_', ' -> ')} ({r['n_queries'][direction]} queries)",
                  *[_pct(v[k]) for k in ("R@1", "R@5", "R@10")], f"{v['median_rank']:g}", f"{v['mean_rank']:.1f}")
        t.add_row("  chance", *[_pct(r["chance"][direction][k]) for k in ("R@1", "R@5", "R@10")], "", "",
                  style="dim")
    console.print(t)


def _errors(feat_report: dict) -> None:
    from .logs import STATE

    if STATE.quiet:  # -q: errors and results only
        return
    errs = feat_report.get("errors") or []
    for e in errs[:10]:
        typer.echo(f"warning: skipped {e}", err=True)
    n_missing = feat_report.get("n_missing") or 0
    if n_missing:
        more = f" ({len(errs)} could not be read)" if errs else ""
        typer.echo(f"warning: {n_missing} record(s) without features left out{more}", err=True)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _print_report(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    name = f"{r['dataset']}/{r['task']}" if r.get("task") else r["dataset"]
    model = (r.get("model") or {}).get("id") or (r.get("model") or {}).get("name") or "?"
    if r["mode"] == "zero-shot":
        title = f"zero-shot {name}, {r['split']} split, labels {r['label_set']}, model {model}"
        sizes = f"n_test {r['n_test']}"
    else:
        seeds = ",".join(map(str, r["seeds"]))
        title = (f"linear probe {name}, {100 * r['fraction']:g} % of training labels, seed(s) {seeds}, "
                 f"model {model}")
        sizes = f"n_train {r['n_train']} of {r['n_train_split']}, n_val {r['n_val']}, n_test {r['n_test']}"
    console = Console()
    console.print(title, highlight=False)
    console.print(sizes, highlight=False)
    t = Table()
    t.add_column("class")
    t.add_column("n_pos", justify="right")
    t.add_column("AUROC %", justify="right")
    if r["mode"] != "zero-shot":
        t.add_column("F1 %", justify="right")
        t.add_column("threshold", justify="right")
    for c in r["classes"]:
        v = r["per_class"][c]
        auc = _pct(v["auroc"])
        if v.get("auroc_std") is not None:
            auc += f" ± {100 * v['auroc_std']:.2f}"
        f1 = _pct(v["f1"])
        if v.get("f1_std") is not None:
            f1 += f" ± {100 * v['f1_std']:.2f}"
        row = [c, str(v["n_pos"]), auc if c not in r["skipped_reasons"] else "skipped"]
        if r["mode"] != "zero-shot":
            row += [f1 if c not in r["skipped_reasons"] else "-",
                    "-" if v["threshold"] is None else f"{v['threshold']:.3f}"]
        t.add_row(*row)
    macro = _pct(r["macro_auroc"])
    if r.get("macro_auroc_std") is not None and len(r.get("seeds") or []) > 1:
        macro += f" ± {100 * r['macro_auroc_std']:.2f}"
    row = ["macro", "", macro]
    if r["mode"] != "zero-shot":
        f1 = _pct(r["macro_f1"])
        if r.get("macro_f1_std") is not None and len(r["seeds"]) > 1:
            f1 += f" ± {100 * r['macro_f1_std']:.2f}"
        row += [f1, ""]
    t.add_section()
    t.add_row(*row, style="bold")
    console.print(t)
    if r["skipped_classes"]:
        console.print("skipped: " + "; ".join(f"{c} ({r['skipped_reasons'][c]})" for c in r["skipped_classes"]),
                      highlight=False)
    if r.get("split_file"):
        console.print(f"results: {Path(r['split_file']).parent}", highlight=False)
