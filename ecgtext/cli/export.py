"""``ecgtext export``: the model's ECG and text encoders as ONNX graphs for serving."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated

import typer

from .options import ModelOption


class ExportFormat(str, enum.Enum):
    onnx = "onnx"


def command(
    output: Annotated[Path, typer.Option(
        "--output", "-o", file_okay=False, help="Folder to write (created; must be empty unless --overwrite).")],
    model: ModelOption = "dbeta-base",
    fmt: Annotated[ExportFormat, typer.Option("--format", help="Export format.")] = ExportFormat.onnx,
    ecg_only: Annotated[bool, typer.Option(
        "--ecg-only", help="Export the ECG encoder only (no text encoder or tokenizer).")] = False,
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Check the graphs with ONNX Runtime against torch (max abs error <= 1e-4).")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output folder.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
):
    """Export a model to ONNX: ecg_encoder.onnx ((batch, 12, samples) float32 mV -> (batch, D)),
    text_encoder.onnx (input_ids, attention_mask -> (batch, D)), config.json, tokenizer.

    Batch is dynamic; samples is the model's window (config.json). The fp32
    model is exported and, unless --no-verify, checked with ONNX Runtime against
    torch. Needs the optional extra: pip install 'ecgtext[onnx]'.
    """
    from ..inference.export import export_onnx

    result = export_onnx(model, output, text=not ecg_only, verify=verify, overwrite=overwrite)
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(f"{result.out_dir}: {', '.join(result.files)}")
    if result.max_abs_error:
        errs = ", ".join(f"{k} {v:.1e}" for k, v in result.max_abs_error.items())
        typer.echo(f"verified with ONNX Runtime: max |onnx - torch| {errs} (<= {result.atol:g})", err=True)
