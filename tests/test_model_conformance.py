"""The model reproduces the reference implementation's outputs (tests/data/conformance)."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import CONFORMANCE, TINY_DIR
from safetensors.torch import load_file

import ecgtext
from ecgtext.model import losses as L
from ecgtext.model.dbeta import pretraining_losses

EMB_TOL = 1e-4  # embeddings and logits
SCORE_TOL = 1e-3  # scores and losses


@pytest.fixture(scope="module")
def io():
    return load_file(str(CONFORMANCE / "tiny_tensors.safetensors"))


def _pt_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pt") / "dbeta-tiny-pt"
    shutil.copytree(TINY_DIR, d, ignore=shutil.ignore_patterns("model.safetensors"))
    shutil.copy(CONFORMANCE / "dbeta-tiny-reference-checkpoint.pt", d / "checkpoint.pt")
    return d


@pytest.fixture(scope="module", params=["safetensors", "pt"])
def model(request, tmp_path_factory):
    src = TINY_DIR if request.param == "safetensors" else _pt_dir(tmp_path_factory)
    return ecgtext.load_model(src)


def _close(actual, expected, tol, what):
    err = (actual.float() - expected.float()).abs().max().item()
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol}"


@torch.no_grad()
def test_unimodal_features(model, io):
    _close(model.ecg_tokens(io["ecg"]), io["expected_ecg_tokens"], EMB_TOL, "ecg tokens")
    ecg = model.encode_ecg(io["ecg"])
    text = model.encode_text(io["text_ids"], io["text_attention_mask"])
    _close(ecg, io["expected_ecg_embedding"], EMB_TOL, "ecg embedding")
    _close(text, io["expected_text_embedding"], EMB_TOL, "text embedding")
    _close(ecg @ text.T, io["expected_similarity"], SCORE_TOL, "similarity")


@torch.no_grad()
def test_fused_forward_without_masking(model, io):
    out = model.fuse(io["ecg"], io["text_ids"], io["text_attention_mask"])
    _close(out.cls, io["expected_multimodal_cls"], EMB_TOL, "multimodal cls")
    _close(out.etm_logits, io["expected_etm_logits"], EMB_TOL, "etm logits")


@torch.no_grad()
def test_masked_forward(model, io):
    out = model.fuse(io["ecg"], io["text_ids"], io["text_attention_mask"], mask=True, noise=io["mem_noise"])
    assert torch.equal(out.mem_mask, io["expected_mem_mask"])
    assert int(out.mem_mask[0].sum()) == 312 - 78  # 75 % of 312 tokens removed
    _close(out.mlm_logits, io["expected_mlm_logits"], EMB_TOL, "mlm logits")
    _close(out.mem_logits, io["expected_mem_logits"], EMB_TOL, "mem logits")
    _close(out.etm_logits, io["expected_masked_etm_logits"], EMB_TOL, "masked etm logits")
    _close(out.uni_ecg, io["expected_masked_uni_ecg"], EMB_TOL, "masked unimodal ecg")


@pytest.mark.parametrize("variant", ["raw", "norm_pix"])
@torch.no_grad()
def test_losses(model, io, variant):
    parts, _ = pretraining_losses(model, io["ecg"], io["text_ids"], io["text_attention_mask"],
                                  io["mlm_labels"], io["is_aligned"], noise=io["mem_noise"],
                                  norm_pix=variant == "norm_pix")
    got = {"mlm": parts.mlm, "mem": parts.mem, "etm": parts.etm, "ets": parts.ets, "total": parts.total}
    for name, value in got.items():
        _close(value, io[f"expected_loss_{name}_{variant}"], SCORE_TOL, f"{name} loss ({variant})")


@torch.no_grad()
def test_lead_swap_changes_scores(model, io):
    """Guards the fixture's own claim: a swapped lead pair moves scores by > 1."""
    ecg = io["ecg"].clone()
    ecg[:, [4, 5]] = ecg[:, [5, 4]]
    text = model.encode_text(io["text_ids"], io["text_attention_mask"])
    moved = (model.encode_ecg(ecg) @ text.T - io["expected_similarity"]).abs().max().item()
    assert moved > 1e-2


@torch.no_grad()
def test_padding_is_masked_in_text_encoder(model, io):
    """Right-padding must not change a text's features (the reference forgets the mask)."""
    ids, mask = io["text_ids"][:1], io["text_attention_mask"][:1]
    padded_ids = torch.cat([ids, torch.zeros(1, 5, dtype=ids.dtype)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(1, 5, dtype=mask.dtype)], dim=1)
    _close(model.encode_text(padded_ids, padded_mask), io["expected_text_embedding"][:1], EMB_TOL,
           "padded text embedding")


@torch.no_grad()
def test_ecg_only_components_match_full_model(io):
    ecg_only = ecgtext.load_model(TINY_DIR, components="ecg")
    assert not hasattr(ecg_only, "language_encoder")
    _close(ecg_only.encode_ecg(io["ecg"]), io["expected_ecg_embedding"], EMB_TOL, "ecg-only embedding")
    with pytest.raises(ecgtext.EcgTextError, match="text tower"):
        ecg_only.encode_text(io["text_ids"], io["text_attention_mask"])


@torch.no_grad()
def test_tokenizer_matches_fixture_convention(model):
    ids, mask = model.tokenize(["Sinus Rhythm. Normal ECG"], lowercase=True)
    assert ids[0, -1].item() == 1  # EOS appended
    assert mask.sum().item() == ids.shape[1]
    direct = model.tokenizer("sinus rhythm. normal ecg")["input_ids"]
    assert ids[0].tolist() == direct


def test_ets_is_mean_sigmoid_loss():
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.5, 0.5], [1.0, -1.0]])
    logits = e @ t.T
    labels = torch.tensor([[1.0, -1.0], [-1.0, -1.0]])
    expected = -torch.nn.functional.logsigmoid(labels * logits).mean()
    assert torch.allclose(L.ets_loss(e, t, torch.tensor([1, 0])), expected)
