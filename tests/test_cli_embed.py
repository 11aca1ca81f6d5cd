"""`ecgtext embed` as users run it: pipes, a killed and resumed run, broken files, shards."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from conftest import CONFORMANCE, REPO, TESTDATA, TINY_DIR, shared_data
from typer.testing import CliRunner

from ecgtext.cli import app
from ecgtext.errors import EcgTextError

EXPECTED = json.loads((CONFORMANCE / "tiny_records_expected.json").read_text())
RECORDS = [str(TESTDATA / r.split("/")[0] / (r.split("/")[-1] + ".hea")) for r in EXPECTED["records"]]
BIN = Path(sys.executable).with_name("ecgtext")
ECGTEXT = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "ecgtext.cli"]
TINY = ["--model", str(TINY_DIR)]


def cli(args: list[str], input: str | None = None) -> tuple[int, str, str]:
    """Run the app in-process; map our errors to exit codes exactly as ``main()`` does."""
    r = CliRunner().invoke(app, args, input=input)
    if isinstance(r.exception, EcgTextError):
        return r.exception.exit_code, r.stdout, r.stderr + str(r.exception)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def _by_path(table) -> dict[str, np.ndarray]:
    return dict(zip(table.column("path").to_pylist(),
                    np.stack(table.column("embedding").to_numpy(zero_copy_only=False))))


def test_pipe_from_find_reproduces_the_reference_embeddings(tmp_path):
    out = tmp_path / "emb.parquet"
    cmd = (f"find tests/data/ptbxl tests/data/cinc2021 -name '*.hea' | sort | "
           f"{' '.join(map(shlex.quote, ECGTEXT))} embed - -o {shlex.quote(str(out))} "
           f"--model {shlex.quote(str(TINY_DIR))}")
    r = subprocess.run(cmd, shell=True, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    # in a pipe: no progress bar, just the summary line
    assert r.stderr == f"{out}: 7 embedded, 0 failed\n" and r.stdout == ""
    emb = _by_path(pq.read_table(out))
    assert len(emb) == 7  # 00001-00004_hr, 00001_lr (100 Hz, resampled), E07500, JS20000
    got = np.stack([emb[os.path.relpath(p, REPO)] for p in RECORDS])
    np.testing.assert_allclose(got, np.array(EXPECTED["ecg_embedding"]), atol=1e-4, rtol=0)


def test_killed_run_resumes_without_losing_or_duplicating_rows(tmp_path):
    folder = shared_data() / "ptbxl" / "records500"
    n_total = len(list(folder.rglob("*.hea")))
    out = tmp_path / "emb.parquet"
    parts = tmp_path / "emb.parquet.parts"
    args = ["embed", str(folder), "-o", str(out), *TINY, "--flush-every", "10", "-j", "0"]
    proc = subprocess.Popen(ECGTEXT + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(list(parts.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    done = sum(pq.read_table(p).num_rows for p in parts.glob("part-*.parquet"))
    assert 30 <= done < n_total

    code, _, err = cli(args)
    assert code == 0, err
    written = int(err.split(": ")[1].split(" embedded")[0])
    assert f"{n_total - written} already there" in err and n_total - written >= done
    table = pq.read_table(out)
    paths = table.column("path").to_pylist()
    assert len(paths) == len(set(paths)) == n_total  # nothing lost, nothing twice
    assert not parts.exists()
    first = _by_path(table)[str(folder / "00000" / "00001_hr.hea")]
    np.testing.assert_allclose(first, EXPECTED["ecg_embedding"][0], atol=1e-4, rtol=0)


def test_broken_files_are_listed_and_the_rest_is_written(tmp_path):
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "garbage.hea").write_text("this is not a header\n")
    (bad / "00002_hr.hea").write_text((TESTDATA / "ptbxl" / "00002_hr.hea").read_text())
    (bad / "00002_hr.dat").write_bytes((TESTDATA / "ptbxl" / "00002_hr.dat").read_bytes()[:999])
    (bad / "empty.npy").write_bytes(b"")
    out = tmp_path / "emb.parquet"
    code, _, err = cli(["embed", RECORDS[0], str(bad), RECORDS[4], "-o", str(out), *TINY])
    assert code == 1
    failed = sorted(str(bad / n) for n in ("garbage.hea", "00002_hr.hea", "empty.npy"))
    errors = [json.loads(x) for x in (tmp_path / "emb.errors.jsonl").read_text().splitlines()]
    assert sorted(e["path"] for e in errors) == failed
    assert all(e["error"].endswith("Error") and e["message"] for e in errors)
    assert sum(line.startswith("error: ") for line in err.splitlines()) == 3
    assert "2 embedded, 3 failed" in err and "emb.errors.jsonl" in err
    assert pq.read_table(out).column("path").to_pylist() == [RECORDS[0], RECORDS[4]]


def test_two_shards_form_one_dataset_equal_to_the_unsharded_output(tmp_path):
    inputs = [str(TESTDATA / "ptbxl"), str(TESTDATA / "cinc2021")]
    single = tmp_path / "single.parquet"
    assert cli(["embed", *inputs, "-o", str(single), *TINY, "-q"])[0] == 0
    sharded = tmp_path / "sharded.parquet"
    for i in (0, 1):
        code, _, err = cli(["embed", *inputs, "-o", str(sharded), *TINY, "--shard", f"{i}/2", "-q"])
        assert code == 0, err
    assert sorted(p.name for p in sharded.iterdir()) == ["part-00000-of-00002.parquet",
                                                          "part-00001-of-00002.parquet"]
    a = pd.read_parquet(single).sort_values("path").reset_index(drop=True)
    b = pd.read_parquet(sharded).sort_values("path").reset_index(drop=True)
    assert len(b) == 7 and pads.dataset(sharded).count_rows() == 7
    pd.testing.assert_frame_equal(a.drop(columns="embedding"), b.drop(columns="embedding"))
    np.testing.assert_allclose(np.stack(a["embedding"]), np.stack(b["embedding"]), atol=1e-5, rtol=0)
    # a shard count that does not match what is there is refused
    code, _, err = cli(["embed", *inputs, "-o", str(sharded), *TINY, "--shard", "0/3"])
    assert code == 2 and "split another way" in err


def test_rerun_with_other_settings_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "emb.parquet"
    assert cli(["embed", RECORDS[0], "-o", str(out), *TINY, "-q"])[0] == 0
    code, _, err = cli(["embed", RECORDS[0], "-o", str(out), *TINY, "--per-window"])
    assert code == 2 and "--overwrite" in err
    code, _, err = cli(["embed", RECORDS[0], "-o", str(out), *TINY, "--per-window", "--overwrite"])
    assert code == 0, err
    assert pq.read_table(out).column("window").to_pylist() == [0]
