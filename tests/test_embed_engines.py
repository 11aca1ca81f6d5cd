"""`ecgtext embed` engines agree: local, torchrun (2 processes) and Ray (a local 2-CPU instance)
give the same rows for the same real records; a Ray worker killed mid-run loses and doubles
nothing; resuming skips finished work; part-file folders merge into one file with provenance
checked. One Ray instance serves the whole module (starting one costs ~10-30 s)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import REPO, TESTDATA, TINY_DIR
from typer.testing import CliRunner

from ecgtext.cli import app
from ecgtext.errors import EcgTextError, ProvenanceError
from ecgtext.inference.embed import record_key, run_embed

INPUTS = [str(TESTDATA / "ptbxl"), str(TESTDATA / "cinc2021")]  # 7 real records (PTB-XL, CinC 2021)
N_RECORDS = 7
TINY = ["--model", str(TINY_DIR)]
COLUMNS = ["window", "start_s", "n_windows", "fs", "duration_s", "missing_leads", "model"]


def cli(args: list[str]) -> tuple[int, str]:
    """Run the app in-process (sharing this module's Ray instance); exit code and stderr."""
    r = CliRunner().invoke(app, args)
    if isinstance(r.exception, EcgTextError):
        return r.exception.exit_code, r.stderr + str(r.exception)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stderr


def rows_by_key(table) -> dict[str, dict]:
    """key -> row (embedding as float32 array); asserts every key appears once."""
    d = table.to_pydict()
    keys = [record_key(p) for p in d["path"]]
    assert len(keys) == len(set(keys)), "duplicate keys"
    out = {}
    for i, k in enumerate(keys):
        out[k] = {c: d[c][i] for c in COLUMNS}
        out[k]["embedding"] = np.asarray(d["embedding"][i], dtype=np.float32)
    return out


def assert_same_rows(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert {c: a[k][c] for c in COLUMNS} == {c: b[k][c] for c in COLUMNS}, k
        np.testing.assert_allclose(a[k]["embedding"], b[k]["embedding"], atol=1e-5, rtol=0, err_msg=k)


def meta_of(path) -> dict:
    m = json.loads(pq.read_schema(path).metadata[b"ecgtext"])
    m["provenance"].pop("model_source", None)  # informational: how the weights were named
    return m


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'ecgtext[ray]')")
    from ecgtext.inference.engines.ray import RayOptions, connect

    started = connect(RayOptions(num_cpus=2))
    import ray

    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "emb.parquet"
    s = run_embed(INPUTS_EXPANDED(), str(TINY_DIR), out)
    assert (s.written, s.failed) == (N_RECORDS, 0)
    return out


def INPUTS_EXPANDED() -> list[str]:
    from ecgtext.io import expand_paths

    return expand_paths(INPUTS)


@pytest.mark.slow
def test_local_torchrun_and_ray_give_identical_rows(ray_cluster, local_reference, tmp_path):
    ref = rows_by_key(pq.read_table(local_reference))
    assert len(ref) == N_RECORDS

    # torchrun, 2 processes: each rank writes its shard's part file
    shards = tmp_path / "torchrun"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "ecgtext", "embed", *INPUTS, "-o", str(shards), *TINY, "-q"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in shards.iterdir()) == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    assert_same_rows(ref, rows_by_key(pq.read_table(shards)))

    # Ray on the local 2-CPU instance, through the CLI; 2 records per part -> several parts and actor batches
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "garbage.hea").write_text("this is not a header\n")
    out = tmp_path / "ray"
    code, err = cli(["embed", *INPUTS, str(bad), "-o", str(out), *TINY, "--engine", "ray", "--flush-every", "2"])
    assert code == 1, err  # one record failed, like the local engine
    assert f"{out}: {N_RECORDS} embedded, 1 failed" in err and "error: " in err
    errors = [json.loads(x) for x in (tmp_path / "ray.errors.jsonl").read_text().splitlines()]
    assert [e["path"] for e in errors] == [str(bad / "garbage.hea")] and errors[0]["error"].endswith("Error")
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) >= 4 and not list(out.glob(".*"))
    assert_same_rows(ref, rows_by_key(pq.read_table(out)))
    # same schema and the same provenance metadata as the single-process file
    assert pq.read_schema(parts[0]).remove_metadata() == pq.read_schema(local_reference).remove_metadata()
    assert meta_of(parts[0]) == meta_of(local_reference)

    # both part-file folders merge into one file equal to the local one
    for folder in (out, shards):
        merged = tmp_path / f"{folder.name}-merged.parquet"
        code, err = cli(["embed", "--merge", str(folder), "-o", str(merged)])
        assert code == 0, err
        assert f"{N_RECORDS} rows merged" in err
        assert_same_rows(ref, rows_by_key(pq.read_table(merged)))


@pytest.mark.slow
def test_a_killed_actor_still_yields_every_record_exactly_once(ray_cluster, local_reference, tmp_path,
                                                               monkeypatch):
    from ecgtext.inference.engines.ray import TEST_CRASH_ENV, RayOptions, run_embed_ray

    flag = tmp_path / "crashed"
    # the actor dies right after writing its 2nd part (before Ray hears of it): Ray restarts it and
    # retries that batch, whose part is rewritten under the same name
    monkeypatch.setenv(TEST_CRASH_ENV, f"2:{flag}")
    out = tmp_path / "ray"
    s = run_embed_ray(INPUTS, str(TINY_DIR), out, options=RayOptions(records_per_part=1))
    assert flag.exists(), "the test hook did not fire"
    assert (s.written, s.failed, s.skipped) == (N_RECORDS, 0, 0)
    assert len(list(out.glob("part-*.parquet"))) == N_RECORDS
    assert_same_rows(rows_by_key(pq.read_table(local_reference)), rows_by_key(pq.read_table(out)))


@pytest.mark.slow
def test_resume_skips_finished_work_and_commit_removes_duplicates(ray_cluster, local_reference, tmp_path):
    from ecgtext.inference.engines.ray import RayOptions, run_embed_ray

    out = tmp_path / "ray"
    opts = RayOptions(records_per_part=2)
    first = run_embed_ray([INPUTS[0]], str(TINY_DIR), out, options=opts)  # the 5 PTB-XL records
    assert (first.written, first.skipped) == (5, 0)
    # leftovers of a killed run: a torn temporary file, and a part duplicating finished rows
    some = sorted(out.glob("part-*.parquet"))[0]
    shutil.copy(some, out / "part-zz-duplicate.parquet")
    (out / ".part-x.parquet.tmp-0123.parquet.tmp").write_bytes(b"half a file")
    again = run_embed_ray(INPUTS, str(TINY_DIR), out, options=opts)
    assert (again.written, again.failed, again.skipped) == (2, 0, 5)  # only the CinC records
    assert not list(out.glob(".*"))
    assert_same_rows(rows_by_key(pq.read_table(local_reference)), rows_by_key(pq.read_table(out)))
    done = run_embed_ray(INPUTS, str(TINY_DIR), out, options=opts)
    assert (done.written, done.skipped) == (0, N_RECORDS)
    # other settings are refused, as with the local engine
    with pytest.raises(EcgTextError, match="per_window"):
        run_embed_ray(INPUTS, str(TINY_DIR), out, options=opts, per_window=True)


@pytest.mark.slow
def test_a_manifest_of_paths_is_expanded_on_the_workers(ray_cluster, local_reference, tmp_path):
    import pandas as pd

    from ecgtext.inference.engines.ray import RayOptions, run_embed_ray

    recs = INPUTS_EXPANDED()
    manifest = tmp_path / "manifest.parquet"
    # relative to the manifest's folder, absolute, and a folder: all resolved on the workers
    rel = [os.path.relpath(p, tmp_path) for p in recs[:3]]
    pd.DataFrame({"path": rel + recs[3:5] + [INPUTS[1]], "label": 0}).to_parquet(manifest)
    out = tmp_path / "ray"
    s = run_embed_ray([str(manifest)], str(TINY_DIR), out, options=RayOptions(records_per_part=3))
    assert (s.written, s.failed) == (N_RECORDS, 0)
    assert_same_rows(rows_by_key(pq.read_table(local_reference)), rows_by_key(pq.read_table(out)))


def _holter(folder) -> str:
    """A 48-min 12-lead ISHNE Holter (35 MB: above the streaming threshold) from a real PTB-XL record."""
    import wfdb
    from clinical_writers import write_long_ishne

    from ecgtext.io.stream import should_stream

    counts = wfdb.rdrecord(str(TESTDATA / "ptbxl" / "00001_hr"), physical=False).d_signal.T.astype(np.int64)
    path = str(write_long_ishne(folder / "holter.ecg", counts, STANDARD_LEADS, 500, hours=0.8))
    assert should_stream(path)
    return path


STANDARD_LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def test_ray_read_tasks_leave_long_recordings_to_the_actors(tmp_path):
    """A Holter is not prepared whole in a read task (GBs there, and through the object store):
    it is marked, and the model actor streams it."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'ecgtext[ray]')")
    from ecgtext.config import load_config
    from ecgtext.inference.engines.ray import _prepare_batch

    short = str(TESTDATA / "ptbxl" / "00001_hr.hea")
    batch = {"path": np.array([_holter(tmp_path), short], dtype=object),
             "error": np.array(["", ""], dtype=object), "message": np.array(["", ""], dtype=object)}
    pre = load_config(TINY_DIR).preprocess
    out = _prepare_batch(batch, pre=pre, read_options=None, stride=None, min_coverage=0.5,
                         done=np.zeros((0, 16), dtype=np.uint8))
    assert json.loads(out["info"][0]) == {"stream": True} and out["windows"][0].shape[0] == 0
    assert out["windows"][1].shape[0] == 1 and not out["error"][0] and not out["error"][1]


@pytest.mark.slow
def test_ray_streams_a_holter_with_the_local_engines_rows(ray_cluster, tmp_path):
    from ecgtext.inference.engines.ray import RayOptions, run_embed_ray

    holter = _holter(tmp_path)
    local = tmp_path / "local.parquet"
    s = run_embed([holter], str(TINY_DIR), local, per_window=True)
    assert (s.written, s.failed) == (1, 0) and s.rows == 288
    out = tmp_path / "ray"
    r = run_embed_ray([holter, str(TESTDATA / "ptbxl")], str(TINY_DIR), out, per_window=True,
                      options=RayOptions(records_per_part=2))
    assert (r.written, r.failed) == (6, 0)
    a, b = pq.read_table(local).to_pydict(), pq.read_table(out).to_pydict()
    rows = [i for i, p in enumerate(b["path"]) if p == holter]
    assert len(rows) == 288 and sorted(b["window"][i] for i in rows) == a["window"]
    by_window = {b["window"][i]: np.asarray(b["embedding"][i], dtype=np.float32) for i in rows}
    for w, emb in zip(a["window"], a["embedding"]):
        np.testing.assert_allclose(by_window[w], np.asarray(emb, dtype=np.float32), atol=1e-5, rtol=0)


def test_unreachable_cluster_is_one_line_not_a_hang(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, err = cli(["embed", *INPUTS, "-o", str(tmp_path / "out"), *TINY, "--engine", "ray",
                     "--ray-address", f"127.0.0.1:{port}"])
    assert code == 2 and f"cannot reach the Ray cluster at 127.0.0.1:{port}" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_without_ray_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code, err = cli(["embed", *INPUTS, "-o", str(tmp_path / "out"), *TINY, "--engine", "ray"])
    assert code == 2 and 'pip install "ecgtext[ray]"' in err


def test_merge_refuses_parts_with_other_provenance(local_reference, tmp_path):
    from ecgtext.inference.engines import merge_parts

    folder = tmp_path / "parts"
    folder.mkdir()
    t = pq.read_table(local_reference)
    pq.write_table(t.slice(0, 3), folder / "part-a.parquet")
    meta = json.loads(t.schema.metadata[b"ecgtext"])
    meta["provenance"]["precision"] = "bf16"
    other = t.slice(3).replace_schema_metadata({b"ecgtext": json.dumps(meta).encode()})
    pq.write_table(other, folder / "part-b.parquet")
    with pytest.raises(ProvenanceError, match="precision"):
        merge_parts(folder, tmp_path / "merged.parquet")
    assert not (tmp_path / "merged.parquet").exists()
    (folder / "part-b.parquet").unlink()
    assert merge_parts(folder, tmp_path / "merged.parquet") == 3
