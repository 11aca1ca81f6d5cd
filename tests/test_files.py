"""Files and folders a team can share: umask modes, and folder replacement that never loses data.

Everything ecgtext writes is created with the process umask (0644 files,
0755 folders under umask 022), as ``open()``/``mkdir`` would; temporary files
renamed into place must not carry ``mkstemp``'s 0600 or ``mkdtemp``'s 0700.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import CONFORMANCE, TESTDATA, TINY_DIR
from hub_server import TINY_CHECKPOINT, hub  # noqa: F401  (hub: the fixture)

import ecgtext
from ecgtext.fsutil import atomic_dir, atomic_path, atomic_write_text, replace_dir

EXPECTED = json.loads((CONFORMANCE / "tiny_records_expected.json").read_text())
RECORDS = [str(TESTDATA / r.split("/")[0] / (r.split("/")[-1] + ".hea")) for r in EXPECTED["records"]]


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _assert_tree_modes(root: Path) -> None:
    """Every folder 0755 and every file 0644 below (and including) ``root``."""
    assert _mode(root) == (0o755 if root.is_dir() else 0o644), root
    if root.is_dir():
        for p in root.rglob("*"):
            assert _mode(p) == (0o755 if p.is_dir() else 0o644), f"{p}: {oct(_mode(p))}"


def test_atomic_file_and_folder_helpers_follow_the_umask(tmp_path, umask022):
    atomic_write_text(tmp_path / "a" / "b.json", "{}")
    with atomic_path(tmp_path / "c.bin") as tmp:
        tmp.write_bytes(b"x")
    with atomic_dir(tmp_path / "folder") as d:
        (d / "f.txt").write_text("1")
        (d / "sub").mkdir()
    for p in (tmp_path / "a", tmp_path / "a" / "b.json", tmp_path / "c.bin", tmp_path / "folder"):
        _assert_tree_modes(p)
    os.umask(0o077)  # a private umask is respected too
    atomic_write_text(tmp_path / "private.txt", "x")
    assert _mode(tmp_path / "private.txt") == 0o600


def test_embed_output_is_shareable(tmp_path, umask022):
    from ecgtext.inference.embed import run_embed

    out = tmp_path / "results" / "emb.parquet"
    s = run_embed([RECORDS[0], str(tmp_path / "missing.hea")], TINY_DIR, out)
    assert s.failed == 1
    _assert_tree_modes(tmp_path / "results")  # the folder, the Parquet file and the errors file
    sharded = tmp_path / "sharded"
    run_embed(RECORDS[:2], TINY_DIR, sharded, shard=(0, 2))
    _assert_tree_modes(sharded)


def test_saved_model_dir_is_shareable(tmp_path, umask022):
    from ecgtext.model.loading import save_model_dir

    model = ecgtext.load_model(TINY_DIR)
    out = save_model_dir(model, tmp_path / "models" / "mine")
    assert (out / "model.safetensors").is_file() and (out / "spiece.model").is_file()
    _assert_tree_modes(tmp_path / "models")


def test_downloaded_model_dir_is_shareable(hub, tmp_path, monkeypatch, umask022):  # noqa: F811
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"dbeta-tiny": {
        "repo": "Manhph2211/D-BETA", "preset": "dbeta-tiny", "tokenizer_repo": "google/flan-t5-base",
        "licence": "CC BY-NC 4.0", "licence_url": "https://creativecommons.org/licenses/by-nc/4.0/"}}))
    monkeypatch.setenv("ECGTEXT_REGISTRY", str(registry))
    hub.add("Manhph2211/D-BETA", {"dbeta_tiny.pt": TINY_CHECKPOINT})
    r = ecgtext.hub.download("dbeta-tiny")
    _assert_tree_modes(r.path)
    out = ecgtext.hub.download("dbeta-tiny", output=tmp_path / "team" / "dbeta-tiny")
    _assert_tree_modes(tmp_path / "team")
    assert out.path == tmp_path / "team" / "dbeta-tiny"


def test_training_checkpoints_and_final_model_are_shareable(tmp_path, umask022):
    import pandas as pd

    from ecgtext.pretrain import load_train_config, pretrain

    reports = {1: "sinusrhythmus periphere niederspannung", 2: "sinusbradykardie sonst normales ekg"}
    rows = [{"path": str(TESTDATA / "ptbxl" / f"0000{i}_hr.hea"), "report": r} for i, r in reports.items()]
    pd.DataFrame(rows).to_csv(tmp_path / "pairs.csv", index=False)
    cfg = load_train_config(None, dict(out=str(tmp_path / "run"), init="scratch", arch=str(TINY_DIR),
                                       tokenizer=str(TINY_DIR), num_workers=0, log_every=1, save_every=1,
                                       warmup_steps=0, lr=1e-3, seed=0, manifest=str(tmp_path / "pairs.csv"),
                                       batch_size=2, max_steps=1))
    pretrain(cfg)
    assert list((tmp_path / "run" / "checkpoints").iterdir())
    _assert_tree_modes(tmp_path / "run")  # checkpoints, metrics, the final model


def test_folder_replacement_keeps_the_previous_copy_when_the_new_write_fails(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "weights").write_text("half")
            raise RuntimeError("disk full")
    assert (target / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no leftovers


def test_folder_replacement_restores_the_previous_copy_when_the_swap_fails(tmp_path, monkeypatch):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    new = tmp_path / ".model.new"
    new.mkdir()
    (new / "weights").write_text("new")
    real = os.replace
    calls = []

    def second_rename_fails(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old aside worked; moving the new copy in fails
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", second_rename_fails)
    with pytest.raises(OSError):
        replace_dir(new, target)
    monkeypatch.setattr(os, "replace", real)
    assert (target / "weights").read_text() == "old" and (new / "weights").read_text() == "new"
    replace_dir(new, target)  # and when it works, the old copy is gone, the new one in place
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_saving_a_model_over_an_old_one_keeps_it_when_the_write_fails(tmp_path, monkeypatch):
    import safetensors.torch

    from ecgtext.model.loading import save_model_dir

    model = ecgtext.load_model(TINY_DIR)
    out = save_model_dir(model, tmp_path / "mine")
    before = (out / "model.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError):
        save_model_dir(model, out)
    assert (out / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
