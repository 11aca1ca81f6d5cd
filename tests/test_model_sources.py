"""Model sources are explicit, and building a model never touches other threads' torch."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
import torch
from hub_server import TINY_CHECKPOINT, TINY_DIR, hub  # noqa: F401  (hub: the fixture)

import ecgtext
from ecgtext.errors import ModelError
from ecgtext.hub.sources import is_path_source
from ecgtext.model.loading import build_model

REPO = "Manhph2211/D-BETA"


def test_what_counts_as_a_path(tmp_path):
    assert is_path_source("./dbeta-base") and is_path_source("/abs/model") and is_path_source("~/m")
    assert is_path_source("models/dbeta") and is_path_source(tmp_path)
    assert not is_path_source("dbeta-base") and not is_path_source("hf-hub:org/repo@v1")


def test_registered_name_means_the_registry_even_beside_a_folder_of_that_name(hub, tmp_path, monkeypatch):
    reg = tmp_path / "registry.json"
    reg.write_text(json.dumps({"dbeta-tiny": {"repo": REPO, "preset": "dbeta-tiny",
                                              "tokenizer_repo": "google/flan-t5-base"}}))
    monkeypatch.setenv("ECGTEXT_REGISTRY", str(reg))
    hub.add(REPO, {"dbeta_tiny.pt": TINY_CHECKPOINT})
    work = tmp_path / "work"
    shutil.copytree(TINY_DIR, work / "dbeta-tiny")
    monkeypatch.chdir(work)
    by_name = ecgtext.load_model("dbeta-tiny", components="ecg")
    assert by_name.model_dir.resolve() != (work / "dbeta-tiny").resolve()  # the registry's, from the cache
    assert hub.requests("GET", f"/api/models/{REPO}/revision/main")
    by_path = ecgtext.load_model("./dbeta-tiny", components="ecg")
    assert by_path.model_dir.resolve() == (work / "dbeta-tiny").resolve()


def test_unknown_name_beside_a_folder_says_how_to_load_the_folder(tmp_path, monkeypatch):
    shutil.copytree(TINY_DIR, tmp_path / "my-model")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as e:
        ecgtext.load_model("my-model")
    msg = str(e.value)
    assert "\n" not in msg and "not a registered model name" in msg and "./my-model" in msg
    with pytest.raises(ModelError, match="no such model directory"):
        ecgtext.load_model("./nope")


def test_loading_does_not_disturb_another_thread_initialising_modules():
    stop = threading.Event()
    errors: list[str] = []

    def initialise():
        # another thread building and initialising modules while models load: its weights must be random
        while not stop.is_set():
            w = torch.zeros(64, 64)
            torch.nn.init.kaiming_uniform_(w)
            t = torch.zeros(256)
            t.normal_()
            if w.abs().sum() == 0 or t.abs().sum() == 0:
                errors.append("an initialiser was skipped in a thread that did not ask for it")
                return

    th = threading.Thread(target=initialise)
    th.start()
    try:
        for _ in range(3):
            model = ecgtext.load_model(TINY_DIR, components="ecg")
    finally:
        stop.set()
        th.join()
    assert errors == []
    # the loaded weights are the checkpoint's, and random init still works here afterwards
    ref = ecgtext.load_model(TINY_DIR, components="ecg").state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    fresh = build_model("dbeta-tiny", "ecg")
    assert any(p.abs().sum() > 0 for p in fresh.parameters())
