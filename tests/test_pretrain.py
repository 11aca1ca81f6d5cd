"""End-to-end pretraining on CPU with the tiny model: the loss falls, the output
loads, resume is exact, divergence stops cleanly, configs are strict."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import REPO, TESTDATA, TINY_DIR, shared_data

from ecgtext.errors import ConfigError
from ecgtext.pretrain import load_train_config, pretrain
from ecgtext.pretrain.checkpoint import list_checkpoints, read_training_checkpoint
from ecgtext.pretrain.schedule import lr_multiplier
from ecgtext.pretrain.trainer import NonFiniteLossError

PTB = TESTDATA / "ptbxl"
REPORTS = {1: "sinusrhythmus periphere niederspannung", 2: "sinusbradykardie sonst normales ekg",
           3: "sinusrhythmus normales ekg", 4: "sinusrhythmus normales ekg"}


@pytest.fixture
def manifest(tmp_path):
    """The four bundled PTB-XL records with their real reports."""
    rows = [{"path": str(PTB / f"{i:05d}_hr.hea"), "report": r} for i, r in REPORTS.items()]
    p = tmp_path / "pairs.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory):
    """The tiny architecture with a 4-s window (instead of 10 s): 2.5x cheaper steps on CPU."""
    from ecgtext.config import load_config

    cfg = load_config(TINY_DIR).to_dict()
    cfg["preprocess"]["window"] = 2000
    p = tmp_path_factory.mktemp("arch") / "config.json"
    p.write_text(json.dumps(cfg))
    return p


def tiny_cfg(out, arch=None, **kw):
    base = dict(out=str(out), init="scratch", arch=str(arch or TINY_DIR), tokenizer=str(TINY_DIR), num_workers=0,
                log_every=1, save_every=1000, warmup_steps=0, lr=1e-3, seed=0)
    base.update(kw)
    return load_train_config(None, base)


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_pretrain_tiny_on_ptbxl_loss_falls_and_model_loads(tmp_path, tiny_arch):
    root = shared_data() / "ptbxl"
    out = tmp_path / "run"
    # a fixed subset of 8 real pairs it can overfit
    result = pretrain(tiny_cfg(out, tiny_arch, dataset="ptbxl", root=str(root), max_records=8, batch_size=8,
                               max_steps=20, schedule="constant"))
    assert result == out / "model"
    recs = [r for r in metrics(out) if "loss" in r]
    assert [r["step"] for r in recs] == list(range(1, 21))
    for r in recs:
        for k in ("loss", "mlm", "mem", "etm", "ets", "grad_norm", "lr"):
            assert torch.isfinite(torch.tensor(r[k])), (k, r)
        assert 0 <= r["mlm_acc"] <= 1 and 0 <= r["etm_acc"] <= 1 and r["samples_per_s"] > 0
    first = sum(r["loss"] for r in recs[:5]) / 5
    last = sum(r["loss"] for r in recs[-5:]) / 5
    assert last < first - 0.4, (first, last)
    assert recs[-1]["mlm"] < recs[0]["mlm"]
    start = metrics(out)[0]
    assert start["event"] == "start" and start["pairs"] == 8 and start["n3s_encoder"] in ("tfidf", "minilm")

    import ecgtext
    from ecgtext.io import read_ecg
    from ecgtext.preprocess import prepare

    model = ecgtext.load_model(out / "model")
    x = torch.stack([torch.from_numpy(prepare(read_ecg(str(root / f"records500/00000/{i:05d}_hr.hea")),
                                              model.config.preprocess).windows[0]) for i in (1, 2, 3)])
    with torch.no_grad():
        feats = model.encode_ecg(x)
        text = model.encode_texts(["sinusrhythmus normales ecg"])
    assert feats.shape == (3, model.embed_dim) and torch.isfinite(feats).all()
    assert text.shape == (1, model.embed_dim)
    assert model.config.preprocess.window == 2000 and (out / "model" / "spiece.model").is_file()
    assert set(weights(out / "model")) == set(weights(TINY_DIR))


def test_continued_pretraining_from_a_model_dir(tmp_path, manifest, caplog):
    broken = tmp_path / "broken.hea"
    broken.write_text("not a WFDB header\n")
    rows = pd.read_csv(manifest).to_dict("records") + [{"path": str(broken), "report": "sinus rhythm"}]
    pd.DataFrame(rows).to_csv(manifest, index=False)
    out = tmp_path / "run"
    pretrain(tiny_cfg(out, init=str(TINY_DIR), tokenizer=None, manifest=str(manifest), batch_size=5,
                      max_steps=2))
    # the unreadable record is skipped (logged once, counted); the run goes on
    assert sum(r.getMessage().count("skipping record: " + str(broken)) for r in caplog.records) == 1
    recs = metrics(out)
    assert [r["skipped_records"] for r in recs if "loss" in r] == [1, 1]
    assert all(r["ets_logits"] == [4, 4] for r in recs if "loss" in r)
    trained, initial = weights(out / "model"), weights(TINY_DIR)
    assert set(trained) == set(initial)
    assert not torch.equal(trained["itm_head.fc.weight"], initial["itm_head.fc.weight"])
    assert (out / "model" / "tokenizer.json").is_file() or (out / "model" / "spiece.model").is_file()


def test_resume_gives_the_same_weights(tmp_path, manifest, tiny_arch):
    common = dict(arch=tiny_arch, manifest=str(manifest), batch_size=2, max_steps=6, warmup_steps=2, schedule="cosine")
    pretrain(tiny_cfg(tmp_path / "straight", **common))
    # stopped at step 3 (mid-epoch: 2 batches per epoch), resumed with DataLoader workers this time
    paused = pretrain(tiny_cfg(tmp_path / "paused", stop_at_step=3, **common))
    assert paused == tmp_path / "paused" / "checkpoints" and not (tmp_path / "paused" / "model").exists()
    ck = read_training_checkpoint(list_checkpoints(paused)[-1][1])  # torch.load(weights_only=True)
    assert ck["step"] == 3 and ck["epoch"] == 1 and ck["batch"] == 1
    assert isinstance(ck["rng"]["torch"], torch.Tensor) and "numpy" in ck["rng"]
    pretrain(tiny_cfg(tmp_path / "paused", resume=True, **dict(common, num_workers=2)))
    a, b = weights(tmp_path / "straight" / "model"), weights(tmp_path / "paused" / "model")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [r["step"] for r in metrics(tmp_path / "paused") if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    straight = [r["loss"] for r in metrics(tmp_path / "straight") if "loss" in r]
    resumed = [r["loss"] for r in metrics(tmp_path / "paused") if "loss" in r]
    assert straight == resumed


def test_non_finite_loss_stops_with_checkpoint_intact(tmp_path, manifest, tiny_arch):
    out = tmp_path / "run"
    common = dict(arch=tiny_arch, manifest=str(manifest), batch_size=2, max_steps=6, save_every=2)
    pretrain(tiny_cfg(out, stop_at_step=2, **common))
    (ckpt,) = [p for _, p in list_checkpoints(out / "checkpoints")]
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()

    # the CLI: resume with an absurd learning rate -> one line, exit code 7
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "ecgtext", "pretrain", "--out", str(out), "--resume", "--manifest", str(manifest),
           "--init", "scratch", "--arch", str(tiny_arch), "--tokenizer", str(TINY_DIR), "--batch-size", "2",
           "--max-steps", "6", "--save-every", "2", "--num-workers", "0", "--warmup-steps", "0", "--seed", "0",
           "--log-every", "1", "--lr", "1e30"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 7, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "non-finite" in errors[0] and str(ckpt) in errors[0] and "--lr" in errors[0]
    assert [p for _, p in list_checkpoints(out / "checkpoints")] == [ckpt]
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == digest
    assert not (out / "model").exists()
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp files left
    sd = read_training_checkpoint(ckpt)["model"]
    assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())

    with pytest.raises(NonFiniteLossError, match="non-finite"):
        pretrain(tiny_cfg(out, resume=True, **dict(common, lr=1e30)))


def test_refuses_to_mix_runs(tmp_path, manifest):
    out = tmp_path / "run"
    pretrain(tiny_cfg(out, manifest=str(manifest), batch_size=2, max_steps=2, stop_at_step=1, save_every=1))
    with pytest.raises(ConfigError, match="resume") as e:  # the CLI renders option "resume" as --resume
        pretrain(tiny_cfg(out, manifest=str(manifest), batch_size=2, max_steps=2))
    assert e.value.option == "resume"
    with pytest.raises(ConfigError, match="batch_size 2 -> 4"):
        pretrain(tiny_cfg(out, manifest=str(manifest), batch_size=4, max_steps=2, resume=True))


def test_config_is_strict(tmp_path):
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps({"lr": 1e-4, "batchsize": 8}))
    with pytest.raises(ConfigError, match="unknown key.*batchsize"):
        load_train_config(p)
    p.write_text(json.dumps({"lr": 1e-4, "precision": "fp8"}))
    with pytest.raises(ConfigError, match="precision"):
        load_train_config(p)
    p.write_text(json.dumps({"lr": 1e-4, "batch_size": 8}))
    cfg = load_train_config(p, {"batch_size": 16, "seed": None})
    assert cfg.lr == 1e-4 and cfg.batch_size == 16 and cfg.seed == 0
    defaults = load_train_config()
    assert (defaults.lr, defaults.betas, defaults.weight_decay) == (5e-5, [0.9, 0.98], 0.01)
    assert defaults.mlm_prob == 0.25 and defaults.n3s_k == 64 and defaults.n3s_fraction == 0.5


def test_scratch_needs_a_tokenizer(tmp_path, manifest):
    with pytest.raises(ConfigError, match="tokenizer") as e:  # the CLI renders option "tokenizer" as --tokenizer
        pretrain(tiny_cfg(tmp_path / "run", tokenizer=None, manifest=str(manifest), max_steps=1))
    assert e.value.option == "tokenizer"


def test_lr_schedule():
    total, warm = 100, 10
    lrs = [lr_multiplier(s, total, warm, "cosine", 0.1) for s in range(total)]
    assert lrs[0] < lrs[5] < lrs[9] < 1.0 and lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_multiplier(total, total, warm, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_multiplier(55, total, warm, "linear", 0.0) == pytest.approx(0.5)
    assert lr_multiplier(99, total, warm, "constant", 0.0) == 1.0


def test_cli_help_lists_the_options():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "ecgtext", "pretrain", "--help"], capture_output=True,
                          text=True, timeout=60, env=env, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr
    for flag in ("--manifest", "--dataset", "--init", "--resume", "--n3s-k", "--grad-accum", "--precision"):
        assert flag in proc.stdout


def test_ets_scale_and_bias_shape_the_contrastive_logits(tmp_path, manifest, tiny_arch):
    """--ets-scale/--ets-bias reach the loss: the first step's ETS equals the formula on the
    initial model's features, and the reference (1, none) stays the default."""
    from ecgtext.config import load_config
    from ecgtext.model.dbeta import pretraining_losses
    from ecgtext.model.loading import build_model
    from ecgtext.model.losses import ets_loss

    assert (load_train_config().ets_scale, load_train_config().ets_bias) == (1.0, None)
    with pytest.raises(ConfigError, match="ets_scale"):
        tiny_cfg(tmp_path / "bad", ets_scale=0)
    torch.manual_seed(0)
    model = build_model(load_config(tiny_arch), random_init=True)
    model.model_dir = TINY_DIR  # its tokenizer
    model.eval()  # no dropout: both passes see the same features
    ecg = torch.randn(3, 12, 2000) * 0.3
    ids, mask = model.tokenize(["sinusrhythmus normales ekg", "st-t abnormal", "schenkelblock"])
    labels = torch.full_like(ids, -100)
    aligned = torch.tensor([1, 0, 1])
    ref, out = pretraining_losses(model, ecg, ids, mask, labels, aligned, generator=torch.Generator().manual_seed(1))
    sig, out2 = pretraining_losses(model, ecg, ids, mask, labels, aligned, generator=torch.Generator().manual_seed(1),
                                   ets_scale=10.0, ets_bias=-10.0)
    assert torch.equal(out.uni_ecg, out2.uni_ecg) and torch.equal(out.uni_text, out2.uni_text)
    assert torch.allclose(ref.ets, ets_loss(out.uni_ecg, out.uni_text, aligned))
    logits = 10.0 * out.uni_ecg @ out.uni_text.T - 10.0
    target = -torch.ones_like(logits)
    target[range(3), range(3)] = 2 * aligned.float() - 1
    assert torch.allclose(sig.ets, -torch.nn.functional.logsigmoid(target * logits).mean())
    assert not torch.allclose(sig.ets, ref.ets)
    # a run records the values it used (metrics and checkpoint)
    out = tmp_path / "run"
    pretrain(tiny_cfg(out, arch=tiny_arch, manifest=str(manifest), max_steps=1, batch_size=4,
                      ets_scale=10.0, ets_bias=-10.0))
    start = metrics(out)[0]
    assert (start["ets_scale"], start["ets_bias"]) == (10.0, -10.0)
    ckpt = read_training_checkpoint(list_checkpoints(out / "checkpoints")[-1][1])
    assert (ckpt["config"]["ets_scale"], ckpt["config"]["ets_bias"]) == (10.0, -10.0)
