"""Linear probing on frozen tiny-model features of real records; metrics checked with scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import TESTDATA, shared_data
from probe_helpers import cinc_paths, features_file, ptbxl_paths
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score

from ecgtext.errors import ConfigError, DataError
from ecgtext.evaluation.datasets import load_dataset
from ecgtext.evaluation.datasets.features import dataset_features, read_feature_parquet
from ecgtext.evaluation.probe import (
    LinearHead,
    ProbeConfig,
    draw_subset,
    fit_probe,
    predict_records,
    train_linear,
    train_sklearn,
)

EPOCHS = 8  # the protocol's 100 epochs are an option; a few show the behaviour


@pytest.fixture(scope="module")
def ptbxl_features(tmp_path_factory):
    shared_data()
    return features_file(tmp_path_factory, "ptbxl", ptbxl_paths())


@pytest.fixture(scope="module")
def cinc_features(tmp_path_factory):
    shared_data()
    return features_file(tmp_path_factory, "cinc", cinc_paths())


def _feats(task, features):
    return dataset_features(load_dataset("ptbxl", shared_data() / "ptbxl", task), features=features)


def _check_against_sklearn(result, feats):
    """Every reported test metric recomputed independently with scikit-learn."""
    ds = feats.dataset
    te, va = ds.indices("test"), ds.indices("val")
    rep = result.report
    assert result.test_keys == [ds.keys[i] for i in te]
    P = result.P_test[0]
    head = result.heads[0]
    np.testing.assert_allclose(P, head.predict_proba(feats.X[te]), rtol=1e-6)
    P_val = head.predict_proba(feats.X[va])
    aucs, f1s = [], []
    for j, c in enumerate(ds.classes):
        y = ds.Y[te, j]
        entry = rep["per_class"][c]
        assert entry["n_pos"] == int(y.sum())
        if y.min() == y.max():
            assert c in rep["skipped_classes"] and entry["auroc"] is None
            continue
        auc = roc_auc_score(y, P[:, j])
        assert entry["auroc"] == pytest.approx(auc, abs=1e-9)
        thr = entry["threshold"]
        if ds.Y[va, j].any():
            # the threshold is the validation F1 optimum
            f1_val = f1_score(ds.Y[va, j], P_val[:, j] >= thr)
            prec, rec, _ = precision_recall_curve(ds.Y[va, j], P_val[:, j])
            with np.errstate(invalid="ignore"):
                best = np.nanmax(2 * prec * rec / (prec + rec))
            assert f1_val == pytest.approx(best, abs=1e-9)
            f1 = f1_score(y, P[:, j] >= thr)
            assert entry["f1"] == pytest.approx(f1, abs=1e-9)
            f1s.append(f1)
        aucs.append(auc)
    assert rep["macro_auroc"] == pytest.approx(np.mean(aucs), abs=1e-9)
    if f1s:
        assert rep["macro_f1"] == pytest.approx(np.mean(f1s), abs=1e-9)


@pytest.mark.parametrize("task", ["super", "sub", "form", "rhythm"])
def test_probe_metrics_match_sklearn(task, ptbxl_features):
    feats = _feats(task, ptbxl_features)
    cfg = ProbeConfig(fraction=1.0, epochs=EPOCHS, missing_class="keep")
    result = fit_probe(feats, cfg)
    _check_against_sklearn(result, feats)
    rep = result.report
    assert rep["n_train"] == rep["n_train_split"] == feats.dataset.counts()["train"]
    assert rep["classes"] == feats.dataset.classes
    assert rep["model"]["name"] == "dbeta-tiny" and rep["model"]["weights_sha256"]
    run = rep["runs"][0]
    assert 1 <= run["best_epoch"] <= EPOCHS
    assert run["val_curve"][run["best_epoch"] - 1] == max(run["val_curve"])


def test_same_seed_same_result_and_seeds_aggregate(ptbxl_features):
    feats = _feats("super", ptbxl_features)
    cfg = ProbeConfig(fraction=0.5, seeds=(0, 1, 2), epochs=EPOCHS)
    a, b = fit_probe(feats, cfg), fit_probe(feats, cfg)
    assert a.report == b.report
    assert all(np.array_equal(x, y) for x, y in zip(a.P_test, b.P_test))
    runs = a.report["runs"]
    assert len({tuple(a.subsets[s]) for s in (0, 1, 2)}) == 3  # different seeds, different subsets
    macros = [r["macro_auroc"] for r in runs]
    assert a.report["macro_auroc"] == pytest.approx(np.mean(macros))
    assert a.report["macro_auroc_std"] == pytest.approx(np.std(macros, ddof=1))
    for c in feats.dataset.classes:
        vals = [r["per_class"][c]["auroc"] for r in runs]
        assert a.report["per_class"][c]["auroc"] == pytest.approx(np.mean(vals))


def test_subset_is_a_seeded_fraction_of_the_training_split(ptbxl_features):
    ds = _feats("super", ptbxl_features).dataset
    tr = ds.indices("train")
    rows, missing, draws = draw_subset(tr, ds.Y, ds.classes, 0.1, seed=4)
    assert len(rows) == math.floor(0.1 * len(tr)) and set(rows) <= set(tr)
    assert np.array_equal(rows, draw_subset(tr, ds.Y, ds.classes, 0.1, seed=4)[0])


def test_fraction_too_small_errors_redraws_or_keeps(ptbxl_features):
    feats = _feats("super", ptbxl_features)
    ds = feats.dataset
    with pytest.raises(DataError) as e:
        fit_probe(feats, ProbeConfig(fraction=0.02, epochs=2))
    msg = str(e.value)
    assert "no positive example" in msg and "larger training fraction" in msg and "\n" not in msg
    assert e.value.option == "fraction"  # the CLI renders it as --fraction
    missing = msg.split("class(es) ")[1].split(" have")[0].split(", ")
    rows = draw_subset(ds.indices("train"), ds.Y, ds.classes, 0.02, 0, "keep")[0]
    assert missing == [c for c, n in zip(ds.classes, ds.Y[rows].sum(axis=0)) if n == 0]
    # keep: trains anyway and says which classes had no positive
    kept = fit_probe(feats, ProbeConfig(fraction=0.02, epochs=2, missing_class="keep"))
    assert kept.report["runs"][0]["classes_without_train_positive"] == missing
    # redraw: draws again with the same generator until every class has a positive
    tr = ds.indices("train")
    rows, still, draws = draw_subset(tr, ds.Y, ds.classes, 0.03, 0, "redraw")
    assert not still and draws > 1 and ds.Y[rows].sum(axis=0).min() >= 1
    with pytest.raises(DataError, match="no draw in"):
        draw_subset(tr, ds.Y, ds.classes, 0.005, 0, "redraw")  # one record cannot hold five classes


def test_class_absent_from_the_training_split(ptbxl_features):
    feats = _feats("sub", ptbxl_features)  # 400 records: LAO/LAE occurs only outside folds 1-8
    ds = feats.dataset
    absent = [c for c, n in zip(ds.classes, ds.Y[ds.indices("train")].sum(axis=0)) if n == 0]
    assert absent
    with pytest.raises(DataError, match="training split") as e:
        fit_probe(feats, ProbeConfig(epochs=1, missing_class="redraw"))
    assert all(c in str(e.value) for c in absent)


def test_sklearn_head(ptbxl_features):
    feats = _feats("super", ptbxl_features)
    result = fit_probe(feats, ProbeConfig(head="sklearn", C_grid=(0.01, 1.0)))
    _check_against_sklearn(result, feats)
    run = result.report["runs"][0]
    assert run["val_curve"][str(run["C"])] == max(v for v in run["val_curve"].values())


def test_numpy_adam_is_torch_adam():
    """The head's training is torch.nn.Linear + Adam + BCEWithLogitsLoss, update for update."""
    import torch

    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 8)).astype(np.float32)
    Y = (rng.random((40, 3)) < 0.3).astype(np.float32)
    W, b, _ = train_linear(X, Y, X[:0], Y[:0], epochs=3, batch_size=16, seed=5, weight_decay=0.01)
    r = np.random.default_rng(5)  # replay: same init draws and epoch permutations
    bound = 1 / math.sqrt(8)
    lin = torch.nn.Linear(8, 3).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(r.uniform(-bound, bound, (3, 8))))
        lin.bias.copy_(torch.from_numpy(r.uniform(-bound, bound, 3)))
    opt = torch.optim.Adam(lin.parameters(), lr=1e-3, weight_decay=0.01)
    loss = torch.nn.BCEWithLogitsLoss()
    for _ in range(3):
        perm = r.permutation(40)
        for s in range(0, 40, 16):
            i = perm[s:s + 16]
            opt.zero_grad()
            loss(lin(torch.from_numpy(X[i]).double()), torch.from_numpy(Y[i]).double()).backward()
            opt.step()
    np.testing.assert_allclose(W, lin.weight.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(b, lin.bias.detach().numpy(), atol=1e-6)


def test_sklearn_head_folds_standardisation_into_raw_weights():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(loc=3.0, scale=[0.1, 5.0, 1.0], size=(200, 3))
    Y = (X[:, :1] > 3.0).astype(np.uint8)
    W, b, info = train_sklearn(X, Y, X, Y, C_grid=(1.0,))
    Z = (X - X.mean(0)) / X.std(0)
    ref = LogisticRegression(C=1.0, max_iter=1000).fit(Z, Y[:, 0])
    np.testing.assert_allclose(X @ W[0] + b[0], ref.decision_function(Z), atol=1e-4)


def test_cinc_probe_and_head_round_trip(cinc_features, tmp_path):
    ds = load_dataset("cinc", shared_data() / "cinc2021", seed=0)
    feats = dataset_features(ds, features=cinc_features)
    result = fit_probe(feats, ProbeConfig(epochs=EPOCHS, missing_class="keep"))
    _check_against_sklearn(result, feats)
    head = result.heads[0]
    head.save(tmp_path / "head")
    loaded = LinearHead.load(tmp_path / "head")
    assert loaded.classes == head.classes and loaded.dim == 64
    np.testing.assert_array_equal(loaded.predict_proba(feats.X), head.predict_proba(feats.X))
    # applied to records through their features: labels = probability >= validation threshold
    rows, errors, _ = predict_records(tmp_path / "head", [], features=cinc_features)
    assert not errors and len(rows) == 25
    table = read_feature_parquet(cinc_features)
    P = loaded.predict_proba(table.X)
    thr = np.where(np.isnan(loaded.thresholds), 0.5, loaded.thresholds)
    for r, p in zip(rows, P):
        assert r["labels"] == [c for c, pj, t in zip(loaded.classes, p, thr) if pj >= t]


def test_predict_runs_the_model_the_head_names(cinc_features, tmp_path, tiny_dir):
    ds = load_dataset("cinc", shared_data() / "cinc2021", seed=0)
    feats = dataset_features(ds, features=cinc_features)
    result = fit_probe(feats, ProbeConfig(epochs=2, missing_class="keep"), model={**feats.model, "source": str(tiny_dir)})
    result.heads[0].save(tmp_path / "head")
    recs = [str(p) for p in sorted((TESTDATA / "cinc2021").glob("*.hea"))]
    rows, errors, head = predict_records(tmp_path / "head", recs + [str(tmp_path / "missing.hea")])
    assert [r["path"] for r in rows] == recs and len(errors) == 1 and "missing.hea" in errors[0]
    table = read_feature_parquet(cinc_features)
    by_name = {k.rsplit("/", 1)[-1]: x for k, x in zip(table.keys, table.X)}
    for r in rows:  # same record, same features, same probabilities
        p = head.predict_proba(by_name[r["path"].rsplit("/", 1)[-1]][None])[0]
        assert [r["probabilities"][c] for c in head.classes] == pytest.approx(p.tolist(), abs=1e-5)


def test_probe_needs_train_and_val_splits(cinc_features):
    ds = load_dataset("cinc", shared_data() / "cinc2021", seed=0)
    feats = dataset_features(ds, features=cinc_features)
    no_val = feats.dataset.select(feats.dataset.split != "val")
    from dataclasses import replace

    with pytest.raises(DataError, match="no validation split"):
        fit_probe(replace(feats, dataset=no_val, X=feats.X[feats.dataset.split != "val"]), ProbeConfig(epochs=1))
    with pytest.raises(ConfigError, match="fraction"):
        ProbeConfig(fraction=0.0)


def test_features_from_another_folder_still_match(ptbxl_features, tmp_path, monkeypatch):
    """Keys written relative to another working directory match by their path below the dataset root."""
    import pyarrow.parquet as pq

    root = shared_data() / "ptbxl"
    t = pq.read_table(ptbxl_features)
    rel = [p.replace(str(root), "../elsewhere/ptb-xl") for p in t.column("path").to_pylist()]
    moved = tmp_path / "moved.parquet"
    pq.write_table(t.set_column(t.column_names.index("path"), "path", [rel]), moved)
    ds = load_dataset("ptbxl", root, "rhythm")
    a = dataset_features(ds, features=ptbxl_features)
    b = dataset_features(ds, features=moved)
    assert b.n_missing == 0 and np.array_equal(a.X, b.X)
