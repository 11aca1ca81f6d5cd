"""Precision: what ``auto`` picks on which CPU, overrides, refusals, and the fidelity of
the bf16 / int8 CPU paths against fp32 (tiny model, real PTB-XL records)."""

from __future__ import annotations

import glob
import logging

import numpy as np
import pytest
import torch
from conftest import CONFORMANCE, TINY_DIR, shared_data

from ecgtext.errors import ConfigError
from ecgtext.inference.engine import embed_paths, load_ecg_model
from ecgtext.model import precision as P
from ecgtext.model.ecg_encoder import set_fast_paths
from ecgtext.model.fast_ecg import FastEcgPath

AVX2 = P.CpuFeatures("Test CPU", frozenset({"avx2", "fma"}), "AVX2")
SAPPHIRE = P.CpuFeatures("Test CPU AMX", frozenset({"avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                                                    "amx_tile", "amx_int8"}), "AVX512")
COOPER = P.CpuFeatures("Test CPU BF16", frozenset({"avx512f", "avx512_bf16", "avx512_vnni"}), "AVX512")
VNNI_ONLY = P.CpuFeatures("Test CPU VNNI", frozenset({"avx512f", "avx512_vnni"}), "AVX512")


@pytest.fixture
def cpu(monkeypatch):
    """Force the detected CPU: ``cpu(AVX2)``."""
    monkeypatch.delenv(P.ENV_VAR, raising=False)

    def force(features: P.CpuFeatures):
        monkeypatch.setattr(P, "cpu_features", lambda: features)

    return force


@pytest.fixture(scope="module")
def tiny():
    return load_ecg_model(TINY_DIR)


@pytest.fixture(scope="module")
def ecg():
    from safetensors.torch import load_file

    return load_file(str(CONFORMANCE / "tiny_tensors.safetensors"))["ecg"]


# ----------------------------------------------------------------- selection
@pytest.mark.parametrize("features, expected", [(AVX2, "fp32"), (VNNI_ONLY, "fp32"), (COOPER, "bf16"),
                                                (SAPPHIRE, "bf16")])
def test_auto_on_cpu_picks_bf16_only_with_native_bf16(cpu, features, expected):
    cpu(features)
    assert P.resolve_precision("auto", "cpu") == expected
    assert P.resolve_precision(None, "cpu") == expected
    assert P.resolve_precision("fp32", "cpu") == "fp32"


def test_auto_on_cuda_is_bf16_where_supported(monkeypatch, cpu):
    cpu(AVX2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert P.resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert P.resolve_precision("auto", "cuda") == "fp32"


def test_environment_overrides_auto_but_not_an_explicit_choice(monkeypatch, cpu):
    cpu(SAPPHIRE)
    monkeypatch.setenv(P.ENV_VAR, "fp32")
    assert P.resolve_precision("auto", "cpu") == "fp32"
    assert P.resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setenv(P.ENV_VAR, "BF16 ")
    cpu(AVX2)
    assert P.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setenv(P.ENV_VAR, "fp8")
    with pytest.raises(ConfigError, match="ECGTEXT_PRECISION='fp8' is not a precision"):
        P.resolve_precision("auto", "cpu")


def test_unknown_precision_is_a_one_line_error(cpu):
    cpu(AVX2)
    with pytest.raises(ConfigError, match="unknown precision 'fp8'") as info:
        P.resolve_precision("fp8", "cpu")
    assert "\n" not in str(info.value) and info.value.option == "precision"


def test_bf16_on_a_cpu_without_it_runs_with_a_warning(cpu, caplog):
    cpu(AVX2)
    P._warned_emulated.clear()
    with caplog.at_level(logging.WARNING, logger="ecgtext.model.precision"):
        assert P.resolve_precision("bf16", "cpu") == "bf16"
    assert "emulated" in caplog.text and "slower than fp32" in caplog.text


def test_int8_refusals_are_one_line(monkeypatch, cpu):
    cpu(AVX2)
    with pytest.raises(ConfigError, match="int8 precision needs int8 dot-product instructions"):
        P.resolve_precision("int8", "cpu")
    cpu(VNNI_ONLY)
    monkeypatch.setattr(P, "torchao_available", lambda: False)
    with pytest.raises(ConfigError, match=r"needs the optional package torchao: pip install 'ecgtext\[int8\]'"):
        P.resolve_precision("int8", "cpu")
    with pytest.raises(ConfigError, match="CPU only"):
        P.resolve_precision("int8", "cuda")


def test_provenance_records_the_resolved_precision(tiny, cpu):
    from ecgtext.inference.provenance import provenance_for

    cpu(SAPPHIRE)
    assert provenance_for(tiny, device="cpu", precision="auto").precision == "bf16"
    cpu(AVX2)
    assert provenance_for(tiny, device="cpu", precision="auto").precision == "fp32"


def test_detection_reads_this_machine():
    f = P.cpu_features()
    assert f.capability and f.model
    assert f.native_bf16 == any(x in f.flags for x in ("avx512_bf16", "amx_bf16")) or "bf16" in f.flags


# ----------------------------------------------------------------- the fast path computes the same thing
@torch.inference_mode()
def test_fp32_is_the_reference_model_bit_for_bit(tiny, ecg):
    fn = P.ecg_feature_fn(tiny, "fp32")
    assert torch.equal(fn(ecg), tiny.encode_ecg(ecg))


@pytest.mark.parametrize("layer_norm_first", [False, True])
@torch.inference_mode()
def test_fast_path_in_fp32_matches_the_reference(ecg, layer_norm_first):
    """GEMM tokenizer, fused q/k/v, class-token-only last layer: the same function."""
    from ecgtext.config import load_config
    from ecgtext.model.loading import build_model

    cfg = load_config(TINY_DIR)
    cfg.model.layer_norm_first = layer_norm_first
    torch.manual_seed(0)
    model = build_model(cfg, components="ecg").eval()
    ref = model.encode_ecg(ecg)
    assert (FastEcgPath(model, torch.float32)(ecg) - ref).abs().max() < 1e-5
    set_fast_paths(model, False)  # the reference implementation's plain conv1d
    assert (model.encode_ecg(ecg) - ref).abs().max() < 1e-6


@torch.inference_mode()
def test_bf16_form_casts_once_and_leaves_the_model_alone(tiny, ecg):
    fn = P.ecg_feature_fn(tiny, "bf16")
    assert fn is P.ecg_feature_fn(tiny, "bf16")  # built once per model
    assert all(p.dtype == torch.bfloat16 for p in fn.parameters())
    assert all(p.dtype == torch.float32 for p in tiny.parameters())
    out = fn(ecg)
    assert out.dtype == torch.float32 and out.shape == (2, tiny.embed_dim)


# ----------------------------------------------------------------- fidelity on real records
def _ptbxl(n: int) -> list[str]:
    root = shared_data() / "ptbxl" / "records500"
    return sorted(glob.glob(str(root / "*" / "*_hr.hea")))[:n]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.shared
def test_bf16_fidelity_gates_on_ptbxl(cpu):
    """Per-record cosine >= 0.999 and zero-shot top-1 agreement >= 98 % (bf16 vs fp32)."""
    import ecgtext
    from ecgtext.inference.zeroshot import compute_label_features
    from ecgtext.labels import load_label_set

    paths = _ptbxl(100)
    model = ecgtext.load_model(TINY_DIR)
    cpu(AVX2)
    fp32, keys, errs = embed_paths(paths, model, precision="fp32", batch_size=32)
    bf16, keys16, _ = embed_paths(paths, model, precision="bf16", batch_size=32)
    assert not errs and keys == keys16 and len(keys) == len(paths)
    cos = _cosines(fp32, bf16)
    assert cos.min() >= 0.999, f"worst record cosine {cos.min():.5f}"
    labels = {**load_label_set("ptbxl-super"), **load_label_set("ptbxl-rhythm")}
    text = compute_label_features(model, labels).numpy()
    agree = (np.argmax(fp32 @ text.T, 1) == np.argmax(bf16 @ text.T, 1)).mean()
    assert agree >= 0.98, f"top-1 agreement {agree:.3f}"


@pytest.mark.shared
def test_int8_fidelity_on_ptbxl(cpu):
    pytest.importorskip("torchao", reason="torchao (ecgtext[int8]) not installed")
    paths = _ptbxl(24)
    model = load_ecg_model(TINY_DIR)
    cpu(VNNI_ONLY)  # this test checks the numbers, not the speed, so any CPU will do
    fp32, _, _ = embed_paths(paths, model, precision="fp32")
    int8, _, errs = embed_paths(paths, model, precision="int8")
    assert not errs
    cos = _cosines(fp32, int8)
    assert cos.min() >= 0.99, f"worst record cosine {cos.min():.5f}"
