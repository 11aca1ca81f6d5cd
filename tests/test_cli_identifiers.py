"""Patient identifiers through the real CLI: absent from everything `embed` and `zeroshot` write by default.

Clinical exports carry names, IDs and birth dates. They may enter a record's
metadata only with ``--include-identifiers``; without it they must appear
nowhere: not on stdout or stderr, not in output or error files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from clinical_helpers import PTBXL, ptbxl_counts, write_dicom
from conftest import TINY_DIR
from typer.testing import CliRunner

from ecgtext.cli import app
from ecgtext.cli.options import InputFormatOption, with_read_options
from ecgtext.io import ReadOptions, read_ecg
from ecgtext.io.record import FORMATS

VENDORED_MUSE = Path(__file__).resolve().parent / "data" / "clinical" / "muse" / "synthetic_muse.xml"
# what the two files below hold about their patient (DICOM: tests' writer; MUSE: edited here)
IDENTIFIERS = ("Doe^Jane", "PID-778899", "19600229", "1960-02-29",
               "Quixotewalla", "Zebedeeus", "MRN-5550123", "01-01-1980", "1980-01-01")
BIN = Path(sys.executable).with_name("ecgtext")


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "exports"
    folder.mkdir()
    write_dicom(folder / "a.dcm", ptbxl_counts("00001_hr"), 500.0)  # Doe^Jane, PID-778899, 19600229
    muse = VENDORED_MUSE.read_text(encoding="latin-1")
    for old, new in (("<PatientLastName>Synthetic<", "<PatientLastName>Quixotewalla<"),
                     ("<PatientFirstName>Example<", "<PatientFirstName>Zebedeeus<"),
                     ("<PatientID>SYNTH0001<", "<PatientID>MRN-5550123<")):
        assert old in muse
        muse = muse.replace(old, new)
    (folder / "b.xml").write_text(muse, encoding="latin-1")
    (folder / "broken.dcm").write_bytes((folder / "a.dcm").read_bytes()[:3000])  # an error path too
    return folder


def _run(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "ecgtext"]
    return subprocess.run(cmd + args, capture_output=True, text=True, timeout=600, check=False)


def _assert_nowhere(texts: list[str], files: list[Path]) -> None:
    blobs = [t.encode("utf-8", "surrogateescape") for t in texts] + [p.read_bytes() for p in files]
    for ident in IDENTIFIERS:
        assert not any(ident.encode() in blob for blob in blobs), ident


def test_the_files_do_hold_the_identifiers(tmp_path):
    folder = _folder(tmp_path)
    for name, expect in (("a.dcm", "Doe^Jane"), ("b.xml", "Quixotewalla")):
        assert "patient" not in read_ecg(folder / name).meta
        opted = read_ecg(folder / name, ReadOptions(include_identifiers=True)).meta["patient"]
        assert expect in opted["name"]


def test_embed_and_zeroshot_write_no_identifiers_by_default(tmp_path):
    folder = _folder(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    r1 = _run(["embed", str(folder), "-o", str(out / "emb.parquet"), "--model", str(TINY_DIR), "-j", "0"])
    assert r1.returncode == 1, r1.stderr  # the broken file; the two good ones embedded
    assert "2 embedded, 1 failed" in r1.stderr
    r2 = _run(["zeroshot", str(folder / "a.dcm"), str(folder / "b.xml"), str(folder / "broken.dcm"),
               "--model", str(TINY_DIR), "--format", "jsonl", "-j", "0"])
    assert r2.returncode == 1 and len(r2.stdout.splitlines()) == 2, r2.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any("errors" in p.name for p in files)
    _assert_nowhere([r1.stdout, r1.stderr, r2.stdout, r2.stderr], files)


def test_include_identifiers_flag_reaches_read_options(tmp_path):
    seen = {}

    @with_read_options
    def command(read_options):
        seen["opts"] = read_options

    command(include_identifiers=True)
    assert seen["opts"].include_identifiers is True
    command()
    assert seen["opts"].include_identifiers is False
    # the real commands accept it
    r = CliRunner().invoke(app, ["zeroshot", str(PTBXL / "00001_hr.hea"), "--model", str(TINY_DIR),
                                 "--format", "jsonl", "--include-identifiers"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("fmt", FORMATS)
def test_input_format_help_lists_every_format(fmt):
    assert f" {fmt}" in get_args(InputFormatOption)[1].help
