"""``ecgtext download``: fetch a model from the Hugging Face Hub and assemble a model directory."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, Optional

import typer


class OutputFormat(str, enum.Enum):
    text = "text"
    json = "json"


def command(
    # "\\[" keeps rich's markup parser from eating "[@revision]"
    model: Annotated[str, typer.Argument(
        help="A registered model name (dbeta-base) or hf-hub:org/repo\\[@revision].")] = "dbeta-base",
    revision: Annotated[Optional[str], typer.Option(
        "--revision", "-r", help="Branch, tag or commit to download (default: the registry's, usually main).")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", file_okay=False,
        help="Put the model directory here instead of the cache ($ECGTEXT_CACHE/models/...).")] = None,
    file: Annotated[Optional[str], typer.Option(
        "--file", help="The checkpoint file to take, when the repo holds several.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Download and assemble again even if the revision is already assembled.")] = False,
    fmt: Annotated[OutputFormat, typer.Option(
        "--format", help="text: the model directory path; json: path, repo, revision, commit, file, "
        "sha256, licence.")] = OutputFormat.text,
):
    """Download model weights from the Hugging Face Hub and assemble a model directory.

    By default fetches the published D-BETA weights (Manhph2211/D-BETA) and the
    Flan-T5-base tokenizer, converts the checkpoint once to safetensors and
    prints the model directory on stdout, so `MODEL=$(ecgtext download)` works.
    Downloading a revision that is already assembled does nothing. Uses
    huggingface_hub's cache and settings (HF_HOME, HF_ENDPOINT, HF_HUB_OFFLINE,
    HF_TOKEN). The published weights are licensed CC BY-NC 4.0 (non-commercial).
    """
    from ..hub import download, licence_notice

    result = download(model, revision=revision, output=output, file=file, force=force)
    state = "already assembled" if result.cached else "assembled"
    typer.echo(f"{model}: {result.repo}@{result.revision} = commit {result.commit} "
               f"(file {result.file}, sha256 {result.sha256}); {state}", err=True)
    typer.echo(licence_notice(result), err=True)
    if fmt is OutputFormat.json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
    else:
        typer.echo(str(result.path))
