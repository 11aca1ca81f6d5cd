"""Zero-shot scoring: the paper's raw dot product, label text features and their disk cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import CONFORMANCE, TESTDATA, TINY_DIR

from ecgtext.errors import ConfigError, InputError
from ecgtext.inference.zeroshot import (
    ZeroShotResult,
    cached_label_features,
    label_cache_key,
    label_features,
    run_zeroshot,
    score,
)
from ecgtext.labels import load_label_set

EXPECTED = json.loads((CONFORMANCE / "tiny_records_expected.json").read_text())
RECORDS = [str(TESTDATA / r.split("/")[0] / (r.split("/")[-1] + ".hea")) for r in EXPECTED["records"]]
LABELS = load_label_set(str(CONFORMANCE / "labels_code15.json"))


@pytest.fixture(scope="module")
def full_model():
    from ecgtext.model.loading import load_model

    return load_model(TINY_DIR)


def test_score_formulas():
    g = torch.Generator().manual_seed(0)
    e, t = torch.randn(4, 8, generator=g), torch.randn(3, 8, generator=g)
    raw = (e.double() @ t.double().T).numpy()
    np.testing.assert_allclose(score(e, t, "raw"), raw, rtol=1e-6)
    cos = raw / np.outer(np.linalg.norm(e.double(), axis=1), np.linalg.norm(t.double(), axis=1))
    np.testing.assert_allclose(score(e, t, "cosine"), cos, rtol=1e-5)
    for temp in (1.0, 0.1):
        z = np.exp(raw / temp - (raw / temp).max(1, keepdims=True))
        np.testing.assert_allclose(score(e, t, "softmax", temp), z / z.sum(1, keepdims=True), rtol=1e-5)
    with pytest.raises(ConfigError, match="unknown score"):
        score(e, t, "dot")
    with pytest.raises(ConfigError, match="temperature"):
        score(e, t, "softmax", 0.0)


def test_label_features_match_the_reference_and_are_cached(full_model, monkeypatch, tmp_path):
    monkeypatch.setenv("ECGTEXT_CACHE", str(tmp_path / "cache"))  # empty cache for this test
    key = label_cache_key(TINY_DIR, LABELS)
    assert cached_label_features(key, LABELS) is None
    feats = label_features(full_model, LABELS)
    np.testing.assert_allclose(feats.numpy(), np.array(EXPECTED["label_text_embedding"]), atol=1e-4, rtol=0)
    cached = cached_label_features(key, LABELS)
    assert cached is not None and torch.equal(cached, feats)
    # a source (not a model) on a cache hit never builds the text tower
    assert torch.equal(label_features(str(TINY_DIR), LABELS), feats)


def test_cache_key_tracks_what_changes_the_features(tiny_copy):
    base = label_cache_key(TINY_DIR, LABELS)
    assert label_cache_key(tiny_copy, LABELS) == base  # same weights and tokenizer, other place
    assert label_cache_key(TINY_DIR, LABELS, lowercase=False) != base
    edited = dict(LABELS, AFIB=LABELS["AFIB"] + " extra")
    assert label_cache_key(TINY_DIR, edited) != base
    reordered = dict(reversed(list(LABELS.items())))
    assert label_cache_key(TINY_DIR, reordered) != base
    (tiny_copy / "tokenizer_config.json").write_text(
        (tiny_copy / "tokenizer_config.json").read_text().replace("}", ', "x_test": 1}', 1))
    assert label_cache_key(tiny_copy, LABELS) != base


def test_a_corrupt_cache_entry_is_recomputed(full_model):
    from ecgtext.fsutil import cache_dir

    labels = {"X": "a label only this test uses."}
    key = label_cache_key(TINY_DIR, labels)
    good = label_features(full_model, labels)
    (cache_dir("text-features") / f"{key}.npy").write_bytes(b"garbage")
    assert cached_label_features(key, labels) is None
    assert torch.equal(label_features(full_model, labels), good)


def test_run_zeroshot_reproduces_the_reference_scores():
    out = list(run_zeroshot(RECORDS, str(TINY_DIR), LABELS, batch_size=4))
    assert all(isinstance(r, ZeroShotResult) for r in out)
    assert [r.path for r in out] == RECORDS
    got = np.array([[r.scores[c] for c in EXPECTED["labels"]] for r in out])
    np.testing.assert_allclose(got, np.array(EXPECTED["zeroshot_scores"]), atol=1e-3, rtol=0)
    d = out[0].to_dict(top_k=2)
    assert list(d["scores"]) == list(LABELS)  # label-set order
    assert d["top"] == [c for c, _ in sorted(d["scores"].items(), key=lambda kv: -kv[1])[:2]]
    assert d["windows"] == 1 and d["missing_leads"] == [] and d["fs"] == 500.0


def test_per_window_scores_average_to_the_record_score(tmp_path):
    from ecgtext.io import ReadOptions, read_ecg

    ecg = read_ecg(TESTDATA / "physionet_misc" / "100.hea", ReadOptions(lead_map={"MLII": "II"}))
    path = str(tmp_path / "mitbih100_25s.npy")
    np.save(path, ecg.signal[:, :25 * 360])
    opts = ReadOptions(fs=360, leads="II,V5")
    windows = list(run_zeroshot([path], str(TINY_DIR), LABELS, opts, per_window=True))
    (record,) = list(run_zeroshot([path], str(TINY_DIR), LABELS, opts))
    assert [w.window for w in windows] == [0, 1, 2] and [w.start_s for w in windows] == [0.0, 10.0, 15.0]
    for code in LABELS:
        assert record.scores[code] == pytest.approx(np.mean([w.scores[code] for w in windows]), abs=1e-5)
    assert record.n_windows == 3 and "V1" in record.missing_leads


def test_softmax_scores_are_probabilities_and_failures_stream_in_place(tmp_path):
    bad = tmp_path / "bad.hea"
    bad.write_text("garbage\n")
    out = list(run_zeroshot([RECORDS[0], str(bad), RECORDS[1]], str(TINY_DIR), LABELS, how="softmax"))
    assert isinstance(out[1], InputError) and str(bad) in str(out[1])
    for r in (out[0], out[2]):
        assert sum(r.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert all(0.0 <= v <= 1.0 for v in r.scores.values())


def test_empty_label_set_is_refused():
    with pytest.raises(ConfigError, match="no labels"):
        label_features(str(TINY_DIR), {})
