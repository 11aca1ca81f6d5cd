"""Architecture, checkpoint compatibility, strict loading and gradients."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import CONFORMANCE, TINY_DIR

import ecgtext
from ecgtext.config import load_preset, parse_conv_layers
from ecgtext.errors import CheckpointMismatchError, ConfigError, ModelError
from ecgtext.model.dbeta import pretraining_losses
from ecgtext.model.loading import build_model, save_model_dir


def _tsv_layout():
    rows = (CONFORMANCE / "dbeta_base_state_dict.tsv").read_text().splitlines()[1:]
    out = {}
    for row in rows:
        key, shape, dtype = row.split("\t")
        out[key] = (tuple(int(s) for s in shape.split("x")) if shape else (), dtype)
    return out


def test_base_preset_matches_published_state_dict_layout():
    expected = _tsv_layout()
    assert len(expected) == 645
    with torch.device("meta"):
        model = build_model("dbeta-base")
    got = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()}
    assert set(got) == set(expected), (sorted(set(got) - set(expected))[:5], sorted(set(expected) - set(got))[:5])
    assert got == expected


def test_base_preset_config_is_the_published_one():
    published = json.loads((CONFORMANCE / "dbeta_base_config.json").read_text())["model"]
    import dataclasses

    assert dataclasses.asdict(load_preset("dbeta-base").model) == published
    pre = load_preset("dbeta-base").preprocess
    # MIMIC-IV-ECG order, as the published weights saw it (conformance README)
    assert pre.leads == ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert (pre.sample_rate, pre.window, pre.units) == (500.0, 5000, "mV")


def test_published_only_config_gets_preprocessing_defaults(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(TINY_DIR, d)
    cfg = ecgtext.load_model(d, components="ecg").config
    assert cfg.preprocess.leads[:6] == ["I", "II", "III", "aVR", "aVL", "aVF"]
    assert cfg.preprocess.window == 5000


def test_unknown_config_keys_are_errors(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(TINY_DIR, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["encoder_layerz"] = 3
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="encoder_layerz"):
        ecgtext.load_model(d)


def test_conv_layer_spec_is_parsed_not_evaluated():
    assert parse_conv_layers("[(256, 2, 2)] * 4") == [(256, 2, 2)] * 4
    assert parse_conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 2") == [(512, 10, 5), (512, 3, 2), (512, 3, 2)]
    with pytest.raises(ConfigError):
        parse_conv_layers("__import__('os').system('true')")


def test_every_trainable_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = ecgtext.load_model(TINY_DIR)
    model.train()
    g = torch.Generator().manual_seed(0)
    ecg = torch.randn(3, 12, 5000, generator=g) * 0.3
    ids, mask = model.tokenize(["sinus rhythm", "atrial fibrillation with rapid ventricular response", "normal ecg"])
    labels = torch.full_like(ids, -100)
    labels[:, 0] = ids[:, 0]
    parts, _ = pretraining_losses(model, ecg, ids, mask, labels, torch.tensor([1, 0, 1]), generator=g)
    parts.total.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_mismatched_checkpoint_names_the_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    d = tmp_path / "m"
    shutil.copytree(TINY_DIR, d)
    sd = load_file(str(d / "model.safetensors"))
    sd.pop("itm_head.fc.bias")
    sd["something.extra"] = torch.zeros(3)
    sd["mlm_head.bias"] = torch.zeros(7)
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError) as err:
        ecgtext.load_model(d)
    msg = str(err.value)
    assert "itm_head.fc.bias" in msg and "something.extra" in msg and "mlm_head.bias" in msg
    assert "\n" not in msg


def test_published_mask_emb_is_tolerated(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(TINY_DIR, d, ignore=shutil.ignore_patterns("model.safetensors"))
    sd = torch.load(CONFORMANCE / "dbeta-tiny-reference-checkpoint.pt", weights_only=True)
    sd["model"]["ecg_encoder.mask_emb"] = torch.rand(64)
    torch.save(sd, d / "published.pt")
    ecgtext.load_model(d, components="ecg")


def test_no_weights_is_an_error_not_random_init(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(TINY_DIR, d, ignore=shutil.ignore_patterns("model.safetensors"))
    with pytest.raises(ModelError, match="no weights"):
        ecgtext.load_model(d)


def test_unsafe_pickle_is_refused(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(TINY_DIR, d, ignore=shutil.ignore_patterns("model.safetensors"))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": {"x": Evil()}}, d / "evil.pt")
    with pytest.raises(ModelError, match="cannot read weights"):
        ecgtext.load_model(d)


def test_save_and_reload_roundtrip(tmp_path):
    model = ecgtext.load_model(TINY_DIR)
    out = save_model_dir(model, tmp_path / "saved")
    again = ecgtext.load_model(out)
    x = torch.randn(1, 12, 5000)
    with torch.no_grad():
        assert torch.allclose(model.encode_ecg(x), again.encode_ecg(x), atol=1e-6)
    assert (out / "spiece.model").is_file()
