"""``ecgtext export --format onnx``: graphs that ONNX Runtime runs with the model's numbers."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from conftest import CONFORMANCE, TESTDATA, TINY_DIR
from typer.testing import CliRunner

from ecgtext.cli import app

ort = pytest.importorskip("onnxruntime", reason="onnxruntime (ecgtext[onnx]) not installed")
pytest.importorskip("onnxscript", reason="onnxscript (ecgtext[onnx]) not installed")

EXPECTED = json.loads((CONFORMANCE / "tiny_records_expected.json").read_text())
RECORDS = [str(TESTDATA / r.split("/")[0] / (r.split("/")[-1] + ".hea")) for r in EXPECTED["records"]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export through the console command (the slow part: torch's exporter, ~20-60 s)."""
    out = tmp_path_factory.mktemp("onnx") / "dbeta-tiny-onnx"
    r = CliRunner().invoke(app, ["export", "--model", str(TINY_DIR), "--format", "onnx", "-o", str(out)])
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert "verified with ONNX Runtime" in r.stderr
    return out


@pytest.fixture(scope="module")
def model():
    import ecgtext

    return ecgtext.load_model(TINY_DIR)


def test_folder_holds_graphs_contract_and_tokenizer(exported):
    names = {p.name for p in exported.iterdir()}
    assert {"ecg_encoder.onnx", "text_encoder.onnx", "config.json", "onnx_export.json", "spiece.model"} <= names
    assert (exported / "config.json").read_bytes() == (TINY_DIR / "config.json").read_bytes()
    manifest = json.loads((exported / "onnx_export.json").read_text())
    assert manifest["graphs"]["ecg_encoder"]["inputs"]["ecg"]["shape"] == ["batch", 12, 5000]
    assert manifest["graphs"]["ecg_encoder"]["inputs"]["ecg"]["units"] == "mV"
    assert all(err <= 1e-4 for err in manifest["verification"]["max_abs_error"].values())


def test_onnx_runtime_reproduces_features_and_scores_of_real_records(exported, model):
    """Real records prepared by ecgtext, any batch size, padded texts: same numbers as torch."""
    from transformers import AutoTokenizer

    from ecgtext.io import read_ecg
    from ecgtext.preprocess import prepare

    x = np.concatenate([prepare(read_ecg(p), model.config.preprocess).windows for p in RECORDS[:5]])
    ecg_sess = ort.InferenceSession(str(exported / "ecg_encoder.onnx"), providers=["CPUExecutionProvider"])
    got = ecg_sess.run(None, {"ecg": x.astype(np.float32)})[0]
    with torch.inference_mode():
        ref = model.encode_ecg(torch.from_numpy(x)).numpy()
    assert got.shape == (len(x), model.embed_dim)
    assert np.abs(got - ref).max() <= 1e-4

    # a serving stack tokenises with the exported tokenizer files only
    tok = AutoTokenizer.from_pretrained(str(exported), local_files_only=True)
    texts = ["sinus rhythm", "atrial fibrillation", "left ventricular hypertrophy with strain pattern"]
    enc = tok(texts, padding=True, return_tensors="np")
    text_sess = ort.InferenceSession(str(exported / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    t_got = text_sess.run(None, {"input_ids": enc["input_ids"].astype(np.int64),
                                 "attention_mask": enc["attention_mask"].astype(np.int64)})[0]
    with torch.inference_mode():
        ids, mask = model.tokenize(texts)
        t_ref = model.encode_text(ids, mask).numpy()
    assert np.abs(t_got - t_ref).max() <= 1e-4
    assert np.array_equal(np.argmax(got @ t_got.T, 1), np.argmax(ref @ t_ref.T, 1))


def test_non_empty_output_is_refused_with_the_flag(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    r = CliRunner().invoke(app, ["export", "--model", str(TINY_DIR), "-o", str(tmp_path)])
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and "not empty" in r.stderr and "--overwrite" in r.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_missing_onnx_packages_are_one_line(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    r = CliRunner().invoke(app, ["export", "--model", str(TINY_DIR), "-o", str(tmp_path / "out")])
    assert r.exit_code == 2
    assert "onnxruntime" in r.stderr and "pip install 'ecgtext[onnx]'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()
