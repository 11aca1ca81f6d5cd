"""The library logs and never prints; the CLI shows the log on stderr, -q / -v choose how much,
and error lines carry the flag that fixes them (library messages never do)."""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFORMANCE, REPO, TESTDATA, TINY_DIR

from ecgtext.errors import ConfigError, EcgTextError, InputError

EXPECTED = json.loads((CONFORMANCE / "tiny_records_expected.json").read_text())
RECORDS = [str(TESTDATA / r.split("/")[0] / (r.split("/")[-1] + ".hea")) for r in EXPECTED["records"]]
BIN = Path(sys.executable).with_name("ecgtext")
ECGTEXT = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "ecgtext.cli"]


def _ecgtext(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ECGTEXT, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=REPO)


def test_no_print_and_no_stderr_in_the_library():
    """Only ecgtext/cli/ talks to the terminal; everything else goes through logging."""
    found = []
    for path in sorted((REPO / "ecgtext").rglob("*.py")):
        if "cli" in path.relative_to(REPO / "ecgtext").parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: print(")
            if (isinstance(node, ast.Attribute) and node.attr in ("stderr", "stdout")
                    and isinstance(node.value, ast.Name) and node.value.id == "sys"):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: sys.{node.attr}")
    assert found == []


def test_embed_logs_what_it_chose_and_prints_nothing(tmp_path, capsys, caplog):
    from ecgtext.inference.embed import run_embed

    out = tmp_path / "emb.parquet"
    parts = tmp_path / "emb.parquet.parts"
    parts.mkdir()
    (parts / "part-000001.parquet").write_bytes(b"not parquet")  # left by some accident
    with caplog.at_level(logging.INFO, logger="ecgtext"):
        s = run_embed([RECORDS[0], str(tmp_path / "missing.hea")], TINY_DIR, out, precision="fp32")
    assert (s.written, s.failed) == (1, 1)
    assert capsys.readouterr() == ("", "")
    msgs = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert any(n == "ecgtext.inference.embed" and lv == "INFO" and "precision fp32" in m and "cpu" in m
               for n, lv, m in msgs), msgs
    assert any(lv == "WARNING" and "part-000001.parquet" in m for _, lv, m in msgs), msgs


def test_cli_error_lines_add_the_flag_from_the_typed_field():
    from ecgtext.cli.errors import error_line

    e = InputError("rec.npy", "no sampling rate in the file", field="sampling rate", option="fs")
    assert error_line(e) == "error: rec.npy: no sampling rate in the file (use --fs HZ)"
    assert error_line(ConfigError("x was written differently", option="overwrite")).endswith("(use --overwrite)")
    assert error_line(ConfigError("bad value", option="lead_map")).endswith("(use --lead-map OLD=NEW)")
    assert error_line(EcgTextError("plain")) == "error: plain"
    # a message that already shows the flag (user input echoed back) does not get it twice
    assert error_line(ConfigError("--shard 9: expected i/n", option="shard")).count("--shard") == 1


def test_library_messages_carry_no_cli_flags():
    """Messages of the library's errors name options in domain terms; flags are the CLI's."""
    import re

    flag = re.compile(r"""f?["'][^"'\n]*(?<![\w-])--[a-z][a-z-]+""")
    found = []
    for path in sorted((REPO / "ecgtext").rglob("*.py")):
        rel = path.relative_to(REPO / "ecgtext").parts
        if rel[0] == "cli":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and node.exc is not None:
                src = ast.get_source_segment(path.read_text(), node.exc) or ""
                if flag.search(src):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == []


def test_quiet_and_verbose_on_the_real_cli(tmp_path):
    out = tmp_path / "emb.parquet"
    base = ["embed", RECORDS[0], "-o", out, "--model", TINY_DIR, "-j", "0"]
    plain = _ecgtext(*base)
    assert plain.returncode == 0, plain.stderr
    assert plain.stderr == f"{out}: 1 embedded, 0 failed\n"  # warnings only by default: none here
    verbose = _ecgtext("-v", *base, "--overwrite")
    assert verbose.returncode == 0, verbose.stderr
    lines = verbose.stderr.splitlines()
    info = [x for x in lines if x.startswith("info: ")]
    assert any("precision fp32" in x and "on cpu" in x for x in info), verbose.stderr
    assert lines[-1] == f"{out}: 1 embedded, 0 failed"
    quiet = _ecgtext("-q", *base[:-2], str(tmp_path / "missing.hea"), "-j", "0")
    assert quiet.returncode == 1
    # errors still show (one line each), the summary does not
    assert [x.split(":")[0] for x in quiet.stderr.splitlines()] == ["error"], quiet.stderr
    refused = _ecgtext("-q", *base, "--per-window")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1
    assert refused.stderr.rstrip().endswith("(use --overwrite)"), refused.stderr


@pytest.mark.parametrize("flag", ["-q", "--quiet", "-v", "--verbose", "-vv"])
def test_root_options_are_accepted(flag):
    from typer.testing import CliRunner

    from ecgtext.cli import app

    r = CliRunner().invoke(app, [flag, "embed", "--help"])
    assert r.exit_code == 0 and "--output" in r.stdout


def test_pretraining_logs_and_prints_nothing(tmp_path, capsys, caplog):
    import pandas as pd

    from ecgtext.pretrain import load_train_config, pretrain

    reports = {1: "sinusrhythmus periphere niederspannung", 2: "sinusbradykardie sonst normales ekg"}
    rows = [{"path": str(TESTDATA / "ptbxl" / f"0000{i}_hr.hea"), "report": r} for i, r in reports.items()]
    rows.append({"path": str(tmp_path / "gone.hea"), "report": "sinus rhythm"})
    pd.DataFrame(rows).to_csv(tmp_path / "pairs.csv", index=False)
    cfg = load_train_config(None, dict(out=str(tmp_path / "run"), init="scratch", arch=str(TINY_DIR),
                                       tokenizer=str(TINY_DIR), num_workers=0, log_every=1, warmup_steps=0,
                                       lr=1e-3, seed=0, manifest=str(tmp_path / "pairs.csv"), batch_size=2,
                                       max_steps=1))
    seen = []
    with caplog.at_level(logging.INFO, logger="ecgtext"):
        pretrain(cfg, progress=lambda step, total, rec: seen.append((step, total)))
    assert capsys.readouterr() == ("", "")
    msgs = [r.getMessage() for r in caplog.records if r.name.startswith("ecgtext.")]
    assert any(m.startswith("pretrain: ") and "parameters" in m for m in msgs), msgs
    assert seen[0] == (0, 1) and seen[-1] == (1, 1)  # the CLI's progress bar is fed, the library draws nothing
