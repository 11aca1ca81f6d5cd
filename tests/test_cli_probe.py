"""``ecgtext probe`` end to end, in process through the real entry point (error mapping included)."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import TESTDATA, TINY_DIR, shared_data
from probe_helpers import cinc_paths, features_file, ptbxl_paths, write_code15

from ecgtext.cli import main


def run(monkeypatch, capsys, *args):
    """(exit code, stdout, stderr) of ``ecgtext probe ARGS``."""
    monkeypatch.setattr(sys, "argv", ["ecgtext", "probe", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


@pytest.fixture(scope="module")
def ptbxl_features(tmp_path_factory):
    shared_data()
    return features_file(tmp_path_factory, "ptbxl", ptbxl_paths())


@pytest.fixture(scope="module")
def cinc_features(tmp_path_factory):
    shared_data()
    return features_file(tmp_path_factory, "cinc", cinc_paths())


def test_fit_writes_result_splits_predictions_head_and_plot(monkeypatch, capsys, tmp_path, ptbxl_features):
    root = shared_data() / "ptbxl"
    code, out, err = run(monkeypatch, capsys, root, "-d", "ptbxl", "-t", "super", "--features", ptbxl_features,
                         "--fraction", "0.5", "--seeds", "0,1", "--epochs", "3", "--format", "json",
                         "-o", tmp_path / "run", "--save-head", tmp_path / "head", "--plot", tmp_path / "roc.png")
    assert code == 0, err
    rep = json.loads(out)
    assert rep == json.loads((tmp_path / "run" / "result.json").read_text())
    for key in ("dataset", "task", "fraction", "seeds", "classes", "n_train", "n_val", "n_test", "per_class",
                "macro_auroc", "macro_f1", "skipped_classes", "model", "split_file"):
        assert key in rep
    assert rep["seeds"] == [0, 1] and rep["macro_auroc_std"] is not None
    splits = pd.read_csv(rep["split_file"])
    assert len(splits) == rep["n_train_split"] + rep["n_val"] + rep["n_test"]
    assert splits["train_subset_seed0"].sum() == rep["n_train"]
    assert set(splits.loc[splits.train_subset_seed1 == 1, "split"]) == {"train"}
    first = splits.set_index("record").loc["00001_hr"]
    assert first["labels"] == "NORM" and first["split"] == "train"  # strat_fold 3
    preds = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert len(preds) == 2 * rep["n_test"] and set(preds.seed) == {0, 1}
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    head = json.loads((tmp_path / "head" / "head.json").read_text())
    assert head["classes"] == rep["classes"] and head["feature_dim"] == 64
    assert head["model"]["weights_sha256"] == rep["model"]["weights_sha256"]


def test_table_output_and_split_file_round_trip(monkeypatch, capsys, tmp_path, cinc_features):
    root = shared_data() / "cinc2021"
    code, out, err = run(monkeypatch, capsys, root, "-d", "cinc", "--features", cinc_features, "--split-seed", "3",
                         "--epochs", "2", "--missing-class", "keep", "-o", tmp_path / "a", "--format", "table")
    assert code == 0, err
    assert "linear probe cinc/scored" in out and "macro" in out and "skipped:" in out
    first = pd.read_csv(tmp_path / "a" / "splits.csv")
    code, out, err = run(monkeypatch, capsys, root, "-d", "cinc", "--features", cinc_features, "--epochs", "2",
                         "--missing-class", "keep", "--split-file", tmp_path / "a" / "splits.csv",
                         "-o", tmp_path / "b", "--format", "json")
    assert code == 0, err
    second = pd.read_csv(tmp_path / "b" / "splits.csv")
    assert first[["key", "split", "labels"]].equals(second[["key", "split", "labels"]])
    assert json.loads(out)["dataset_meta"]["split_source"]["files"] == [str(tmp_path / "a" / "splits.csv")]


def test_predict_prints_labels_per_record(monkeypatch, capsys, tmp_path, cinc_features):
    root = shared_data() / "cinc2021"
    code, _, err = run(monkeypatch, capsys, root, "-d", "cinc", "--features", cinc_features, "--epochs", "2",
                       "--missing-class", "keep", "-o", tmp_path / "run", "--save-head", tmp_path / "head",
                       "--model", TINY_DIR)
    assert code == 0, err
    recs = sorted(str(p) for p in (TESTDATA / "cinc2021").glob("*.hea"))
    code, out, err = run(monkeypatch, capsys, "--predict", "--head-dir", tmp_path / "head", "--format", "jsonl",
                         *recs, tmp_path / "absent.hea")
    assert code == 1  # some records failed; the others are still printed
    assert "absent.hea" in err and err.count("\n") == 1
    rows = [json.loads(line) for line in out.splitlines()]
    head = json.loads((tmp_path / "head" / "head.json").read_text())
    assert [r["path"] for r in rows] == recs
    for r in rows:
        expected = [c for c, t in zip(head["classes"], head["thresholds"])
                    if r["probabilities"][c] >= (0.5 if t is None else t)]
        assert r["labels"] == expected
    code, out, err = run(monkeypatch, capsys, "--predict", "--head-dir", tmp_path / "head", "--format", "csv", *recs)
    assert code == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert [t["path"] for t in table] == recs
    assert table[0]["labels"] == ";".join(rows[0]["labels"])


def test_zeroshot_on_a_code15_folder(monkeypatch, capsys, tmp_path):
    recs = [str(p) for p in sorted((TESTDATA / "ptbxl").glob("*_hr.hea"))]
    labels = np.zeros((4, 6), int)
    labels[[1, 3], 3] = 1
    labels[[0, 2], 5] = 1
    write_code15(tmp_path / "code", recs, labels)
    code, out, err = run(monkeypatch, capsys, tmp_path / "code", "-d", "code15", "--zeroshot", "-m", TINY_DIR,
                         "-o", tmp_path / "zs", "--format", "json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["mode"] == "zero-shot" and rep["label_set"] == "code15" and rep["n_test"] == 4
    assert set(rep["skipped_classes"]) == {"1AVB", "RBBB", "LBBB", "AFIB"}
    assert rep["macro_auroc"] is not None
    scores = pd.read_csv(tmp_path / "zs" / "scores.csv")
    assert list(scores["key"]) == [f"{tmp_path / 'code' / 'data' / 'ecg_tracings.hdf5'}::{i}" for i in range(4)]
    # probing a test-only dataset is a one-line error
    code, out, err = run(monkeypatch, capsys, tmp_path / "code", "-d", "code15", "-m", TINY_DIR)
    assert code == 6 and "no training split" in err and err.count("\n") == 1


def test_errors_are_one_line(monkeypatch, capsys, tmp_path, ptbxl_features):
    shutil.copy(shared_data() / "ptbxl" / "scp_statements.csv", tmp_path)
    code, _, err = run(monkeypatch, capsys, tmp_path, "-d", "ptbxl", "-t", "super", "--features", ptbxl_features)
    assert code == 6 and "ptbxl_database.csv" in err and err.startswith("error: ") and err.count("\n") == 1
    code, _, err = run(monkeypatch, capsys, shared_data() / "ptbxl", "-d", "ptbxl", "-t", "super",
                       "--features", ptbxl_features, "--fraction", "0.01")
    assert code == 6 and "no positive example" in err and "--fraction" in err and err.count("\n") == 1
    code, _, err = run(monkeypatch, capsys, "--predict", TESTDATA / "cinc2021" / "E07500.hea")
    assert code == 2 and "--head-dir" in err
    code, _, err = run(monkeypatch, capsys, shared_data() / "ptbxl")
    assert code == 2 and "--dataset" in err
    code, _, err = run(monkeypatch, capsys, shared_data() / "ptbxl", "-d", "ptbxl", "-t", "super",
                       "--features", tmp_path / "none.parquet")
    assert code == 6 and "none.parquet" in err
