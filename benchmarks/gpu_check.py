"""The steps of ``benchmarks/gpu_check.sh`` (run that, not this).

Subcommands, each printing one JSON line (and writing it to ``--out``):

    agreement   CUDA (fp32 and bf16) vs CPU fp32 ECG features of the base architecture
    embed       end-to-end ``run_embed`` records/s in bf16 for batch sizes 64-512, reading
                workers keeping the GPU fed, GPU utilisation sampled with nvidia-smi
    ddp         one pretraining step of the base model under DistributedDataParallel,
                one process, NCCL (gloo on CPU)

``--dry-run`` runs each on the CPU with the tiny model and a few records, so the
script is known to work before a GPU session spends its time on it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "conformance" / "dbeta-tiny"


def records(n: int) -> list[str]:
    shared = Path(os.environ.get("ECGTEXT_SHARED_DATA", REPO.parent / "shared" / "data"))
    found = sorted(glob.glob(str(shared / "ptbxl" / "records500" / "*" / "*_hr.hea")))
    found = found or sorted(glob.glob(str(REPO / "tests" / "data" / "ptbxl" / "*_hr.hea")))
    if not found:
        raise SystemExit("no PTB-XL records (../shared/data/ptbxl or tests/data/ptbxl)")
    return [found[i % len(found)] for i in range(n)]  # repeats are fine for throughput


def model_dir(dry: bool, root: Path) -> Path:
    """The tiny model (dry run) or the base architecture with seeded random ECG-path weights."""
    if dry:
        return TINY
    import torch
    from safetensors.torch import save_file

    from ecgtext.config import load_preset
    from ecgtext.model.loading import build_model

    d = root / "dbeta-base-random-ecg"
    if not (d / "model.safetensors").is_file():
        torch.manual_seed(0)
        cfg = load_preset("dbeta-base")
        model = build_model(cfg, components="ecg")
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    return d


def device(dry: bool) -> str:
    return "cpu" if dry else "cuda"


class GpuSampler:
    """nvidia-smi utilisation / memory samples every 200 ms while active (nothing without nvidia-smi)."""

    def __enter__(self):
        self.proc = None
        try:
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-lms", "200", "-i", os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except (FileNotFoundError, ValueError):
            pass
        return self

    def __exit__(self, *exc):
        self.samples: list[tuple[float, float]] = []
        if self.proc is not None:
            self.proc.terminate()
            out, _ = self.proc.communicate(timeout=10)
            for line in out.splitlines():
                try:
                    u, m = (float(v) for v in line.split(","))
                    self.samples.append((u, m))
                except ValueError:
                    continue

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_util_max": None, "gpu_mem_mib_max": None}
        util = [u for u, _ in self.samples]
        busy = util[1:-1] or util  # the edges are start-up and tear-down
        return {"gpu_util_mean": round(sum(busy) / len(busy), 1), "gpu_util_max": max(util),
                "gpu_mem_mib_max": max(m for _, m in self.samples), "samples": len(util)}


def agreement(args) -> dict:
    import numpy as np

    from ecgtext.inference.engine import embed_paths, load_ecg_model

    paths = records(4 if args.dry_run else 64)
    model = load_ecg_model(model_dir(args.dry_run, Path(args.work)))
    ref, keys, errs = embed_paths(paths, model, precision="fp32", device="cpu", batch_size=16)
    assert not errs
    out = {"step": "agreement", "records": len(paths)}
    for prec in ("fp32", "bf16"):
        feats, keys2, _ = embed_paths(paths, model, precision=prec, device=device(args.dry_run), batch_size=16)
        assert keys2 == keys
        cos = (feats * ref).sum(1) / (np.linalg.norm(feats, axis=1) * np.linalg.norm(ref, axis=1))
        out[f"{prec}_cosine_min"] = round(float(cos.min()), 6)
        out[f"{prec}_max_abs_diff"] = float(np.abs(feats - ref).max())
        model.to("cpu")
    out["ok"] = out["fp32_cosine_min"] >= 0.9999 and out["bf16_cosine_min"] >= 0.999
    return out


def embed(args) -> dict:
    from ecgtext.inference.embed import run_embed
    from ecgtext.inference.engine import default_num_workers, load_ecg_model

    dev = device(args.dry_run)
    model = load_ecg_model(model_dir(args.dry_run, Path(args.work)), device=dev)
    sizes = [16, 32] if args.dry_run else [64, 128, 256, 512]
    n = 8 if args.dry_run else args.records
    paths = records(n)
    workers = 0 if args.dry_run else default_num_workers(n, "cuda")
    run_embed(paths[: sizes[0]], model, Path(args.work) / "warm.parquet", batch_size=sizes[0],
              num_workers=0, device=dev, precision="bf16", overwrite=True)
    rows = []
    for bs in sizes:
        with GpuSampler() as gpu:
            t0 = time.perf_counter()
            s = run_embed(paths, model, Path(args.work) / f"emb-{bs}.parquet", batch_size=bs,
                          num_workers=workers, device=dev, precision="bf16", overwrite=True)
            wall = time.perf_counter() - t0
        assert s.failed == 0 and s.written == len(paths), s
        rows.append({"batch_size": bs, "records_per_s": round(len(paths) / wall, 1), **gpu.summary()})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"step": "embed", "precision": "bf16", "device": dev, "records": len(paths),
            "num_workers": workers, "results": rows, "ok": True}


def ddp(args) -> dict:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from ecgtext.model.loading import build_model
    from ecgtext.pretrain.data import MlmMasker
    from ecgtext.pretrain.objective import Objective

    dev = torch.device(device(args.dry_run))
    backend = "gloo" if dev.type == "cpu" else "nccl"
    with socket.socket() as s:  # a free local port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    dist.init_process_group(backend=backend, rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = build_model("dbeta-tiny" if args.dry_run else "dbeta-base").to(dev).train()
        model.model_dir = TINY  # tokenizer only; ids index the base vocabulary
        batch = 2 if args.dry_run else 16
        net = DDP(Objective(model), device_ids=[dev.index or 0] if dev.type == "cuda" else None,
                  find_unused_parameters=True)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        masker = MlmMasker(model.tokenizer, model.config.model.max_text_size)
        gen = torch.Generator().manual_seed(0)
        ids, attn, labels = (t.to(dev) for t in masker(["sinus rhythm. normal ecg"] * batch, gen))
        window = model.config.preprocess.window
        ecg = 0.3 * torch.randn(batch, model.config.model.in_d, window, generator=gen)
        noise = torch.rand(batch, model.config.model.num_tokens(window), generator=gen)
        aligned = torch.arange(batch) % 2
        times = []
        for _ in range(2):  # the first step builds DDP's buckets
            t0 = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                out = net(ecg.to(dev), ids, attn, labels, aligned.to(dev), noise.to(dev))
            out["total"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        check = torch.ones(1, device=dev)
        dist.all_reduce(check)
        finite = bool(torch.isfinite(out["total"].detach()).item())
        return {"step": "ddp", "backend": backend, "world_size": dist.get_world_size(), "batch": batch,
                "step_s": round(times[-1], 3), "loss": round(float(out["total"].detach()), 4),
                "all_reduce": float(check.item()), "ok": finite and check.item() == 1.0}
    finally:
        dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["agreement", "embed", "ddp"])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny model, few records")
    ap.add_argument("--records", type=int, default=2048, help="records per embed measurement (GPU)")
    ap.add_argument("--work", default=os.environ.get("GPU_CHECK_WORK", "/tmp/ecgtext-gpu-check"))
    ap.add_argument("--out", default=None, help="folder for <step>.json")
    args = ap.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ECGTEXT_CACHE", str(Path(args.work) / "cache"))
    t0 = time.perf_counter()
    res = {"agreement": agreement, "embed": embed, "ddp": ddp}[args.step](args)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    res["dry_run"] = args.dry_run
    line = json.dumps(res)
    print(line)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"{args.step}.json").write_text(line + "\n")
    if not res.get("ok", False):
        sys.exit(1)


if __name__ == "__main__":
    main()
