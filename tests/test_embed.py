"""Embedding to Parquet: schema, metadata, resuming, appending, merging, sharding layout."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import CONFORMANCE, TESTDATA, TINY_DIR

from ecgtext.errors import ConfigError
from ecgtext.inference.embed import output_layout, parse_shard, record_key, run_embed, shard_slice
from ecgtext.inference.engine import load_ecg_model, model_identity

EXPECTED = json.loads((CONFORMANCE / "tiny_records_expected.json").read_text())
RECORDS = [str(TESTDATA / r.split("/")[0] / (r.split("/")[-1] + ".hea")) for r in EXPECTED["records"]]


@pytest.fixture(scope="module")
def model():
    return load_ecg_model(TINY_DIR)


def _emb(table) -> np.ndarray:
    return np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


def test_writes_one_row_per_record_with_schema_and_provenance(model, tmp_path):
    out = tmp_path / "emb.parquet"
    s = run_embed(RECORDS, model, out, flush_every=4)
    assert (s.written, s.failed, s.skipped, s.errors_path) == (6, 0, 0, None)
    t = pq.read_table(out)
    assert t.column_names == ["path", "path_bytes", "window", "start_s", "n_windows", "fs", "duration_s", "missing_leads",
                              "model", "embedding"]
    assert str(t.schema.field("embedding").type) == "fixed_size_list<element: float>[64]"
    assert t.column("path").to_pylist() == RECORDS
    np.testing.assert_allclose(_emb(t), np.array(EXPECTED["ecg_embedding"]), atol=1e-4, rtol=0)
    assert t.column("n_windows").to_pylist() == [1] * 6 and t.column("window").null_count == 6
    assert t.column("fs").to_pylist() == [500.0] * 6 and t.column("missing_leads").to_pylist() == [[]] * 6
    ident = model_identity(TINY_DIR)
    assert set(t.column("model").to_pylist()) == {ident.short()}
    meta = json.loads(t.schema.metadata[b"ecgtext"])
    assert meta["model_sha256"] == ident.weights_sha256 and meta["embed_dim"] == 64
    assert meta["preprocess"]["sample_rate"] == 500.0 and meta["preprocess"]["window"] == 5000
    assert meta["preprocess"]["leads"] == model.config.preprocess.leads
    assert not out.with_name("emb.parquet.parts").exists()  # work dir removed once merged


def test_rerun_skips_and_new_records_are_appended(model, tmp_path):
    out = tmp_path / "emb.parquet"
    run_embed(RECORDS[:3], model, out)
    again = run_embed(RECORDS[:3], model, out)
    assert (again.written, again.skipped) == (0, 3)
    more = run_embed(RECORDS, model, out)
    assert (more.written, more.skipped) == (3, 3)
    t = pq.read_table(out)
    assert t.column("path").to_pylist() == RECORDS
    np.testing.assert_allclose(_emb(t), np.array(EXPECTED["ecg_embedding"]), atol=1e-4, rtol=0)


def test_parts_left_by_an_interrupted_run_are_kept_and_not_duplicated(model, tmp_path):
    # a finished output plus a parts folder holding rows that are already in it (a crash
    # between the final rename and removing the parts) and rows that are not
    out = tmp_path / "emb.parquet"
    run_embed(RECORDS[:4], model, out)
    side = tmp_path / "side.parquet"
    run_embed(RECORDS[2:5], model, side)
    parts = out.with_name("emb.parquet.parts")
    parts.mkdir()
    shutil.copy(side, parts / "part-000001.parquet")
    (parts / ".part-000002.parquet.x.tmp").write_bytes(b"half a file")  # killed mid-write
    s = run_embed(RECORDS, model, out)
    assert (s.written, s.skipped) == (1, 5)  # only JS20000 was missing
    paths = pq.read_table(out).column("path").to_pylist()
    assert sorted(paths) == sorted(RECORDS) and len(paths) == 6


def test_per_window_rows(model, tmp_path):
    from ecgtext.io import ReadOptions, read_ecg

    ecg = read_ecg(TESTDATA / "physionet_misc" / "100.hea", ReadOptions(lead_map={"MLII": "II"}))
    long = str(tmp_path / "mitbih100_25s.npy")
    np.save(long, ecg.signal[:, :25 * 360])
    out = tmp_path / "win.parquet"
    run_embed([RECORDS[0], long], model, out, ReadOptions(fs=360, leads="II,V5"), per_window=True)
    t = pq.read_table(out).to_pandas()
    assert t["path"].tolist() == [RECORDS[0], long, long, long]
    assert t["window"].tolist() == [0, 0, 1, 2] and t["start_s"].tolist() == [0.0, 0.0, 10.0, 15.0]
    assert t["n_windows"].tolist() == [1, 3, 3, 3] and t["fs"].tolist() == [500.0, 360.0, 360.0, 360.0]
    assert "V1" in t["missing_leads"].iloc[1]
    # appending aggregated rows to a per-window file would mix two kinds of rows
    with pytest.raises(ConfigError, match="per_window"):
        run_embed([RECORDS[1]], model, out)
    s = run_embed([RECORDS[1]], model, out, overwrite=True)
    assert s.written == 1 and pq.read_table(out).num_rows == 1


def test_failures_go_to_the_errors_file(model, tmp_path):
    bad = tmp_path / "bad.hea"
    bad.write_text("garbage\n")
    out = tmp_path / "emb.parquet"
    s = run_embed([RECORDS[0], str(bad), str(tmp_path / "missing.hea")], model, out)
    assert (s.written, s.failed) == (1, 2)
    assert s.errors_path == tmp_path / "emb.errors.jsonl"
    lines = [json.loads(x) for x in s.errors_path.read_text().splitlines()]
    assert [x["path"] for x in lines] == [str(bad), str(tmp_path / "missing.hea")]
    assert lines[1]["error"] == "MissingFileError" and lines[1]["message"] == "no such file"
    # once the bad file is fixed, the rerun picks it up and the errors file goes away
    shutil.copy(TESTDATA / "ptbxl" / "00003_hr.hea", tmp_path / "bad.hea")
    shutil.copy(TESTDATA / "ptbxl" / "00003_hr.dat", tmp_path / "00003_hr.dat")
    s2 = run_embed([RECORDS[0], str(bad)], model, out)
    assert (s2.written, s2.failed, s2.skipped) == (1, 0, 1) and not s.errors_path.exists()


def test_shard_arguments_and_layout(monkeypatch, tmp_path):
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "a/b", "3"):
        with pytest.raises(ConfigError, match="shard"):
            parse_shard(bad)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert parse_shard(None) is None
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    assert parse_shard(None) == (2, 3)
    paths = [f"r{i:02d}" for i in range(10)][::-1]
    slices = [shard_slice(paths, (i, 3)) for i in range(3)]
    assert sum(slices, []) == sorted(paths) and [len(s) for s in slices] == [3, 3, 4]
    final, work, errors = output_layout(tmp_path / "emb.parquet", (1, 3))
    assert final == tmp_path / "emb.parquet" / "part-00001-of-00003.parquet"
    assert work.parent == final.parent and work.name.startswith("_")  # hidden from dataset readers
    assert errors == tmp_path / "emb.errors-00001-of-00003.jsonl"
    assert record_key("a/../b.hea") == record_key("b.hea")
