"""The Hub side, end to end: the real huggingface_hub client against a local Hub (tests/hub_server.py)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from hub_server import CONFORMANCE, TINY_CHECKPOINT, TINY_DIR, hub  # noqa: F401  (hub: the fixture)
from safetensors import safe_open
from safetensors.torch import load_file

import ecgtext
import ecgtext.hub
from ecgtext.errors import CheckpointMismatchError, ConfigError, HubError, ModelError

REPO = "Manhph2211/D-BETA"
CKPT = "dbeta_tiny.pt"  # a name we never assume: the code lists the repo and picks it
EMB_TOL = 1e-4


@pytest.fixture(scope="module")
def io():
    return load_file(str(CONFORMANCE / "tiny_tensors.safetensors"))


@pytest.fixture
def tiny_registry(tmp_path, monkeypatch):
    """A registry entry like dbeta-base but with the tiny architecture (via ECGTEXT_REGISTRY)."""
    p = tmp_path / "registry.json"
    p.write_text(json.dumps({"dbeta-tiny": {
        "repo": REPO, "preset": "dbeta-tiny", "tokenizer_repo": "google/flan-t5-base",
        "licence": "CC BY-NC 4.0", "licence_url": "https://creativecommons.org/licenses/by-nc/4.0/"}}))
    monkeypatch.setenv("ECGTEXT_REGISTRY", str(p))
    return p


def _sd():
    return torch.load(TINY_CHECKPOINT, map_location="cpu", weights_only=True)["model"]


def _save(tmp_path: Path, name: str, obj) -> Path:
    p = tmp_path / name
    torch.save(obj, p)
    return p


def _cache_models(name: str) -> Path:
    return Path(os.environ["ECGTEXT_CACHE"]) / "models" / name


def _assert_reproduces(model_dir: Path, io) -> None:
    model = ecgtext.load_model(model_dir, components="ecg")
    with torch.no_grad():
        err = (model.encode_ecg(io["ecg"]) - io["expected_ecg_embedding"]).abs().max().item()
    assert err <= EMB_TOL, f"ecg embedding off by {err:.3g}"


# ---------------------------------------------------------------- sources
def test_parse_sources(tiny_registry, monkeypatch):
    parse = ecgtext.hub.parse_source
    s = parse("hf-hub:org/repo@v1.0")
    assert (s.repo, s.revision, s.revision_given, s.name) == ("org/repo", "v1.0", True, "hf-hub--org--repo")
    s = parse("hf-hub:org/repo")
    assert (s.revision, s.revision_given, s.preset, s.tokenizer_repo) == ("main", False, None, None)
    assert parse("hf-hub:org/repo", revision="dev").revision == "dev"
    # a Hub repo the registry knows keeps the registry's architecture and licence;
    # ECGTEXT_REGISTRY's entries come last and win
    s = parse(f"hf-hub:{REPO}@abc")
    assert (s.preset, s.licence, s.tokenizer_repo) == ("dbeta-tiny", "CC BY-NC 4.0", "google/flan-t5-base")
    monkeypatch.delenv("ECGTEXT_REGISTRY")
    s = parse(f"hf-hub:{REPO}@abc")
    assert (s.preset, s.licence, s.revision) == ("dbeta-base", "CC BY-NC 4.0", "abc")
    monkeypatch.setenv("ECGTEXT_REGISTRY", str(tiny_registry))
    s = parse("dbeta-tiny", revision="v2")
    assert (s.repo, s.preset, s.revision) == (REPO, "dbeta-tiny", "v2")
    for bad in ("hf-hub:", "hf-hub:repo-without-org", "hf-hub:org/repo@", "hf-hub:a/b/c"):
        with pytest.raises(ConfigError):
            parse(bad)
    with pytest.raises(ConfigError, match="two revisions"):
        parse("hf-hub:org/repo@v1", revision="v2")
    with pytest.raises(ModelError, match="dbeta-base"):  # unknown names list the known ones
        parse("no-such-model")


def test_registry_is_data_and_rejects_unknown_keys(tmp_path, monkeypatch):
    base = ecgtext.hub.registry()["dbeta-base"]
    assert (base.repo, base.preset, base.tokenizer_repo) == (REPO, "dbeta-base", "google/flan-t5-base")
    assert base.licence == "CC BY-NC 4.0"
    p = tmp_path / "reg.json"
    p.write_text(json.dumps({"x": {"repo": "a/b", "colour": "red"}}))
    monkeypatch.setenv("ECGTEXT_REGISTRY", str(p))
    with pytest.raises(ConfigError, match="colour"):
        ecgtext.hub.registry()


# ---------------------------------------------------------------- download + load
def test_download_assembles_a_model_that_reproduces_the_reference(hub, tiny_registry, io):
    commit = hub.add(REPO, {CKPT: TINY_CHECKPOINT, "README.md": b"# D-BETA\n"})
    r = ecgtext.hub.download("dbeta-tiny")
    assert not r.cached
    assert r.path == _cache_models("dbeta-tiny") / commit
    assert (r.repo, r.revision, r.commit, r.file) == (REPO, "main", commit, CKPT)
    assert r.sha256 == hashlib.sha256(TINY_CHECKPOINT.read_bytes()).hexdigest()
    src = json.loads((r.path / "config.json").read_text())["source"]
    assert {k: src[k] for k in ("repo", "revision", "commit", "file", "sha256")} == {
        "repo": REPO, "revision": "main", "commit": commit, "file": CKPT, "sha256": r.sha256}
    assert src["tokenizer"]["commit"] == hub.commit("google/flan-t5-base")
    assert sorted(p.name for p in r.path.iterdir()) == sorted(
        ["config.json", "model.safetensors", "spiece.model", "tokenizer.json", "tokenizer_config.json",
         "special_tokens_map.json"])
    _assert_reproduces(r.path, io)
    # by name: resolved from the cache, no request at all
    n = len(hub.log)
    model = ecgtext.load_model("dbeta-tiny")
    assert model.model_dir == r.path and len(hub.log) == n
    assert model.tokenizer("sinus rhythm")["input_ids"][-1] == 1  # EOS: the tokenizer came along
    # the real client went through the model-info and resolve endpoints, nothing unknown
    assert hub.requests("GET", f"/api/models/{REPO}/revision/main")
    assert hub.requests("HEAD", f"/{REPO}/resolve/{commit}/{CKPT}")
    assert hub.unknown == []


def test_second_download_is_a_cache_hit_even_with_the_hub_down(hub, tiny_registry, io):
    hub.add(REPO, {CKPT: TINY_CHECKPOINT})
    first = ecgtext.hub.download("dbeta-tiny")
    mtime = (first.path / "model.safetensors").stat().st_mtime_ns
    again = ecgtext.hub.download("dbeta-tiny")  # Hub up: asks for the commit, finds it assembled
    assert again.cached and again.path == first.path
    hub.stop()
    down = ecgtext.hub.download("dbeta-tiny")  # Hub down: the cache answers
    assert down.cached and down.path == first.path and down.commit == first.commit
    assert (first.path / "model.safetensors").stat().st_mtime_ns == mtime  # never rewritten
    assert ecgtext.hub.resolve_model("dbeta-tiny") == first.path
    _assert_reproduces(ecgtext.hub.resolve_model("dbeta-tiny"), io)


def test_offline_with_a_populated_cache_works(hub, tiny_registry, monkeypatch, io):
    hub.add(REPO, {CKPT: TINY_CHECKPOINT})
    path = ecgtext.hub.download("dbeta-tiny").path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.log)
    assert ecgtext.hub.download("dbeta-tiny").cached
    model = ecgtext.load_model("dbeta-tiny", components="ecg")
    assert model.model_dir == path and len(hub.log) == n


def test_offline_with_an_empty_cache_says_how_to_fix_it(tiny_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("ECGTEXT_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError) as e:
        ecgtext.load_model("dbeta-tiny")
    msg = str(e.value)
    assert "\n" not in msg and "not in the cache" in msg and "offline" in msg
    # the library names no CLI flag; it says which option fixes it (the CLI renders --model)
    assert "`ecgtext download dbeta-tiny`" in msg and e.value.option == "model"


def test_unreachable_hub_with_an_empty_cache_says_how_to_fix_it(hub, tiny_registry):
    hub.stop()
    with pytest.raises(HubError) as e:
        ecgtext.hub.resolve_model("dbeta-tiny")
    msg = str(e.value)
    assert "\n" not in msg and "unreachable" in msg and "ecgtext download dbeta-tiny" in msg


def test_revision_is_recorded_and_a_commit_pins_without_network(hub, tiny_registry, tmp_path, io):
    sd = _sd()
    sd["class_embedding"] = sd["class_embedding"] + 1.0  # an older, different release
    old = hub.add(REPO, {CKPT: _save(tmp_path, "old.pt", {"model": sd})}, revision="v0")
    new = hub.add(REPO, {CKPT: TINY_CHECKPOINT}, revision="main")
    assert old != new
    r = ecgtext.hub.download("dbeta-tiny", revision="v0")
    assert (r.revision, r.commit, r.path.name) == ("v0", old, old)
    assert json.loads((r.path / "config.json").read_text())["source"]["revision"] == "v0"
    # hf-hub:org/repo@rev: its own cache entry, same commit
    h = ecgtext.hub.download(f"hf-hub:{REPO}@v0")
    assert (h.commit, h.path.parent.name) == (old, f"hf-hub--{REPO.replace('/', '--')}")
    m = ecgtext.hub.download("dbeta-tiny")
    assert m.commit == new and m.path != r.path
    _assert_reproduces(m.path, io)
    # a full commit sha is immutable: answered from the cache without asking the Hub
    hub.stop()
    assert ecgtext.hub.download("dbeta-tiny", revision=old).path == r.path
    assert ecgtext.hub.resolve_model(f"hf-hub:{REPO}@{old}") == h.path


def test_two_candidate_checkpoints_is_a_clear_error(hub, tiny_registry, io):
    hub.add(REPO, {"model_a.pt": TINY_CHECKPOINT, "model_b.pt": TINY_CHECKPOINT})
    with pytest.raises(HubError) as e:
        ecgtext.hub.download("dbeta-tiny")
    msg = str(e.value)
    # the library names no CLI flag; the CLI renders option "file" as --file
    assert "model_a.pt" in msg and "model_b.pt" in msg and e.value.option == "file"
    assert not _cache_models("dbeta-tiny").exists()
    r = ecgtext.hub.download("dbeta-tiny", file="model_b.pt")
    assert r.file == "model_b.pt"
    _assert_reproduces(r.path, io)


def test_mismatched_checkpoint_names_keys_and_leaves_nothing(hub, tiny_registry, tmp_path):
    sd = _sd()
    sd["ecg_encoder.not_a_layer.weight"] = sd.pop("multi_modal_ecg_proj.weight")
    hub.add(REPO, {CKPT: _save(tmp_path, "bad.pt", {"model": sd})})
    with pytest.raises(CheckpointMismatchError) as e:
        ecgtext.hub.download("dbeta-tiny")
    msg = str(e.value)
    assert "multi_modal_ecg_proj.weight" in msg and "ecg_encoder.not_a_layer.weight" in msg
    root = _cache_models("dbeta-tiny")
    assert not root.exists() or not any(root.rglob("*")), sorted(root.rglob("*"))
    with pytest.raises(CheckpointMismatchError):  # and loading by name does not fall back to anything
        ecgtext.load_model("dbeta-tiny")


class _Payload:
    """Unpickling this would create a directory: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_pickled_code_in_a_checkpoint_is_refused(hub, tiny_registry, tmp_path):
    marker = tmp_path / "code-ran"
    hub.add(REPO, {CKPT: _save(tmp_path, "evil.pt", {"model": _sd(), "args": _Payload(marker)})})
    with pytest.raises(ModelError) as e:
        ecgtext.hub.download("dbeta-tiny")
    assert f"{REPO}/{CKPT}" in str(e.value) and "cannot read weights" in str(e.value)
    assert not marker.exists()
    assert not (_cache_models("dbeta-tiny")).exists() or not any(_cache_models("dbeta-tiny").rglob("*"))


# ---------------------------------------------------------------- hf-hub: repos
def test_hf_hub_published_checkpoint_with_config(hub, tmp_path, io):
    """A repo with a published-format .pt and an ecgtext config.json, no tokenizer: the
    architecture comes from the config, the tokenizer from Flan-T5; the unused
    mask embedding is dropped and a tied T5 embedding is stored under both names."""
    sd = _sd()
    sd["ecg_encoder.mask_emb"] = torch.zeros(64).uniform_()
    sd["language_encoder.encoder.embed_tokens.weight"] = sd["language_encoder.shared.weight"]  # tied
    hub.add("someone/dbeta-tiny-pt", {"weights.pt": _save(tmp_path, "w.pt", {"model": sd}),
                                      "config.json": TINY_DIR / "config.json"}, tags=["license:apache-2.0"])
    r = ecgtext.hub.download("hf-hub:someone/dbeta-tiny-pt")
    assert (r.file, r.licence) == ("weights.pt", "apache-2.0")
    with safe_open(str(r.path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "ecg_encoder.mask_emb" not in keys
    assert {"language_encoder.shared.weight", "language_encoder.encoder.embed_tokens.weight"} <= keys
    assert json.loads((r.path / "config.json").read_text())["name"] == "hf-hub:someone/dbeta-tiny-pt"
    model = ecgtext.load_model("hf-hub:someone/dbeta-tiny-pt")
    assert model.model_dir == r.path
    _assert_reproduces(r.path, io)


def test_hf_hub_ready_model_dir_is_used_as_is(hub, io):
    files = {p.name: p for p in TINY_DIR.iterdir()}
    commit = hub.add("someone/dbeta-tiny", files)
    path = ecgtext.hub.resolve_model("hf-hub:someone/dbeta-tiny")
    assert path.name == commit
    assert (path / "model.safetensors").read_bytes() == (TINY_DIR / "model.safetensors").read_bytes()
    assert json.loads((path / "config.json").read_text())["source"]["commit"] == commit
    assert not hub.requests(contains="google/flan-t5-base/resolve")  # the repo brought its tokenizer
    _assert_reproduces(path, io)


# ---------------------------------------------------------------- Hub failures: one line each
def test_hub_failures_are_one_line_hub_errors(hub, monkeypatch):
    files = {p.name: p for p in TINY_DIR.iterdir()}
    hub.add("gated/model", files, gated=True)
    hub.add("private/model", files, token="hf_secret")
    hub.add("no/tokenizer", {"weights.pt": TINY_CHECKPOINT, "config.json": TINY_DIR / "config.json"})
    hub.add("google/flan-t5-base", {"README.md": b"moved\n"}, revision="empty")

    def err(source, **kw) -> str:
        with pytest.raises(HubError) as e:
            ecgtext.hub.download(source, **kw)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "repository not found" in err("hf-hub:nobody/nothing")
    assert "no such revision" in err("hf-hub:gated/model@nope")
    msg = err("hf-hub:gated/model")
    assert "gated" in msg and "HF_TOKEN" in msg and "hf auth login" in msg
    msg = err("hf-hub:private/model")
    assert "HF_TOKEN" in msg and "hf auth login" in msg
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    msg = err("hf-hub:private/model")
    assert "401" in msg and "HF_TOKEN" in msg
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert ecgtext.hub.download("hf-hub:private/model").path.is_dir()
    assert "no file 'x.pt'" in err("hf-hub:no/tokenizer", file="x.pt")
    # the tokenizer repo is asked only for files it lists
    monkeypatch.setenv("ECGTEXT_REGISTRY", str(_registry(hub, "no/tokenizer", tokenizer_revision="empty")))
    assert "no tokenizer files" in err("t")


def _registry(hub, repo: str, **extra) -> Path:
    p = Path(hub.env["ECGTEXT_CACHE"]).parent / "reg-extra.json"
    p.write_text(json.dumps({"t": {"repo": repo, "preset": "dbeta-tiny", **extra}}))
    return p


def test_output_dir(hub, tiny_registry, tmp_path, io):
    commit = hub.add(REPO, {CKPT: TINY_CHECKPOINT})
    out = tmp_path / "models" / "tiny"
    r = ecgtext.hub.download("dbeta-tiny", output=out)
    assert r.path == out and r.commit == commit and not r.cached
    assert not _cache_models("dbeta-tiny").exists()  # put there, not in the cache
    _assert_reproduces(out, io)
    assert ecgtext.hub.download("dbeta-tiny", output=out).cached  # same commit: no-op
    other = tmp_path / "occupied"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="force the download") as e:  # the CLI renders option "force" as --force
        ecgtext.hub.download("dbeta-tiny", output=other)
    assert e.value.option == "force"
    assert (other / "notes.txt").read_text() == "mine"
    assert not [p for p in other.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
