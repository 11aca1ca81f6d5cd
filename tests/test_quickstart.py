"""The README quickstart, as a new user runs it: first use downloads base-size weights from the Hub.

Slow (builds and serves a 1.4 GB base-size checkpoint): run with ``pytest -m slow``.
The local Hub (tests/hub_server.py) serves a *random* base-size checkpoint in the
published layout as ``Manhph2211/D-BETA`` and the tiny tokenizer as
``google/flan-t5-base`` (its 1,100 ids all fit the base vocabulary), so the
scores mean nothing; what is checked is the path a user takes: an empty
cache, a download through the real huggingface_hub client, the conversion, and
a score table in the terminal.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hub_server import hub  # noqa: F401  (the fixture)

REPO_ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def quickstart_command() -> list[str]:
    """The `ecgtext ...` step of the README's first quickstart command."""
    readme = REPO_ROOT / "README.md"
    if not readme.is_file():
        pytest.skip("README.md not written yet")
    text = readme.read_text()
    section = text.split("## Quickstart", 1)[-1]
    block = re.search(r"```(?:bash|sh|console)?\n(.*?)```", section, re.S)
    if block is None:
        pytest.skip("README has no quickstart command block yet")
    for line in block.group(1).splitlines():
        for step in line.lstrip("$ ").split("&&"):
            words = shlex.split(step)
            if words and words[0] == "ecgtext":
                return words
    pytest.skip("README's first quickstart block runs no `ecgtext` command yet")


def run_in_terminal(args: list[str], env: dict[str, str], timeout: int) -> tuple[int, str, str]:
    """Run with stdout on a pseudo-terminal (a person at a terminal gets the table)."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=env, cwd=REPO_ROOT)
    os.close(slave)
    chunks: list[bytes] = []

    def pump():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(10)
        os.close(master)
    return proc.returncode, ANSI.sub("", b"".join(chunks).decode(errors="replace")), err.decode(errors="replace")


@pytest.fixture
def base_checkpoint(tmp_path):
    """A random base-size checkpoint in the published layout: {"model": state_dict} with the unused
    ``ecg_encoder.mask_emb`` and the T5 embedding stored once under two names (as torch.save keeps it)."""
    import torch

    from ecgtext.model.loading import build_model

    torch.manual_seed(0)
    model = build_model("dbeta-base")
    sd = model.state_dict()
    sd["ecg_encoder.mask_emb"] = torch.empty(model.config.model.encoder_embed_dim).uniform_()
    path = tmp_path / "dbeta_base_random.pt"
    torch.save({"model": sd}, path)
    del model, sd
    return path


@pytest.mark.slow
def test_readme_quickstart_downloads_on_first_use_and_prints_a_score_table(request, hub, tmp_path):
    if not (REPO_ROOT / "ecgtext" / "cli" / "zeroshot.py").is_file():
        pytest.skip("the zeroshot command is not written yet")
    if not any((REPO_ROOT / "ecgtext" / "examples").rglob("*.hea")):
        pytest.skip("the example records (ecgtext/examples/) are not there yet")
    args = quickstart_command()
    record = next((a for a in args[1:] if a.endswith(".hea")), None)
    assert record is None or (REPO_ROOT / record).is_file(), f"the README names a missing record: {record}"

    ckpt = request.getfixturevalue("base_checkpoint")
    commit = hub.add("Manhph2211/D-BETA", {ckpt.name: ckpt, "README.md": b"# D-BETA\n"})
    exe = Path(sys.executable).with_name("ecgtext")
    args = ([str(exe)] if exe.exists() else [sys.executable, "-c", "from ecgtext.cli import main; main()"]) + args[1:]
    env = {**hub.env, "COLUMNS": "160", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("ECGTEXT_REGISTRY", None)  # the packaged registry: dbeta-base -> Manhph2211/D-BETA

    code, out, err = run_in_terminal(args, env, timeout=1500)
    assert code == 0, err[-3000:]
    assert "record" in out and "#1 (raw)" in out, out  # the table's header
    if record:
        assert Path(record).stem in out, out
    assert re.search(r"-?\d+\.\d+", out), out  # scores
    assert "not in the cache yet; downloading" in err and "CC BY-NC 4.0" in err
    model_dir = Path(env["ECGTEXT_CACHE"]) / "models" / "dbeta-base" / commit
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "spiece.model").is_file()
    assert hub.unknown == []
