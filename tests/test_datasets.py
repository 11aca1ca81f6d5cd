"""Dataset adapters: PTB-XL tasks, the CinC Challenge layout, CODE-test, generic manifests, splits."""

from __future__ import annotations

import ast
import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TESTDATA, shared_data
from probe_helpers import write_code15

from ecgtext.errors import DataError
from ecgtext.evaluation.datasets import load_dataset, read_split_files, stratified_split
from ecgtext.evaluation.datasets.snomed import EQUIVALENT_CODES, class_name, codes_for_abbreviation, scored_classes


# --------------------------------------------------------------------------- PTB-XL
def _expected_ptbxl(root: Path, task: str) -> dict[str, set[str]]:
    """Labels per record re-derived from the two CSVs (benchmark convention)."""
    db = pd.read_csv(root / "ptbxl_database.csv")
    st = pd.read_csv(root / "scp_statements.csv", index_col=0)
    out = {}
    for fname, codes in zip(db.filename_hr, db.scp_codes):
        labs = set()
        for code in ast.literal_eval(codes):  # every likelihood counts, 0.0 included
            if code not in st.index:
                continue
            row = st.loc[code]
            if task == "super" and row.diagnostic == 1:
                labs.add(row.diagnostic_class)
            elif task == "sub" and row.diagnostic == 1:
                labs.add(row.diagnostic_subclass)
            elif task == "form" and row.form == 1:
                labs.add(code)
            elif task == "rhythm" and row.rhythm == 1:
                labs.add(code)
        if labs:
            out[str(root / fname) + ".hea"] = labs
    return out


@pytest.mark.parametrize("task", ["super", "sub", "form", "rhythm"])
def test_ptbxl_tasks_follow_the_benchmark_convention(task):
    root = shared_data() / "ptbxl"
    ds = load_dataset("ptbxl", root, task)
    expected = _expected_ptbxl(root, task)
    assert set(ds.keys) == set(expected)  # records without a label for the task are dropped
    assert ds.classes == sorted(set().union(*expected.values()))  # classes present, no empty ones
    for key, row in zip(ds.keys, ds.Y):
        assert {c for c, y in zip(ds.classes, row) if y} == expected[key]
    db = pd.read_csv(root / "ptbxl_database.csv").set_index("filename_hr")
    for key, split in zip(ds.keys, ds.split):
        fold = db.loc[str(Path(key).relative_to(root))[:-4], "strat_fold"]
        assert split == ("test" if fold == 10 else "val" if fold == 9 else "train")
    assert ds.meta["records_without_label"] == 400 - len(ds)


def test_ptbxl_zero_likelihood_statements_count():
    # record 1: {'NORM': 100.0, 'LVOLT': 0.0, 'SR': 0.0}
    root = shared_data() / "ptbxl"
    rec = str(root / "records500/00000/00001_hr.hea")
    for task, code in (("form", "LVOLT"), ("rhythm", "SR")):
        ds = load_dataset("ptbxl", root, task)
        assert ds.Y[ds.keys.index(rec), ds.classes.index(code)] == 1


def test_ptbxl_100hz_keeps_records_present_and_counts_the_rest():
    root = shared_data() / "ptbxl"
    ds = load_dataset("ptbxl", root, "super", rate=100)
    assert all(k.endswith("_lr.hea") and Path(k).exists() for k in ds.keys)
    assert len(ds) + ds.meta["missing_files"] == len(load_dataset("ptbxl", root, "super"))


def test_ptbxl_missing_label_file_is_one_line_error(tmp_path):
    root = shared_data() / "ptbxl"
    shutil.copy(root / "scp_statements.csv", tmp_path)
    with pytest.raises(DataError) as e:
        load_dataset("ptbxl", tmp_path, "super")
    msg = str(e.value)
    assert "ptbxl_database.csv" in msg and "\n" not in msg


def test_ptbxl_unknown_task_and_missing_folder():
    with pytest.raises(DataError, match="super, sub, form, rhythm"):
        load_dataset("ptbxl", TESTDATA / "ptbxl", "diagnostic")
    with pytest.raises(DataError, match="not found"):
        load_dataset("ptbxl", TESTDATA / "no-such-folder", "super")


# --------------------------------------------------------------------------- CinC
def test_snomed_tables_ship_unchanged_with_their_licence():
    import ecgtext.evaluation.datasets as pkg

    here = Path(pkg.__file__).parent / "snomed"
    assert (here / "LICENSE").read_text().startswith("BSD 2-Clause")
    src = shared_data() / "label_maps"
    for name in ("dx_mapping_scored.csv", "dx_mapping_unscored.csv"):
        assert (here / name).read_bytes() == (src / name).read_bytes()


def test_equivalent_codes_match_the_challenge_weights_file():
    header = next(csv.reader(open(shared_data() / "label_maps" / "weights.csv")))[1:]
    pairs = {tuple(h.split("|")) for h in header if "|" in h}
    assert pairs == set(EQUIVALENT_CODES)
    assert len(scored_classes()) == len(header) == 26
    assert [class_name(c) for c in scored_classes()].count("CRBBB|RBBB") == 1


def test_cinc_scored_classes_merge_equivalent_codes():
    root = shared_data() / "cinc2021"
    ds = load_dataset("cinc", root)
    assert len(ds) == 25 and ds.task == "scored"
    dx = {}
    for h in sorted(root.glob("*.hea")):
        line = next(ln for ln in h.read_text().splitlines() if ln.startswith("# Dx:"))
        dx[str(h)] = set(line.split(":", 1)[1].strip().split(","))
    for key, row in zip(ds.keys, ds.Y):
        for c, y in zip(ds.classes, row):
            codes = set(ds.meta["class_codes"][c])
            assert y == int(bool(codes & dx[key])), (key, c)
    # 59118001 (RBBB) is scored as complete RBBB; 284470004 (PAC) and 427172004 (PVC) as their pairs
    assert {"CRBBB|RBBB", "PAC|SVPB", "PVC|VPB"} <= set(ds.classes)
    assert all(ds.Y[:, j].any() for j in range(len(ds.classes)))


def test_cinc_label_set_maps_by_challenge_abbreviation():
    ds = load_dataset("cinc", shared_data() / "cinc2021", classes="cpsc2018")
    assert set(ds.classes) <= {"NSR", "AF", "IAVB", "LBBB", "RBBB", "PAC", "VEB", "STD", "STE"}
    assert ds.meta["class_codes"]["RBBB"] == ["713427006", "59118001"]
    assert codes_for_abbreviation("VEB") == ("164884008",)
    with pytest.raises(DataError, match="not CinC 2021 abbreviation"):
        load_dataset("cinc", shared_data() / "cinc2021", classes="chapman-rhythm")


def test_cinc_split_is_seeded_and_stratified():
    root = shared_data() / "cinc2021"
    a = load_dataset("cinc", root, seed=0)
    assert list(a.split) == list(load_dataset("cinc", root, seed=0).split)
    assert list(a.split) != list(load_dataset("cinc", root, seed=1).split)
    assert abs(a.counts()["train"] - 0.7 * 25) <= 2 and a.counts()["test"] >= 4


def test_cinc_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="no WFDB headers"):
        load_dataset("cinc", tmp_path)
    for f in ("E07500.hea", "E07500.mat"):
        shutil.copy(TESTDATA / "cinc2021" / f, tmp_path)
    hea = tmp_path / "E07500.hea"
    hea.write_text("\n".join(ln for ln in hea.read_text().splitlines() if "Dx" not in ln) + "\n")
    with pytest.raises(DataError) as e:
        load_dataset("cinc", tmp_path)
    assert str(tmp_path) in str(e.value) and "Dx" in str(e.value)


def test_cinc_on_the_bundled_records():
    ds = load_dataset("cinc", TESTDATA / "cinc2021", classes="all")
    assert len(ds) == 2 and "SB" in ds.classes


# --------------------------------------------------------------------------- split files
def test_merl_style_split_files(tmp_path):
    root = shared_data() / "cinc2021"
    names = sorted(p.stem for p in root.glob("*.hea"))
    parts = {"train": names[:15], "val": names[15:19], "test": names[19:24]}  # one record left out
    files = []
    for split, recs in parts.items():
        f = tmp_path / f"icbeb_{split}.csv"  # MERL's columns: the record is named by 'filename'
        pd.DataFrame({"patient_id": range(len(recs)), "ecg_id": range(len(recs)), "filename": recs}).to_csv(f, index=False)
        files.append(str(f))
    ds = load_dataset("cinc", root, split_files=files)
    assert len(ds) == 24 and ds.meta["split_source"]["records_not_in_split_files"] == 1
    for key, split in zip(ds.keys, ds.split):
        assert Path(key).stem in parts[split]


def test_split_file_errors(tmp_path):
    bad = tmp_path / "mine.csv"
    pd.DataFrame({"path": ["a.hea"], "split": ["holdout"]}).to_csv(bad, index=False)
    with pytest.raises(DataError, match="unknown split"):
        read_split_files([bad])
    unnamed = tmp_path / "records.csv"
    pd.DataFrame({"path": ["a.hea"]}).to_csv(unnamed, index=False)
    with pytest.raises(DataError, match="no 'split' column"):
        read_split_files([unnamed])
    other = tmp_path / "x_test.csv"
    pd.DataFrame({"path": ["nothing_here.hea"]}).to_csv(other, index=False)
    with pytest.raises(DataError, match="none of the"):
        load_dataset("cinc", TESTDATA / "cinc2021", split_files=[other])


def test_stratified_split_spreads_every_class():
    rng = np.random.default_rng(0)
    Y = (rng.random((500, 6)) < np.array([0.02, 0.05, 0.1, 0.2, 0.4, 0.6])).astype(np.uint8)
    split = stratified_split(Y, seed=3)
    assert np.array_equal(split, stratified_split(Y, seed=3))
    for j in range(Y.shape[1]):
        pos = Y[:, j].sum()
        for s, fr in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
            assert abs(Y[split == s, j].sum() - fr * pos) <= 1.5, (j, s)
    assert abs((split == "train").sum() - 350) <= 2


# --------------------------------------------------------------------------- generic
def test_generic_label_column_and_split_column(tmp_path):
    recs = sorted((TESTDATA / "ptbxl").glob("*_hr.hea"))
    man = tmp_path / "labels.csv"
    pd.DataFrame({"path": [str(r) for r in recs], "labels": ["NORM", "NORM;SB", "MI", ""],
                  "split": ["train", "Validation", "test", "train"]}).to_csv(man, index=False)
    ds = load_dataset("generic", man)
    assert ds.classes == ["MI", "NORM", "SB"]
    assert ds.Y.tolist() == [[0, 1, 0], [0, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert list(ds.split) == ["train", "val", "test", "train"]


def test_generic_01_columns_relative_paths_and_seeded_split(tmp_path):
    # MERL's CSN files: '/chapman/WFDBRecords/..../JS.mat' relative to a data folder, 0/1 columns
    data = tmp_path / "downstream" / "chapman" / "WFDBRecords" / "20" / "200"
    data.mkdir(parents=True)
    for f in ("JS20000.hea", "JS20000.mat", "E07500.hea", "E07500.mat"):
        shutil.copy(TESTDATA / "cinc2021" / f, data)
    man = tmp_path / "chapman_all.csv"
    pd.DataFrame({"ecg_path": ["/chapman/WFDBRecords/20/200/JS20000.mat", "/chapman/WFDBRecords/20/200/E07500.mat"],
                  "age": [12, 12], "sex": [0, 1], "SB": [1, 0], "ST": [0, 1]}).to_csv(man, index=False)
    ds = load_dataset("generic", man, data_root=str(tmp_path / "downstream"))
    assert ds.classes == ["SB", "ST"]  # 'sex' is metadata, 'age' is not 0/1
    assert [Path(k).name for k in ds.keys] == ["JS20000.hea", "E07500.hea"]
    assert list(ds.split) == list(load_dataset("generic", man, data_root=str(tmp_path / "downstream")).split)
    ds2 = load_dataset("generic", man, data_root=str(tmp_path / "downstream" / "chapman"), label_columns="sex:ST")
    assert ds2.classes == ["sex", "SB", "ST"]


def test_generic_errors(tmp_path):
    man = tmp_path / "m.csv"
    pd.DataFrame({"file_name": ["x"], "labels": ["A"]}).to_csv(man, index=False)
    with pytest.raises(DataError, match="no path column"):
        load_dataset("generic", man)
    pd.DataFrame({"path": ["nowhere/x.hea"], "labels": ["A"]}).to_csv(man, index=False)
    with pytest.raises(DataError, match="give the folder the paths start from") as e:
        load_dataset("generic", man)
    assert e.value.option == "data_root"  # the CLI renders it as --data-root
    with pytest.raises(DataError, match="manifest file not found"):
        load_dataset("generic", tmp_path / "none.csv")


# --------------------------------------------------------------------------- CODE-test
def test_code15_folder_with_real_records(tmp_path):
    recs = [str(p) for p in sorted((TESTDATA / "ptbxl").glob("*_hr.hea"))]
    labels = np.array([[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 1, 0]])
    write_code15(tmp_path, recs, labels)
    ds = load_dataset("code15", tmp_path)
    assert ds.classes == ["1AVB", "RBBB", "LBBB", "SBRAD", "AFIB", "STACH"]
    assert np.array_equal(ds.Y, labels) and set(ds.split) == {"test"}
    assert ds.keys == [f"{tmp_path / 'data' / 'ecg_tracings.hdf5'}::{i}" for i in range(4)]
    from ecgtext.io import read_ecg

    ecg = read_ecg(ds.keys[1])
    assert ecg.fs == 400.0 and ecg.signal.shape == (12, 4000)  # padding stripped by the reader
    (tmp_path / "annotations" / "gold_standard.csv").unlink()
    with pytest.raises(DataError, match="gold_standard.csv"):
        load_dataset("code15", tmp_path)


def test_code15_rows_must_match_tracings(tmp_path):
    recs = [str(p) for p in sorted((TESTDATA / "ptbxl").glob("*_hr.hea"))][:2]
    write_code15(tmp_path, recs, np.zeros((2, 6)), nested=False)
    pd.DataFrame(np.zeros((3, 6), int), columns=["1dAVb", "RBBB", "LBBB", "SB", "AF", "ST"]).to_csv(
        tmp_path / "gold_standard.csv", index=False)
    with pytest.raises(DataError, match="3 label rows but"):
        load_dataset("code15", tmp_path)
