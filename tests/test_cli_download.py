"""`ecgtext download` as a user runs it: a real process, the real huggingface_hub client, a local Hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import TINY_CHECKPOINT, hub  # noqa: F401  (the fixture)

REPO = "Manhph2211/D-BETA"
CKPT = "dbeta_tiny.pt"


def ecgtext(args: list[str], env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("ecgtext")
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", "from ecgtext.cli import main; main()"]
    return subprocess.run(cmd + args, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(hub, tmp_path):
    """The subprocess environment: the local Hub, fresh caches, a tiny registry entry."""
    reg = tmp_path / "registry.json"
    reg.write_text(json.dumps({"dbeta-tiny": {
        "repo": REPO, "preset": "dbeta-tiny", "tokenizer_repo": "google/flan-t5-base",
        "licence": "CC BY-NC 4.0", "licence_url": "https://creativecommons.org/licenses/by-nc/4.0/"}}))
    return {**hub.env, "ECGTEXT_REGISTRY": str(reg)}


def test_download_prints_the_model_dir_then_is_a_cache_hit_with_the_hub_down(hub, env):
    commit = hub.add(REPO, {CKPT: TINY_CHECKPOINT})
    first = ecgtext(["download", "dbeta-tiny"], env)
    assert first.returncode == 0, first.stderr
    path = Path(first.stdout.strip())
    assert first.stdout.count("\n") == 1 and path.is_dir()  # `MODEL=$(ecgtext download)` works
    assert path == Path(env["ECGTEXT_CACHE"]) / "models" / "dbeta-tiny" / commit
    assert commit in first.stderr and CKPT in first.stderr
    assert "CC BY-NC 4.0" in first.stderr and "non-commercial" in first.stderr and "Apache-2.0" in first.stderr
    hub.stop()
    again = ecgtext(["download", "dbeta-tiny", "--format", "json"], env)
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert out["cached"] is True and Path(out["path"]) == path
    assert {k: out[k] for k in ("repo", "revision", "commit", "file", "licence")} == {
        "repo": REPO, "revision": "main", "commit": commit, "file": CKPT, "licence": "CC BY-NC 4.0"}
    assert len(out["sha256"]) == 64
    offline = ecgtext(["download", "dbeta-tiny"], {**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0 and Path(offline.stdout.strip()) == path


def test_offline_with_an_empty_cache_fails_with_one_line(env, tmp_path):
    env = {**env, "HF_HUB_OFFLINE": "1", "ECGTEXT_CACHE": str(tmp_path / "empty-cache")}
    r = ecgtext(["download", "dbeta-tiny"], env)
    assert r.returncode == 5  # HubError
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and "`ecgtext download dbeta-tiny` with network access" in lines[0]


def test_revision_and_output(hub, env, tmp_path):
    v1 = hub.add(REPO, {CKPT: TINY_CHECKPOINT, "NOTES.md": b"release 1\n"}, revision="v1")
    hub.add(REPO, {CKPT: TINY_CHECKPOINT})
    out = tmp_path / "my-model"
    r = ecgtext(["download", "dbeta-tiny", "--revision", "v1", "--output", str(out), "--format", "json"], env)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["revision"], info["commit"], Path(info["path"])) == ("v1", v1, out)
    assert json.loads((out / "config.json").read_text())["source"]["commit"] == v1
    r = ecgtext(["download", f"hf-hub:{REPO}@v1", "--revision", "v2"], env)
    assert r.returncode == 2 and "two revisions" in r.stderr


def test_ambiguous_checkpoints_and_missing_repos_are_one_line_errors(hub, env):
    hub.add(REPO, {"a.pt": TINY_CHECKPOINT, "b.pt": TINY_CHECKPOINT})
    r = ecgtext(["download", "dbeta-tiny"], env)
    assert r.returncode == 5 and len(r.stderr.strip().splitlines()) == 1
    assert "a.pt, b.pt" in r.stderr and "--file" in r.stderr
    r = ecgtext(["download", "hf-hub:nobody/nothing"], env)
    assert r.returncode == 5 and len(r.stderr.strip().splitlines()) == 1
    assert "repository not found" in r.stderr and "hf auth login" in r.stderr
    assert not (Path(env["ECGTEXT_CACHE"]) / "models").exists() or not any(
        (Path(env["ECGTEXT_CACHE"]) / "models").rglob("config.json"))


def test_help_lists_the_options():
    r = ecgtext(["download", "--help"], {**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0
    for opt in ("--revision", "--output", "--file", "--format", "--force"):
        assert opt in r.stdout
    assert "hf-hub:org/repo[@revision]" in r.stdout


def test_cli_and_hub_modules_import_no_heavy_libraries():
    code = ("import sys, ecgtext.hub, ecgtext.cli.download; "
            "print(sorted(m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
