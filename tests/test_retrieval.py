"""Retrieval metrics equal an independent computation; the random-init baseline is
reproducible and differs from a (briefly) pretrained tiny model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_DIR, shared_data

from ecgtext.evaluation.baseline import compare_reports, random_model, retrieval_with_baseline
from ecgtext.evaluation.retrieval import (
    chance_recall,
    load_manifest_pairs,
    normalise_report,
    report_groups,
    retrieval_metrics,
)


def independent_ranks(Q: np.ndarray, C: np.ndarray, reports: list[str], cosine: bool = False,
                      query_reports: list[str] | None = None) -> list[int]:
    """Plain loops: 1 + incorrect candidates scoring >= the best correct one."""
    query_reports = reports if query_reports is None else query_reports
    def norm(t):
        return " ".join(t.lower().split()).strip(" .,;:!?-")

    out = []
    for i, q in enumerate(Q):
        scores = []
        for c in C:
            s = float(np.dot(q.astype(np.float64), c.astype(np.float64)))
            if cosine:
                s /= np.linalg.norm(q.astype(np.float64)) * np.linalg.norm(c.astype(np.float64))
            scores.append(s)
        correct = [norm(reports[j]) == norm(query_reports[i]) for j in range(len(C))]
        best = max(s for s, ok in zip(scores, correct) if ok)
        out.append(1 + sum(1 for s, ok in zip(scores, correct) if not ok and s >= best))
    return out


@pytest.mark.parametrize("how", ["raw", "cosine"])
def test_metrics_equal_independent_computation(how):
    rng = np.random.default_rng(3)
    base = ["Sinus rhythm. Normal ECG.", "sinus rhythm  normal ecg", "atrial fibrillation", "sinus bradycardia",
            "left bundle branch block", "Atrial fibrillation."]
    reports = [base[i % len(base)] if i < 12 else f"report number {i}" for i in range(40)]
    T = rng.normal(size=(40, 16)).astype(np.float32)
    E = (T + rng.normal(scale=1.5, size=T.shape)).astype(np.float32)
    m = retrieval_metrics(E, T, reports, how=how, block=7)
    def norm(t):
        return " ".join(t.lower().split()).strip(" .,;:!?-")

    first = sorted({norm(r): i for i, r in reversed(list(enumerate(reports)))}.values())  # one per report
    for direction, (Q, C, qr) in {"ecg_to_text": (E, T, reports),
                                  "text_to_ecg": (T[first], E, [reports[i] for i in first])}.items():
        ranks = np.array(independent_ranks(Q, C, reports, cosine=how == "cosine", query_reports=qr))
        got = m[direction]
        for k in (1, 5, 10):
            assert got[f"R@{k}"] == pytest.approx(np.mean(ranks <= k))
        assert got["median_rank"] == pytest.approx(np.median(ranks))
        assert got["mean_rank"] == pytest.approx(ranks.mean())
    assert m["n_candidates"] == 40 and m["n_distinct_reports"] == 28 + 5  # 28 unique + 5 template groups
    assert m["n_queries"] == {"ecg_to_text": 40, "text_to_ecg": 33}


def test_identical_normalised_reports_are_correct_and_ties_count_against():
    assert normalise_report("Sinus rhythm.  Normal ECG. ") == normalise_report("sinus rhythm. normal ecg")
    assert report_groups(["A b.", "a  B", "c"]).tolist() == [0, 0, 1]
    # a perfect model, and one whose features are all equal (no ranking at all)
    T = np.eye(6, dtype=np.float32)
    reports = ["x", "x", "y", "z", "w", "v"]
    perfect = retrieval_metrics(T, T, reports)
    assert perfect["ecg_to_text"]["R@1"] == 1.0 and perfect["text_to_ecg"]["mean_rank"] == 1.0
    flat = retrieval_metrics(np.ones((6, 3), np.float32), np.ones((6, 3), np.float32), reports)
    ranks = np.array([1 + 6 - 2, 1 + 6 - 2, 6, 6, 6, 6])  # every incorrect candidate ties the best correct
    assert flat["ecg_to_text"]["mean_rank"] == pytest.approx(ranks.mean())
    assert flat["ecg_to_text"]["R@1"] == 0.0


def test_chance_recall():
    assert chance_recall(np.ones(5), 100, 10) == pytest.approx(0.1)
    # two correct among 10, k = 1: 2/10; k = 9: all but the draws that put both last = 1
    assert chance_recall(np.array([2]), 10, 1) == pytest.approx(0.2)
    assert chance_recall(np.array([2]), 10, 9) == pytest.approx(1.0)


def test_random_model_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = random_model(TINY_DIR, seed=5, components="ecg")
    after = torch.rand(1)
    b = random_model(TINY_DIR, seed=5, components="ecg")
    c = random_model(TINY_DIR, seed=6, components="ecg")
    assert torch.equal(before, after)  # the caller's random stream is untouched
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    assert a.model_dir is None  # its features never pass for the pretrained model's


def test_compare_reports_per_class_and_macro():
    pre = {"mode": "linear-probe", "per_class": {"A": {"auroc": 0.9, "f1": 0.5}, "B": {"auroc": None, "f1": 0.1}},
           "macro_auroc": 0.8, "macro_f1": 0.3}
    rnd = {"mode": "linear-probe", "per_class": {"A": {"auroc": 0.6, "f1": 0.25}, "B": {"auroc": 0.5, "f1": 0.1}},
           "macro_auroc": 0.55, "macro_f1": 0.2}
    d = compare_reports(pre, rnd)
    assert d["per_class"]["A"] == {"auroc": pytest.approx(0.3), "f1": pytest.approx(0.25)}
    assert d["per_class"]["B"]["auroc"] is None and d["macro_auroc"] == pytest.approx(0.25)


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    """The tiny architecture (4-s window) pretrained for a few steps on real PTB-XL pairs."""
    from ecgtext.config import load_config
    from ecgtext.pretrain import load_train_config, pretrain

    root = shared_data() / "ptbxl"
    d = tmp_path_factory.mktemp("trained")
    cfg = load_config(TINY_DIR).to_dict()
    cfg["preprocess"]["window"] = 2000
    (d / "arch.json").write_text(json.dumps(cfg))
    train = load_train_config(None, dict(out=str(d / "run"), init="scratch", arch=str(d / "arch.json"),
                                          tokenizer=str(TINY_DIR), num_workers=0, log_every=1, save_every=1000,
                                          warmup_steps=0, lr=1e-3, seed=0, dataset="ptbxl", root=str(root),
                                          max_records=16, batch_size=8, max_steps=6, schedule="constant"))
    return pretrain(train)


@pytest.mark.shared
def test_random_baseline_same_seed_same_numbers_and_differs_from_pretrained(trained_tiny, tmp_path):
    root = shared_data() / "ptbxl"
    db = pd.read_csv(root / "ptbxl_database.csv").head(60)
    rows = [{"path": str(root / f"{f}.hea"), "report": r} for f, r in zip(db.filename_hr, db.report)
            if (root / f"{f}.hea").is_file()][:30]
    pd.DataFrame(rows).to_csv(tmp_path / "pairs.csv", index=False)
    pairs = load_manifest_pairs(tmp_path / "pairs.csv")
    assert len(pairs.keys) == 30 and set(pairs.split) == {"test"}
    a = retrieval_with_baseline(pairs, str(trained_tiny), seed=1)
    b = retrieval_with_baseline(pairs, str(trained_tiny), seed=1)
    assert a["random"]["ecg_to_text"] == b["random"]["ecg_to_text"]  # same seed -> same numbers
    assert a["random"]["text_to_ecg"] == b["random"]["text_to_ecg"]
    assert a["random"]["model"]["init"] == "random" and a["pretrained"]["model"]["weights_sha256"]
    assert a["pretrained"]["n_candidates"] == a["random"]["n_candidates"] == 30
    pre = [a["pretrained"][d]["mean_rank"] for d in ("ecg_to_text", "text_to_ecg")]
    rnd = [a["random"][d]["mean_rank"] for d in ("ecg_to_text", "text_to_ecg")]
    assert pre != rnd
    assert a["difference"]["ecg_to_text"]["mean_rank"] == pytest.approx(pre[0] - rnd[0])


@pytest.mark.shared
def test_cli_probe_task_retrieval_with_baseline(tmp_path):
    from typer.testing import CliRunner

    from ecgtext.cli import app

    root = shared_data() / "ptbxl"
    r = CliRunner().invoke(app, ["probe", str(root), "-d", "ptbxl", "-t", "retrieval", "-m", str(TINY_DIR),
                                 "--baseline", "random", "--baseline-seed", "2", "-o", str(tmp_path / "out"),
                                 "--format", "json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    pre, rnd = report["pretrained"], report["random"]
    assert report["baseline"] == "random" and report["seed"] == 2
    assert pre["mode"] == "retrieval" and pre["split"] == "test" and pre["n_candidates"] == rnd["n_candidates"] > 0
    for direction in ("ecg_to_text", "text_to_ecg"):
        assert set(pre[direction]) == {"R@1", "R@5", "R@10", "median_rank", "mean_rank"}
        assert report["difference"][direction]["R@10"] == pytest.approx(pre[direction]["R@10"] - rnd[direction]["R@10"])
    assert (tmp_path / "out" / "baseline.json").is_file()
    r = CliRunner().invoke(app, ["probe", str(root), "-d", "code15", "-t", "retrieval", "-m", str(TINY_DIR)])
    assert r.exit_code != 0 and "no reports" in r.output and "Traceback" not in r.output
