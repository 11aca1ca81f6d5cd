"""Built-in zero-shot label sets: codes exactly as their datasets write them, clean errors."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import CONFORMANCE, shared_data

from ecgtext.errors import ConfigError, DataError
from ecgtext.labels import builtin_label_sets, load_label_set, parse_inline_labels

EXPECTED_SETS = {"code15", "ptbxl-super", "ptbxl-sub", "ptbxl-form", "ptbxl-rhythm", "cpsc2018",
                 "chapman-rhythm"}


def _scp_statements():
    with open(shared_data() / "ptbxl" / "scp_statements.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_all_promised_sets_ship():
    assert EXPECTED_SETS <= set(builtin_label_sets())


@pytest.mark.parametrize("name", sorted(EXPECTED_SETS))
def test_descriptions_are_single_clinical_sentences(name):
    labels = load_label_set(name)
    assert labels, name
    for code, text in labels.items():
        # "name: criteria." -- one sentence, stating what is seen on the ECG
        assert text.endswith(".") and text.count(". ") == 0, (code, text)
        assert ":" in text and len(text.split()) >= 8, (code, text)


def test_code15_is_the_conformance_label_set():
    # so `--labels code15` reproduces the golden zero-shot scores
    expected = json.loads((CONFORMANCE / "labels_code15.json").read_text())
    assert load_label_set("code15") == expected
    assert list(load_label_set("code15")) == ["1AVB", "RBBB", "LBBB", "SBRAD", "AFIB", "STACH"]


def test_ptbxl_sets_match_scp_statements():
    rows = _scp_statements()
    code = next(iter(rows[0]))  # the unnamed first column holds the SCP code
    sub = {r["diagnostic_subclass"] for r in rows if r["diagnostic_subclass"]}
    form = {r[code] for r in rows if r["form"] == "1.0"}
    rhythm = {r[code] for r in rows if r["rhythm"] == "1.0"}
    sup = {r["diagnostic_class"] for r in rows if r["diagnostic_class"]}
    assert set(load_label_set("ptbxl-sub")) == sub and len(sub) == 23
    assert set(load_label_set("ptbxl-form")) == form and len(form) == 19
    assert set(load_label_set("ptbxl-rhythm")) == rhythm and len(rhythm) == 12
    assert set(load_label_set("ptbxl-super")) == sup == {"NORM", "MI", "STTC", "CD", "HYP"}


def test_cpsc2018_uses_the_cinc2021_abbreviations_of_the_cpsc_classes():
    maps = shared_data() / "label_maps"
    in_cpsc = set()
    for name in ("dx_mapping_scored.csv", "dx_mapping_unscored.csv"):
        with open(maps / name, newline="") as f:
            in_cpsc |= {r["Abbreviation"] for r in csv.DictReader(f) if int(r["CPSC"]) > 0}
    # the nine CPSC 2018 classes are exactly the abbreviations with CPSC records
    assert set(load_label_set("cpsc2018")) == in_cpsc
    assert len(in_cpsc) == 9 and "VEB" in in_cpsc  # CPSC's "PVC" class is SNOMED 164884008 = VEB


def test_chapman_rhythm_covers_the_rhythms_in_diagnostics_csv():
    with open(shared_data() / "chapman" / "Diagnostics.csv", newline="") as f:
        rhythms = {r["Rhythm"] for r in csv.DictReader(f)}
    labels = load_label_set("chapman-rhythm")
    assert rhythms <= set(labels)
    assert "flutter" in labels["AF"] and "fibrillation" in labels["AFIB"]  # Chapman's AF is flutter
    assert len(labels) == 11


def test_a_label_file_keeps_its_order(tmp_path):
    p = tmp_path / "mine.json"
    p.write_text(json.dumps({"B": "second  thing\nwrapped.", "A": "first thing."}))
    assert list(load_label_set(str(p)).items()) == [("B", "second thing wrapped."), ("A", "first thing.")]


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "non-empty JSON object"),
    ("{}", "non-empty JSON object"),
    ('{"X": ""}', "non-empty description"),
    ('{"X": 3}', "non-empty description"),
])
def test_bad_label_files_are_data_errors(tmp_path, content, problem):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(DataError, match=problem) as info:
        load_label_set(str(p))
    assert str(p) in str(info.value)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_label_set(str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match="unknown label set 'ptbxl-everything'.*code15"):
        load_label_set("ptbxl-everything")


def test_inline_labels():
    assert parse_inline_labels(["AF=atrial fibrillation: no P waves.", "X = y=z "]) == {
        "AF": "atrial fibrillation: no P waves.", "X": "y=z"}
    for bad in ("noequals", "=text", "CODE="):
        with pytest.raises(ConfigError, match="CODE=description"):
            parse_inline_labels([bad])
