"""The shared CLI reading options: parsed by Typer into one ReadOptions."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Annotated

import pytest
import typer
from io_helpers import CHAPMAN_MAT, MITBIH_100
from typer.testing import CliRunner

from ecgtext.cli import options as cli_options
from ecgtext.cli.options import read_options, with_read_options
from ecgtext.config import STANDARD_LEADS
from ecgtext.errors import ConfigError
from ecgtext.io import read_ecg


def _app(seen: list):
    app = typer.Typer()

    @app.command()
    @with_read_options
    def embed(inputs: Annotated[list[str], typer.Argument()], read_options,
              out: Annotated[str, typer.Option("--out")] = "emb.parquet"):
        """Embed ECGs."""
        seen.append((inputs, out, read_options))

    return app


def test_typer_parses_the_shared_options():
    seen: list = []
    result = CliRunner().invoke(_app(seen), [
        str(CHAPMAN_MAT), "--fs", "500", "--leads", "standard", "--units", "uV",
        "--lead-map", "ECG 1=I", "--lead-map", "MLII=II", "--ignore-unknown-leads", "--out", "x"])
    assert result.exit_code == 0, result.output
    inputs, out, opts = seen[0]
    assert inputs == [str(CHAPMAN_MAT)] and out == "x"
    assert opts.fs == 500 and opts.leads == list(STANDARD_LEADS) and opts.units == "uV"
    assert opts.lead_map == {"ECG 1": "I", "MLII": "II"} and opts.ignore_unknown_leads
    assert read_ecg(inputs[0], opts).signal.shape == (12, 5000)


def test_defaults_read_what_files_state():
    seen: list = []
    assert CliRunner().invoke(_app(seen), ["a.hea"]).exit_code == 0
    opts = seen[0][2]
    assert (opts.fs, opts.leads, opts.units, opts.lead_map, opts.layout, opts.format) == \
        (None, None, None, {}, None, None)


def test_helper_validates_values():
    opts = read_options(lead_map=["MLII=II"])
    assert read_ecg(MITBIH_100, opts).leads == ["II", "V5"]
    assert read_options(gain=200.0).units == "adc"
    assert read_options(input_format="npz").format == "npy"
    for bad in (dict(lead_map=["MLII"]), dict(units="mmHg"), dict(layout="diagonal"),
                dict(input_format="xyz"), dict(leads="I,,II"), dict(fs=0.0)):
        with pytest.raises(ConfigError):
            read_options(**bad)


def test_decorator_refuses_clashing_or_missing_parameters():
    with pytest.raises(TypeError):
        with_read_options(lambda inputs: None)
    with pytest.raises(TypeError):
        with_read_options(lambda read_options, fs=None: None)


def test_options_module_stays_import_light():
    # `ecgtext --help` imports it: numpy/torch must only be imported inside functions
    tree = ast.parse(Path(cli_options.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name.split(".")[0] for n in top for a in n.names} | \
        {(n.module or "").split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
    assert not names & {"numpy", "torch", "scipy", "wfdb", "h5py", "pandas", "click"}
