"""Distributed pretraining on CPU (torchrun, gloo): the contrastive loss sees the
global batch, its gradient matches a single-process run, and ranks end identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch
from conftest import REPO, TESTDATA, TINY_DIR

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")

PTB = TESTDATA / "ptbxl"
REPORTS = {1: "sinusrhythmus periphere niederspannung", 2: "sinusbradykardie sonst normales ekg",
           3: "sinusrhythmus normales ekg", 4: "sinusrhythmus normales ekg"}


def torchrun(args: list[str], tmp_path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(tmp_path))


def test_torchrun_two_processes(tmp_path):
    rows = [{"path": str(PTB / f"{i:05d}_hr.hea"), "report": r} for i, r in REPORTS.items()]
    manifest = tmp_path / "pairs.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    out = tmp_path / "run"
    proc = torchrun(["-m", "ecgtext", "pretrain", "--out", str(out), "--manifest", str(manifest),
                     "--init", str(TINY_DIR), "--batch-size", "2", "--max-steps", "2", "--num-workers", "0",
                     "--log-every", "1", "--lr", "1e-3", "--warmup-steps", "0"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    start, steps, end = recs[0], [r for r in recs if "loss" in r], recs[-1]
    assert start["world_size"] == 2 and start["global_batch"] == 4
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert r["ets_logits"] == [2, 4]  # local ECGs x global texts
        assert r["global_batch"] == 4
    assert end["event"] == "end" and len(end["rank_param_hashes"]) == 2
    assert len(set(end["rank_param_hashes"])) == 1  # both ranks hold bit-identical weights
    assert end["param_hash"].startswith(end["rank_param_hashes"][0])
    # only rank 0 wrote: one start record, one model
    assert sum(1 for r in recs if r.get("event") == "start") == 1
    import ecgtext
    from ecgtext.pretrain.checkpoint import param_hash

    model = ecgtext.load_model(out / "model")
    assert param_hash(model) == end["param_hash"]


GATHER_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from ecgtext.model.losses import ets_loss
    from ecgtext.pretrain.distributed import Dist, make_gather_text
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    sizes = [3, 2]  # uneven local batches
    ecg_all = torch.randn(sum(sizes), 8, generator=g)
    text_all = torch.randn(sum(sizes), 8, generator=g)
    aligned_all = torch.tensor([1, 0, 1, 1, 0])
    lo = sum(sizes[:rank]); hi = lo + sizes[rank]
    e = ecg_all[lo:hi].clone().requires_grad_(True)
    t = text_all[lo:hi].clone().requires_grad_(True)
    gather = make_gather_text(Dist(rank=rank, world=world))
    gathered, offset = gather(t)
    assert offset == lo and gathered.shape == (sum(sizes), 8)
    loss = ets_loss(e, torch.roll(gathered, -offset, 0), aligned_all[lo:hi])
    loss.backward()
    torch.save({"loss": loss.detach(), "e": e.grad, "t": t.grad}, sys.argv[1] + f"/rank{rank}.pt")
    dist.destroy_process_group()
""")


def test_gathered_contrastive_gradient_matches_single_process(tmp_path):
    script = tmp_path / "gather.py"
    script.write_text(GATHER_SCRIPT)
    proc = torchrun([str(script), str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))

    from ecgtext.model.losses import ets_loss

    g = torch.Generator().manual_seed(0)
    ecg_all = torch.randn(5, 8, generator=g).requires_grad_(True)
    text_all = torch.randn(5, 8, generator=g).requires_grad_(True)
    aligned = torch.tensor([1, 0, 1, 1, 0])
    # the global objective: each rank's (B_r x 5) logit block, summed over ranks
    total = sum(ets_loss(ecg_all[lo:hi], torch.roll(text_all, -lo, 0), aligned[lo:hi])
                for lo, hi in ((0, 3), (3, 5)))
    total.backward()
    assert torch.allclose(r0["loss"] + r1["loss"], total.detach(), atol=1e-6)
    assert torch.allclose(torch.cat([r0["e"], r1["e"]]), ecg_all.grad, atol=1e-6)
    # each rank's text features receive the gradient of *both* ranks' losses
    assert torch.allclose(torch.cat([r0["t"], r1["t"]]), text_all.grad, atol=1e-6)
