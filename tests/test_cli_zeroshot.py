"""`ecgtext zeroshot` as users run it: real processes, pipes, formats, failures, plots, the cache."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFORMANCE, REPO, TESTDATA, TINY_DIR
from typer.testing import CliRunner

from ecgtext.cli import app
from ecgtext.errors import EcgTextError

EXPECTED = json.loads((CONFORMANCE / "tiny_records_expected.json").read_text())
RECORDS = [str(TESTDATA / r.split("/")[0] / (r.split("/")[-1] + ".hea")) for r in EXPECTED["records"]]
LABELS = str(CONFORMANCE / "labels_code15.json")
BIN = Path(sys.executable).with_name("ecgtext")
TINY = ["--model", str(TINY_DIR)]


def cli(args: list[str], input: str | None = None) -> tuple[int, str, str]:
    """Run the app in-process; map our errors to exit codes exactly as ``main()`` does."""
    r = CliRunner().invoke(app, args, input=input)
    if isinstance(r.exception, EcgTextError):
        return r.exception.exit_code, r.stdout, r.stderr + str(r.exception)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def test_console_script_reproduces_the_reference_scores_then_runs_cached_without_transformers():
    cmd = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "ecgtext.cli"]
    r = subprocess.run(cmd + ["zeroshot", *RECORDS, *TINY, "--labels", LABELS, "--format", "jsonl"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["path"] for row in rows] == RECORDS
    got = np.array([[row["scores"][c] for c in EXPECTED["labels"]] for row in rows])
    np.testing.assert_allclose(got, np.array(EXPECTED["zeroshot_scores"]), atol=1e-3, rtol=0)
    assert all(set(row) >= {"path", "scores", "top", "windows", "missing_leads"} for row in rows)

    # the label features are now cached: a second run must not touch the text tower
    driver = (
        "import sys\n"
        "from ecgtext.cli import main\n"
        f"sys.argv = ['ecgtext', 'zeroshot', {RECORDS[0]!r}, '--model', {str(TINY_DIR)!r}, "
        f"'--labels', {LABELS!r}, '--format', 'jsonl']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "heavy = [m for m in ('transformers', 'tokenizers', 'sentencepiece', 'matplotlib', 'sklearn', "
        "'torch._dynamo') if m in sys.modules]\n"
        "print('DRIVER', code, ','.join(heavy), file=sys.stderr)\n")
    r2 = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr
    assert "DRIVER 0 \n" in r2.stderr or r2.stderr.rstrip().endswith("DRIVER 0"), r2.stderr
    assert json.loads(r2.stdout)["scores"] == pytest.approx(rows[0]["scores"], abs=1e-5)


def test_failures_stream_one_line_each_with_a_summary_and_exit_1(tmp_path):
    bad = tmp_path / "bad.hea"
    bad.write_text("not a header\n")
    code, out, err = cli(["zeroshot", RECORDS[0], str(bad), str(tmp_path / "gone.hea"), RECORDS[1], *TINY,
                          "--labels", LABELS, "--format", "jsonl"])
    assert code == 1
    assert [json.loads(x)["path"] for x in out.splitlines()] == [RECORDS[0], RECORDS[1]]
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"error: {bad}: ") and lines[1] == f"error: {tmp_path / 'gone.hea'}: no such file"
    assert lines[-1] == "2 ok, 2 failed"
    assert "Traceback" not in err


def test_nothing_readable_is_a_failure(tmp_path):
    code, out, err = cli(["zeroshot", str(tmp_path / "gone.hea"), *TINY, "--labels", LABELS])
    assert code != 0 and out == "" and "0 ok, 1 failed" in err
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    code, _, err = cli(["zeroshot", str(empty), *TINY])
    assert code != 0 and "no ECG records" in err


def test_usage_errors_exit_2():
    assert cli(["zeroshot", RECORDS[0], *TINY, "--score", "dot"])[0] == 2
    assert cli(["zeroshot", RECORDS[0], *TINY, "--label", "no-equals-sign"])[0] == 2  # ConfigError
    code, _, err = cli(["zeroshot", RECORDS[0], *TINY, "--labels", "no-such-set"])
    assert code == 2 and "unknown label set" in err
    code, _, err = cli(["zeroshot", *RECORDS[:2], *TINY, "--plot", "one.png"])
    assert code == 2 and "directory" in err


def test_paths_from_stdin_csv_and_inline_labels():
    stdin = "\n".join(RECORDS[:3]) + "\n"
    code, out, err = cli(["zeroshot", "-", *TINY, "--labels", "ptbxl-super", "--label",
                          "PACE=paced rhythm: pacemaker spikes before every QRS complex.", "--format", "csv",
                          "--top", "2"], input=stdin)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["path"] for r in rows] == RECORDS[:3]
    assert list(rows[0])[-6:] == ["NORM", "MI", "STTC", "CD", "HYP", "PACE"]
    for r in rows:
        scores = {c: float(r[c]) for c in ("NORM", "MI", "STTC", "CD", "HYP", "PACE")}
        assert r["top"].split() == sorted(scores, key=lambda c: -scores[c])[:2]


def test_json_tsv_and_table_formats():
    args = ["zeroshot", *RECORDS[:2], *TINY, "--labels", LABELS]
    code, out, _ = cli(args + ["--format", "json", "--score", "cosine"])
    data = json.loads(out)
    assert code == 0 and [d["path"] for d in data] == RECORDS[:2]
    assert all(-1.0 <= v <= 1.0 for d in data for v in d["scores"].values())
    code, out, _ = cli(args + ["--format", "tsv"])
    assert code == 0 and out.splitlines()[0].split("\t")[:3] == ["path", "windows", "missing_leads"]
    code, out, _ = cli(args + ["--format", "table"])
    assert code == 0 and "LBBB" in out and "00001_hr" in out  # tiny model: LBBB scores highest


def test_per_window_jsonl(tmp_path):
    from ecgtext.io import ReadOptions, read_ecg

    ecg = read_ecg(TESTDATA / "physionet_misc" / "100.hea", ReadOptions(lead_map={"MLII": "II"}))
    path = tmp_path / "mitbih100_25s.npy"
    np.save(path, ecg.signal[:, :25 * 360])
    code, out, err = cli(["zeroshot", str(path), *TINY, "--labels", LABELS, "--per-window", "--fs", "360",
                          "--leads", "II,V5", "--format", "jsonl"])
    assert code == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert [(r["window"], r["start_s"]) for r in rows] == [(0, 0.0), (1, 10.0), (2, 15.0)]
    assert rows[0]["windows"] == 3 and "V1" in rows[0]["missing_leads"]


def test_plot_one_record_to_a_file_and_many_to_a_directory(tmp_path):
    png = tmp_path / "one.png"
    code, _, err = cli(["zeroshot", RECORDS[0], *TINY, "--labels", LABELS, "--plot", str(png), "-f", "jsonl"])
    assert code == 0, err
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    h, w = img.shape[:2]
    assert w > 1.5 * h > 600  # landscape ECG sheet
    folder = tmp_path / "plots"
    code, _, err = cli(["zeroshot", *RECORDS[4:], *TINY, "--labels", LABELS, "--plot", str(folder), "-f", "jsonl"])
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == ["E07500.png", "JS20000.png"]


def test_help_is_fast_and_documents_the_scores():
    r = subprocess.run([sys.executable, "-m", "ecgtext.cli", "zeroshot", "--help"], capture_output=True,
                       text=True, timeout=120, cwd=REPO, env={"COLUMNS": "200", "PATH": ""})
    assert r.returncode == 0
    for word in ("--labels", "--score", "softmax", "--plot", "--per-window", "--format", "--device"):
        assert word in r.stdout
