"""Dataset-level zero-shot evaluation with the tiny model, checked against scores computed here."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from conftest import TESTDATA, TINY_DIR, shared_data
from probe_helpers import cinc_paths, features_file, ptbxl_paths, tiny_ecg_model, write_code15
from sklearn.metrics import roc_auc_score

from ecgtext.errors import ConfigError, DataError
from ecgtext.evaluation.datasets import load_dataset
from ecgtext.evaluation.datasets.features import read_feature_parquet
from ecgtext.evaluation.zeroshot import evaluate_zeroshot, match_descriptions, zeroshot_dataset
from ecgtext.labels import load_label_set


@functools.lru_cache(maxsize=1)
def _full_tiny():
    from ecgtext.model.loading import load_model

    return load_model(TINY_DIR, components="all")


def _text_features(labels: dict[str, str]) -> np.ndarray:
    import torch

    with torch.inference_mode():  # one description at a time, lower-cased, as the reference does
        return np.concatenate([_full_tiny().encode_texts([t], lowercase=True).numpy() for t in labels.values()])


@pytest.fixture(scope="module")
def ptbxl_features(tmp_path_factory):
    shared_data()
    return features_file(tmp_path_factory, "ptbxl", ptbxl_paths())


def _check(report, ds, features, labels):
    """Recompute every AUROC from the features file and the tiny model's text tower."""
    table = read_feature_parquet(features)
    pos = {k: i for i, k in enumerate(table.keys)}
    te = ds.indices("test")
    X = table.X[[pos[ds.keys[i]] for i in te]]
    described = [c for c in ds.classes if c in labels]
    S = X @ _text_features({c: labels[c] for c in described}).T
    aucs = []
    for j, c in enumerate(described):
        y = ds.Y[te, ds.classes.index(c)]
        if y.min() == y.max():
            assert c in report["skipped_classes"]
            continue
        auc = roc_auc_score(y, S[:, j])
        assert report["per_class"][c]["auroc"] == pytest.approx(auc, abs=1e-6)
        aucs.append(auc)
    assert report["macro_auroc"] == pytest.approx(np.mean(aucs), abs=1e-6)


@pytest.mark.parametrize("task", ["super", "rhythm"])
def test_zeroshot_auroc_matches_independent_scores(task, ptbxl_features):
    ds = load_dataset("ptbxl", shared_data() / "ptbxl", task)
    labels = load_label_set(f"ptbxl-{task}")
    model = TINY_DIR if task == "super" else _full_tiny()  # a model directory, or a loaded model
    report = evaluate_zeroshot(ds, model, f"ptbxl-{task}", features=ptbxl_features)
    _check(report, ds, ptbxl_features, labels)
    assert report["mode"] == "zero-shot" and report["n_test"] == ds.counts()["test"]
    assert report["classes"] == ds.classes and report["label_set"] == f"ptbxl-{task}"
    assert report["model"]["weights_sha256"]


def test_classes_without_description_are_skipped_and_reported(ptbxl_features):
    ds = load_dataset("ptbxl", shared_data() / "ptbxl", "super")
    labels = dict(load_label_set("ptbxl-super"))
    del labels["HYP"]
    report = evaluate_zeroshot(ds, _full_tiny(), labels, features=ptbxl_features)
    assert "HYP" in report["skipped_classes"]
    assert report["skipped_reasons"]["HYP"].startswith("no description")
    assert report["per_class"]["HYP"]["auroc"] is None
    _check(report, ds, ptbxl_features, labels)
    with pytest.raises(DataError, match="none of the dataset's classes"):
        evaluate_zeroshot(ds, _full_tiny(), {"XYZ": "something else entirely"}, features=ptbxl_features)


def test_zeroshot_on_the_fly_equals_from_features(tmp_path_factory):
    """CinC with the cpsc2018 label set: computing features in the run gives the same report."""
    ds = load_dataset("cinc", shared_data() / "cinc2021", classes="cpsc2018")
    feats = features_file(tmp_path_factory, "cinc", cinc_paths())
    a = evaluate_zeroshot(ds, _full_tiny(), "cpsc2018", features=feats)
    b = evaluate_zeroshot(ds, tiny_ecg_model(), "cpsc2018")
    assert a["skipped_classes"] == b["skipped_classes"]
    for c in ds.classes:
        if a["per_class"][c]["auroc"] is None:
            assert b["per_class"][c]["auroc"] is None
        else:
            assert a["per_class"][c]["auroc"] == pytest.approx(b["per_class"][c]["auroc"], abs=1e-5)
    assert a["macro_auroc"] is not None


def test_challenge_pair_classes_find_their_description():
    assert match_descriptions(["CRBBB|RBBB", "NSR", "XYZ"], {"RBBB": "r", "NSR": "n"}) == {
        "CRBBB|RBBB": "RBBB", "NSR": "NSR"}


def test_code15_zero_shot_from_an_hdf5_of_real_records(tmp_path):
    recs = [str(p) for p in sorted((TESTDATA / "ptbxl").glob("*_hr.hea"))]
    recs += [str(p) for p in sorted((TESTDATA / "cinc2021").glob("*.hea"))]
    labels = np.zeros((len(recs), 6), int)
    labels[[1, 4], 3] = 1  # SB: 00002_hr is sinus bradycardia, E07500 has 426177001
    labels[[0, 2], 5] = 1
    write_code15(tmp_path, recs, labels)
    ds = load_dataset("code15", tmp_path)
    ev = zeroshot_dataset(ds, _full_tiny(), "code15")
    rep = ev.report
    assert ev.keys == ds.keys and rep["n_test"] == len(recs)
    text = _text_features(load_label_set("code15"))
    from ecgtext.inference.engine import embed_paths

    X, keys, errs = embed_paths(ds.keys, tiny_ecg_model())
    assert not errs and keys == ds.keys
    S = X @ text.T
    for j, c in enumerate(ds.classes):
        y = labels[:, j]
        if y.min() == y.max():
            assert c in rep["skipped_classes"]
        else:
            assert rep["per_class"][c]["auroc"] == pytest.approx(roc_auc_score(y, S[:, j]), abs=1e-5)
    from ecgtext.evaluation.probe import ProbeConfig, run_probe

    with pytest.raises(DataError, match="no training split"):
        run_probe(ds, ProbeConfig(), model_source=str(TINY_DIR))


def test_features_of_other_weights_are_refused(ptbxl_features, tiny_copy):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(tiny_copy / "model.safetensors"))  # fine-tuned weights: same names, new values
    k = next(k for k in sd if k.startswith("unimodal_language_pooler"))
    sd[k] = sd[k] + 1e-3
    save_file(sd, str(tiny_copy / "model.safetensors"))
    ds = load_dataset("ptbxl", shared_data() / "ptbxl", "super")
    with pytest.raises(ConfigError, match="same weights"):
        evaluate_zeroshot(ds, tiny_copy, "ptbxl-super", features=ptbxl_features)
