"""``ecgtext pretrain``: parse options, build a TrainConfig, call ``ecgtext.pretrain.pretrain``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import with_read_options

DATA = "Data"
MODEL = "Model"
OPTIM = "Optimisation and budget"
OBJ = "Objectives"
RUN = "Run"


@with_read_options
def command(
    out: Annotated[Optional[Path], typer.Option("--out", "-o", rich_help_panel=RUN,
                                                help="Run folder: checkpoints/, metrics.jsonl, model/.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", rich_help_panel=RUN,
                                                   help="JSON file of settings (keys as in "
                                                        "ecgtext/presets/pretrain-default.json); "
                                                        "flags override it.")] = None,
    resume: Annotated[bool, typer.Option("--resume", rich_help_panel=RUN,
                                         help="Continue the run in --out from its last checkpoint.")] = False,
    manifest: Annotated[Optional[Path], typer.Option("--manifest", rich_help_panel=DATA,
                                                     help="CSV/TSV/Parquet table of ECG paths and reports.")] = None,
    path_col: Annotated[Optional[str], typer.Option("--path-col", rich_help_panel=DATA,
                                                    help="Manifest column with ECG file paths (default: path).")] = None,
    report_col: Annotated[Optional[str], typer.Option("--report-col", rich_help_panel=DATA,
                                                      help="Manifest column with the reports (default: report).")] = None,
    id_col: Annotated[Optional[str], typer.Option("--id-col", rich_help_panel=DATA,
                                                  help="Manifest column with record ids (optional).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", rich_help_panel=DATA,
                                                   help="manifest, ptbxl or mimic-iv-ecg.")] = None,
    root: Annotated[Optional[Path], typer.Option("--root", rich_help_panel=DATA,
                                                 help="Dataset folder for --dataset ptbxl / mimic-iv-ecg.")] = None,
    rate: Annotated[Optional[int], typer.Option("--rate", rich_help_panel=DATA,
                                                help="PTB-XL records to use: 500 or 100 (Hz).")] = None,
    max_records: Annotated[Optional[int], typer.Option("--max-records", rich_help_panel=DATA,
                                                       help="Use only the first N pairs (smoke runs).")] = None,
    init: Annotated[Optional[str], typer.Option("--init", rich_help_panel=MODEL,
                                                help="scratch, flan-t5, or a D-BETA model (folder, registry "
                                                     "name, hf-hub:org/repo) to continue pretraining.")] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", rich_help_panel=MODEL,
                                                help="Architecture for scratch / flan-t5: dbeta-base, dbeta-tiny "
                                                     "or a config.json.")] = None,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", rich_help_panel=MODEL,
                                                      help="Folder with the T5 tokenizer files (scratch runs).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", rich_help_panel=MODEL,
                                                  help="cpu, cuda, cuda:1 ... (default: cuda per local rank if present)")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", rich_help_panel=MODEL,
                                                     help="auto, fp32, bf16 or fp16 (default: auto: bf16 on GPU).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", rich_help_panel=OPTIM,
                                                      help="Pairs per process per micro-batch.")] = None,
    grad_accum: Annotated[Optional[int], typer.Option("--grad-accum", rich_help_panel=OPTIM,
                                                      help="Micro-batches per optimiser step.")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", rich_help_panel=OPTIM,
                                                     help="Optimiser steps (overrides --max-epochs).")] = None,
    max_epochs: Annotated[Optional[int], typer.Option("--max-epochs", rich_help_panel=OPTIM,
                                                      help="Passes over the data.")] = None,
    stop_at_step: Annotated[Optional[int], typer.Option("--stop-at-step", rich_help_panel=OPTIM,
                                                        help="Pause at this step (checkpoint; --resume later); "
                                                             "the schedule still spans the whole budget.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", rich_help_panel=OPTIM, help="Peak learning rate (default: 5e-5).")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option("--warmup-steps", rich_help_panel=OPTIM,
                                                        help="Linear warm-up steps (default: 5 % of the budget).")] = None,
    schedule: Annotated[Optional[str], typer.Option("--schedule", rich_help_panel=OPTIM,
                                                    help="Decay after warm-up: cosine, linear or constant.")] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", rich_help_panel=OPTIM)] = None,
    clip_grad: Annotated[Optional[float], typer.Option("--clip-grad", rich_help_panel=OPTIM,
                                                       help="Gradient-norm clip (0 = off) (default: 1.0).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", rich_help_panel=OPTIM)] = None,
    mlm_prob: Annotated[Optional[float], typer.Option("--mlm-prob", rich_help_panel=OBJ,
                                                      help="Fraction of report tokens masked (default: 0.25).")] = None,
    lead_masking: Annotated[Optional[float], typer.Option("--lead-masking", rich_help_panel=OBJ,
                                                          help="Probability of zeroing each lead [model config: "
                                                               "0.5].")] = None,
    ets_scale: Annotated[Optional[float], typer.Option("--ets-scale", rich_help_panel=OBJ,
                                                       help="Scale of the ETS logits (default: 1, the "
                                                            "reference; SigLIP: 10).")] = None,
    ets_bias: Annotated[Optional[float], typer.Option("--ets-bias", rich_help_panel=OBJ,
                                                      help="Bias of the ETS logits (default: none, the "
                                                           "reference; SigLIP: -10).")] = None,
    crop: Annotated[Optional[str], typer.Option("--crop", rich_help_panel=OBJ,
                                                help="Window of long records: random or first.")] = None,
    n3s_k: Annotated[Optional[int], typer.Option("--n3s-k", rich_help_panel=OBJ,
                                                 help="Draw negatives among the k least similar reports (default: 64).")] = None,
    n3s_fraction: Annotated[Optional[float], typer.Option("--n3s-fraction", rich_help_panel=OBJ,
                                                          help="Fraction of pairs given a negative report "
                                                               "[0.5].")] = None,
    n3s_encoder: Annotated[Optional[str], typer.Option("--n3s-encoder", rich_help_panel=OBJ,
                                                       help="Report embeddings for N3S: auto, tfidf or "
                                                            "minilm.")] = None,
    num_workers: Annotated[Optional[int], typer.Option("--num-workers", rich_help_panel=RUN,
                                                       help="DataLoader worker processes per rank.")] = None,
    save_every: Annotated[Optional[int], typer.Option("--save-every", rich_help_panel=RUN,
                                                      help="Checkpoint every N steps.")] = None,
    keep_checkpoints: Annotated[Optional[int], typer.Option("--keep-checkpoints", rich_help_panel=RUN,
                                                            help="Checkpoints kept (default: 2).")] = None,
    log_every: Annotated[Optional[int], typer.Option("--log-every", rich_help_panel=RUN,
                                                     help="Metrics every N steps.")] = None,
    read_options: object = None,  # a ReadOptions, built by @with_read_options
):
    """Pretrain (or continue pretraining) D-BETA on ECG-report pairs; writes OUT/model.

    Data: --manifest FILE, or --dataset ptbxl|mimic-iv-ecg --root DIR.

    Many GPUs / machines: torchrun --nproc_per_node 8 -m ecgtext pretrain ...
    """
    import dataclasses

    from ..io.record import ReadOptions
    from ..pretrain import load_train_config, pretrain

    given = {f.name: getattr(read_options, f.name) for f in dataclasses.fields(ReadOptions)
             if getattr(read_options, f.name) != getattr(ReadOptions(), f.name)}
    overrides = dict(
        out=out and str(out), resume=resume or None, manifest=manifest and str(manifest), path_col=path_col,
        report_col=report_col, id_col=id_col, dataset=dataset, root=root and str(root), rate=rate,
        max_records=max_records, init=init, arch=arch, tokenizer=tokenizer and str(tokenizer), device=device,
        precision=precision, batch_size=batch_size, grad_accum=grad_accum, max_steps=max_steps,
        max_epochs=max_epochs, stop_at_step=stop_at_step, lr=lr, warmup_steps=warmup_steps, schedule=schedule,
        weight_decay=weight_decay, clip_grad=clip_grad, seed=seed, mlm_prob=mlm_prob, lead_masking=lead_masking,
        crop=crop, ets_scale=ets_scale, ets_bias=ets_bias, n3s_k=n3s_k, n3s_fraction=n3s_fraction, n3s_encoder=n3s_encoder, num_workers=num_workers,
        save_every=save_every, keep_checkpoints=keep_checkpoints, log_every=log_every)
    if manifest is not None and dataset is None:
        overrides["dataset"] = "manifest"
    cfg = load_train_config(config, overrides)  # max_steps, when set, overrides max_epochs
    if given:
        cfg.read_options = {**cfg.read_options, **given}
    bar = _ProgressBar()
    try:
        result = pretrain(cfg, progress=bar.update if bar.enabled else None)
    finally:
        bar.stop()
    typer.echo(str(result))


class _ProgressBar:
    """The training progress bar on a terminal's stderr (none in a pipe or with -q)."""

    def __init__(self):
        import sys

        from .logs import STATE

        self.enabled = sys.stderr.isatty() and not STATE.quiet
        self._bar = None

    def update(self, step: int, total: int, rec: dict) -> None:
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                 TextColumn("{task.fields[info]}"), console=Console(stderr=True), transient=False)
            self._task = self._bar.add_task("steps", total=total, completed=step, info="")
            self._bar.start()
        info = (f"loss {rec['loss']:.4f} lr {rec['lr']:.2e} {rec['samples_per_s']:.1f} samples/s"
                if "loss" in rec else "")
        self._bar.update(self._task, completed=step, info=info)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
