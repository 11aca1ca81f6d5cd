"""Pretraining throughput of the D-BETA BASE architecture: optimiser steps/s and samples/s.

One step = the fused masked forward, the four losses, backward and an AdamW
update -- what ``ecgtext pretrain`` does per micro-batch, minus data loading.
Inputs are real: the bundled PTB-XL records (tests/data/ptbxl, or
../shared/data/ptbxl when present) with their reports, MLM-masked as in
training. Weights are random (BASE shapes; no download).

On CPU it times a small batch (default 2) for a few steps; when CUDA is
available it also times a GPU batch (default 32, bf16 autocast) and reports
``torch.cuda.max_memory_allocated``. Run: ``python benchmarks/bench_train.py``.
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "conformance" / "dbeta-tiny"  # tokenizer files (T5 SentencePiece)
REPORTS = ["sinusrhythmus periphere niederspannung", "sinusbradykardie sonst normales ekg",
           "sinusrhythmus normales ekg", "sinus rhythm. no definite pathology.",
           "atrial fibrillation with rapid ventricular response. non-specific st-t changes"]


def load_records(n: int, pre) -> torch.Tensor:
    from ecgtext.io import read_ecg
    from ecgtext.preprocess import prepare

    shared = Path(os.environ.get("ECGTEXT_SHARED_DATA", REPO.parent / "shared" / "data")) / "ptbxl"
    files = sorted(glob.glob(str(shared / "records500" / "*" / "*_hr.hea")))[:64]
    files = files or sorted(glob.glob(str(REPO / "tests" / "data" / "ptbxl" / "*_hr.hea")))
    x = [torch.from_numpy(prepare(read_ecg(f), pre).windows[0]) for f in files]
    return torch.stack([x[i % len(x)] for i in range(n)])


def time_steps(model, device: torch.device, batch: int, steps: int, precision: str) -> dict:
    from ecgtext.pretrain.data import MlmMasker
    from ecgtext.pretrain.objective import Objective

    mcfg = model.config.model
    masker = MlmMasker(model.tokenizer, mcfg.max_text_size)
    gen = torch.Generator().manual_seed(0)
    ecg = load_records(batch, model.config.preprocess).to(device)
    ids, attn, labels = masker([REPORTS[i % len(REPORTS)] for i in range(batch)], gen)
    ids, attn, labels = ids.to(device), attn.to(device), labels.to(device)
    aligned = (torch.arange(batch) % 2).to(device)
    n_tok = mcfg.num_tokens(model.config.preprocess.window)
    objective = Objective(model)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, betas=(0.9, 0.98), weight_decay=0.01)
    cast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
            else torch.autocast(device.type, enabled=False))

    def step():
        noise = torch.rand(batch, n_tok, generator=gen).to(device)
        with cast:
            out = objective(ecg, ids, attn, labels, aligned, noise)
        out["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return float(out["total"].detach())

    step()  # warm-up (allocations, kernels)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    losses = [step() for _ in range(steps)]
    dt = time.perf_counter() - t0
    res = {"device": str(device), "batch": batch, "steps": steps, "precision": precision,
           "steps_per_s": steps / dt, "samples_per_s": steps * batch / dt, "s_per_step": dt / steps,
           "finite": all(torch.isfinite(torch.tensor(losses)).tolist())}
    if device.type == "cuda":
        res["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="dbeta-base", help="preset (dbeta-base) or config.json")
    ap.add_argument("--cpu-batch", type=int, default=2)
    ap.add_argument("--cpu-steps", type=int, default=2)
    ap.add_argument("--gpu-batch", type=int, default=32)
    ap.add_argument("--gpu-steps", type=int, default=10)
    ap.add_argument("--gpu-precision", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--skip-cpu", action="store_true")
    args = ap.parse_args()

    from ecgtext.model.loading import build_model
    from ecgtext.pretrain.setup import _arch_config

    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_model(_arch_config(args.arch))
    model.model_dir = TINY  # tokenizer only; ids index the BASE vocab
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"arch {args.arch}: {n_params / 1e6:.1f} M parameters, built in {time.perf_counter() - t0:.1f} s; "
          f"window {model.config.preprocess.window} samples, {torch.get_num_threads()} CPU threads")
    if not args.skip_cpu:
        r = time_steps(model, torch.device("cpu"), args.cpu_batch, args.cpu_steps, "fp32")
        print(f"CPU  fp32 batch {r['batch']}: {r['steps_per_s']:.3f} steps/s, {r['samples_per_s']:.2f} samples/s "
              f"({r['s_per_step']:.2f} s/step, losses finite: {r['finite']})")
    if torch.cuda.is_available():
        model.to("cuda")
        r = time_steps(model, torch.device("cuda"), args.gpu_batch, args.gpu_steps, args.gpu_precision)
        print(f"GPU  {r['precision']} batch {r['batch']} ({torch.cuda.get_device_name()}): "
              f"{r['steps_per_s']:.2f} steps/s, {r['samples_per_s']:.1f} samples/s, "
              f"max memory {r['max_memory_gib']:.1f} GiB (losses finite: {r['finite']})")
    else:
        print("GPU  not available: GPU throughput not measured")


if __name__ == "__main__":
    main()
