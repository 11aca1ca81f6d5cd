"""Pretraining data: readers (manifest, PTB-XL, MIMIC-IV-ECG), report normalisation,
the ECG dataset (crop, lead masking, failures), the sampler and MLM masking."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TESTDATA, TINY_DIR, shared_data

from ecgtext.config import load_config
from ecgtext.errors import DataError
from ecgtext.pretrain.data import (
    MlmMasker,
    PairDataset,
    ShardedBatchSampler,
    collate_ecgs,
    load_pairs,
    normalize_report,
    read_manifest,
    read_mimic_iv_ecg,
    read_ptbxl,
)

PTB = TESTDATA / "ptbxl"
# the real PTB-XL reports of ecg_id 1-4 (ptbxl_database.csv)
REPORTS = {1: "sinusrhythmus periphere niederspannung", 2: "sinusbradykardie sonst normales ekg",
           3: "sinusrhythmus normales ekg", 4: "sinusrhythmus normales ekg"}


@pytest.fixture(scope="module")
def tiny_pre():
    return load_config(TINY_DIR).preprocess


@pytest.fixture(scope="module")
def tokenizer():
    from ecgtext.model.tokenizer import load_tokenizer

    return load_tokenizer(TINY_DIR)


def write_manifest(tmp_path, rows, name="pairs.csv"):
    df = pd.DataFrame(rows)
    p = tmp_path / name
    if name.endswith(".parquet"):
        df.to_parquet(p)
    else:
        df.to_csv(p, index=False)
    return p


def ptb_rows(tmp_path, relative=True):
    out = []
    for i, rep in REPORTS.items():
        f = tmp_path / "ecg" / f"{i:05d}_hr"
        f.parent.mkdir(exist_ok=True)
        for ext in (".hea", ".dat"):
            shutil.copy(PTB / f"{i:05d}_hr{ext}", str(f) + ext)
        out.append({"file": f"ecg/{f.name}.hea" if relative else str(f) + ".hea", "text": rep, "rid": f"r{i}"})
    return out


# ------------------------------------------------------------------ reports
@pytest.mark.parametrize("raw, expected", [
    ("Sinusrhythmus normales EKG", "sinusrhythmus normales ecg"),
    ("*** Sinus rhythm  ***", "sinus rhythm"),
    ("=-Abnormal ECG=-", "abnormal ecg"),
    ("  Atrial fibrillation.\n Low QRS voltages  ", "atrial fibrillation. low qrs voltages"),
    ("Ruhe-EKG: normal , ", "ruhe-ecg: normal"),
    (" , ; ", ""),
    (float("nan"), ""),
    (None, ""),
])
def test_normalize_report(raw, expected):
    assert normalize_report(raw) == expected


# ------------------------------------------------------------------ readers
@pytest.mark.parametrize("name", ["pairs.csv", "pairs.parquet"])
def test_manifest_relative_paths_and_counts(tmp_path, name):
    rows = ptb_rows(tmp_path)
    rows.append({"file": "ecg/gone.hea", "text": "sinus rhythm", "rid": "gone"})  # file missing
    rows.append({"file": "ecg/00001_hr.hea", "text": " *** ", "rid": "empty"})  # empty report
    m = write_manifest(tmp_path, rows, name)
    ps = read_manifest(m, path_col="file", report_col="text", id_col="rid")
    assert [p.id for p in ps.pairs] == ["r1", "r2", "r3", "r4"]
    assert ps.pairs[1].report == "sinusbradykardie sonst normales ecg"
    assert all(p.path.startswith(str(tmp_path.resolve())) for p in ps.pairs)
    assert ps.n_empty == 1 and ps.n_missing == 1 and ps.missing[0].endswith("gone.hea")


def test_manifest_errors_are_one_line(tmp_path):
    m = write_manifest(tmp_path, ptb_rows(tmp_path))
    with pytest.raises(DataError) as e:
        read_manifest(m, path_col="path", report_col="text")
    assert "missing column(s) path" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="no such|not found"):
        read_manifest(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="manifest") as e:  # the CLI renders option "manifest" as --manifest
        load_pairs("manifest")
    assert e.value.option == "manifest"


def test_ptbxl_reader_on_shared_data():
    root = shared_data() / "ptbxl"
    ps = read_ptbxl(root, 500)
    assert len(ps.pairs) == 400 and ps.n_empty == 0 and ps.n_missing == 0
    assert ps.pairs[1].report == "sinusbradykardie sonst normales ecg"
    lr = read_ptbxl(root, 100)  # only records 1-50 exist at 100 Hz in the shared copy
    assert len(lr.pairs) == 50 and lr.n_missing == 350
    assert lr.pairs[0].path.endswith("records100/00000/00001_lr.hea")
    assert len(read_ptbxl(root, 500, max_records=7).pairs) == 7


def make_mimic(root, tmp_records):
    """A tiny MIMIC-IV-ECG-layout folder from real PTB-XL records: WFDB files written
    with the lead order MIMIC-IV-ECG uses (aVF before aVL) and its two tables."""
    import wfdb

    order = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
    rec_rows, mm_rows = [], []
    for k, i in enumerate(tmp_records):
        src = wfdb.rdrecord(str(PTB / f"{i:05d}_hr"))
        names = [n.replace("AV", "aV") for n in src.sig_name]
        sig = src.p_signal[:, [names.index(n) for n in order]]
        subject, study = 10000032 + k, 40689238 + k
        rel = f"files/p1000/p{subject}/s{study}"
        (root / rel).mkdir(parents=True)
        wfdb.wrsamp(str(study), fs=500, units=["mV"] * 12, sig_name=order, p_signal=sig, fmt=["16"] * 12,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(root / rel))
        rec_rows.append({"subject_id": subject, "study_id": study, "file_name": str(study),
                         "ecg_time": "2180-07-23 08:44:00", "path": f"{rel}/{study}"})
        reps = {f"report_{j}": None for j in range(18)}
        reps.update({"report_0": "Sinus rhythm", "report_1": f"  Possible anterior infarct {k} ",
                     "report_3": "Abnormal ECG"})  # report_2 empty: joined without it
        mm_rows.append({"subject_id": subject, "study_id": study, "cart_id": 6848296, **reps})
    # one study without machine measurements (no report): skipped and counted
    rec_rows.append({"subject_id": 1, "study_id": 1, "file_name": "1", "ecg_time": "", "path": rec_rows[0]["path"]})
    pd.DataFrame(rec_rows).to_csv(root / "record_list.csv", index=False)
    pd.DataFrame(mm_rows).to_csv(root / "machine_measurements.csv", index=False)


def test_mimic_iv_ecg_reader_reorders_leads_by_name(tmp_path, tiny_pre):
    root = tmp_path / "mimic"
    make_mimic(root, [1, 2])
    ps = read_mimic_iv_ecg(root)
    assert len(ps.pairs) == 2 and ps.n_empty == 1
    assert ps.pairs[0].report == "sinus rhythm possible anterior infarct 0 abnormal ecg"
    assert ps.pairs[1].id == "40689239"
    # the same window as the original PTB-XL record (aVL first there, aVF first here)
    mimic = PairDataset(ps.pairs, tiny_pre, crop="first", lead_masking=0.0)
    ptb = PairDataset(read_manifest(write_manifest(tmp_path, [
        {"path": str(PTB / "00001_hr.hea"), "report": "x"}])).pairs, tiny_pre, crop="first", lead_masking=0.0)
    a, b = mimic[(0, 0)]["ecg"], ptb[(0, 0)]["ecg"]
    assert a.shape == (12, tiny_pre.window)
    assert torch.allclose(a, b, atol=1e-3)  # WFDB re-quantisation at 1 µV
    assert tiny_pre.leads[4] == "aVL" and torch.allclose(a[4], b[4], atol=1e-3)
    with pytest.raises(DataError, match="record_list.csv"):
        read_mimic_iv_ecg(tmp_path)


# ------------------------------------------------------------------ dataset
def test_dataset_crop_lead_masking_and_failures(tmp_path, tiny_pre):
    rows = ptb_rows(tmp_path)
    bad = tmp_path / "ecg" / "broken.hea"
    bad.write_text("this is not a WFDB header\n")
    rows.append({"file": "ecg/broken.hea", "text": "sinus rhythm", "rid": "bad"})
    pairs = read_manifest(write_manifest(tmp_path, rows), path_col="file", report_col="text").pairs
    ds = PairDataset(pairs, tiny_pre, crop="random", lead_masking=0.5)
    items = [ds[(i, 1234 + i)] for i in range(5)]
    batch = collate_ecgs(items)
    assert batch["ecg"].shape == (4, 12, tiny_pre.window) and batch["ecg"].dtype == torch.float32
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert len(batch["failed"]) == 1 and batch["failed"][0][0] == 4 and "broken.hea" in batch["failed"][0][1]
    # same key -> same draw; other key -> other lead mask (keyed randomness)
    assert torch.equal(ds[(0, 7)]["ecg"], ds[(0, 7)]["ecg"])
    zeroed = [int((ds[(0, s)]["ecg"].abs().sum(1) == 0).sum()) for s in range(40)]
    assert 3 < np.mean(zeroed) < 9  # ~ 12 * 0.5 leads zeroed on average
    full = PairDataset(pairs, tiny_pre, crop="first", lead_masking=0.0)[(0, 0)]["ecg"]
    assert int((full.abs().sum(1) == 0).sum()) == 0


def test_random_crop_of_long_records(tmp_path, tiny_pre):
    from dataclasses import replace

    short = replace(tiny_pre, window=1000)  # a 2-s window: the 10-s record is longer
    pairs = read_manifest(write_manifest(tmp_path, ptb_rows(tmp_path)), path_col="file", report_col="text").pairs
    first = PairDataset(pairs, short, crop="first", lead_masking=0.0)
    rand = PairDataset(pairs, short, crop="random", lead_masking=0.0)
    a = first[(0, 1)]["ecg"]
    crops = [rand[(0, s)]["ecg"] for s in range(6)]
    assert all(c.shape == (12, 1000) for c in crops)
    assert any(not torch.equal(c, a) for c in crops)
    full = PairDataset(pairs, tiny_pre, crop="first", lead_masking=0.0)[(0, 0)]["ecg"]
    for c in crops:  # every crop is a real segment of the record
        start = int(np.argmin([(full[0, s:s + 1000] - c[0]).abs().sum() for s in range(0, 4001)]))
        assert torch.allclose(full[:, start:start + 1000], c, atol=1e-5)


# ------------------------------------------------------------------ sampler
def test_sampler_shards_deterministic_and_resumable():
    n, b = 23, 4
    s0, s1 = ShardedBatchSampler(n, b, 2, 0, seed=3), ShardedBatchSampler(n, b, 2, 1, seed=3)
    e0, e1 = s0.epoch(0), s1.epoch(0)
    assert len(e0) == len(e1) == len(s0) == 2  # 11 per rank -> 2 full batches
    idx0 = {i for batch in e0 for i, *_ in batch}
    idx1 = {i for batch in e1 for i, *_ in batch}
    assert not idx0 & idx1 and len(idx0) == len(idx1) == 8
    assert s0.epoch(0) == e0 and s0.epoch(1) != e0  # same seed+epoch, new order next epoch
    assert s0.epoch(0, start=1) == e0[1:]
    assert all(epoch == 0 and pos == j for j, batch in enumerate(e0) for _, _, epoch, pos in batch)
    stream = s0.run(0, 1)  # resumable endless stream: the rest of epoch 0, then epoch 1, ...
    assert [next(stream) for _ in range(3)] == e0[1:] + s0.epoch(1)[:2]
    assert ShardedBatchSampler(n, b, 2, 0, seed=4).epoch(0) != e0
    tiny = ShardedBatchSampler(3, 8, 1, 0)
    assert len(tiny) == 1 and len(tiny.epoch(0)[0]) == 3


# ---------------------------------------------------------------------- MLM
def test_mlm_masking_rules(tokenizer):
    texts = ["sinusrhythmus periphere niederspannung", "sinusbradykardie sonst normales ecg",
             "vorhofflimmern"]
    m = MlmMasker(tokenizer, 64, prob=0.25, strategy="mask")
    ids, attn, labels = m(texts, torch.Generator().manual_seed(0))
    clean = tokenizer(texts, padding=True, return_tensors="pt")["input_ids"]
    special = torch.tensor(tokenizer.all_special_ids)
    for row in range(len(texts)):
        ordinary = (attn[row].bool() & ~torch.isin(clean[row], special))
        n = int(ordinary.sum())
        chosen = labels[row] != -100
        assert int(chosen.sum()) == max(1, round(0.25 * n))
        assert not (chosen & ~ordinary).any()  # never EOS, pad or a special token
        assert torch.equal(labels[row][chosen], clean[row][chosen])
        assert (ids[row][chosen] == m.mask_id).all()
        assert torch.equal(ids[row][~chosen], clean[row][~chosen])
    assert m.mask_id == tokenizer.convert_tokens_to_ids("<extra_id_0>")
    again = m(texts, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((ids, attn, labels), again))


def test_mlm_bert_strategy_proportions(tokenizer):
    texts = ["sinusrhythmus periphere niederspannung sonst normales ecg linkstyp"] * 400
    m = MlmMasker(tokenizer, 64, prob=0.25, strategy="bert")
    ids, _, labels = m(texts, torch.Generator().manual_seed(1))
    chosen = labels != -100
    masked = (ids == m.mask_id) & chosen
    kept = (ids == labels) & chosen
    frac_mask, frac_kept = masked.sum() / chosen.sum(), kept.sum() / chosen.sum()
    assert 0.74 < frac_mask < 0.86 and 0.05 < frac_kept < 0.16
    assert not torch.isin(ids[chosen & ~masked & ~kept], torch.tensor(tokenizer.all_special_ids)).any()


def test_mlm_needs_a_mask_token(tokenizer):
    with pytest.raises(DataError, match="MLM mask"):
        MlmMasker(tokenizer, 64, mask_token="<no-such-token>")
