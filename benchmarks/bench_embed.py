"""Embedding throughput of the base architecture on CPU, end to end, against the matmul limit.

WFDB files (``../shared/data/ptbxl``, else ``tests/data/ptbxl``) -> read ->
prepare -> base ECG encoder (random weights, fp32) -> Parquet, through the
same ``run_embed`` the ``embed`` command uses. The figure of merit is

    ratio = (records/s x GFLOP per record) / (fp32 matmul GFLOP/s of this machine)

with the matmul rate measured in the same run (``torch.mm`` of 2048 x 2048,
same thread count). Target: ratio >= 0.8. The GFLOP per record is counted with
``torch.utils.flop_counter`` (~39.5 for the base ECG path).

Run: ``python benchmarks/bench_embed.py [--records 64] [--batch-size 16 32] [--num-workers 0 1]``
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.8


def find_records(n: int) -> list[str]:
    shared = Path(os.environ.get("ECGTEXT_SHARED_DATA", REPO.parent / "shared" / "data"))
    found = sorted(glob.glob(str(shared / "ptbxl" / "records500" / "*" / "*_hr.hea")))
    found = found or sorted(glob.glob(str(REPO / "tests" / "data" / "ptbxl" / "*_hr.hea")))
    if not found:
        raise SystemExit("no PTB-XL records found (../shared/data/ptbxl or tests/data/ptbxl)")
    return (found * (n // len(found) + 1))[:n] if len(found) < n else found[:n]


def base_ecg_model_dir(root: Path) -> Path:
    """A model directory with the dbeta-base config and random ECG-path weights (seeded)."""
    import torch
    from safetensors.torch import save_file

    from ecgtext.config import load_preset
    from ecgtext.model.loading import build_model

    torch.manual_seed(0)
    d = root / "dbeta-base-random-ecg"
    d.mkdir(parents=True, exist_ok=True)
    cfg = load_preset("dbeta-base")
    model = build_model(cfg, components="ecg")
    (d / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    return d


def matmul_run(seconds: float = 2.0, n: int = 2048) -> tuple[float, float, float]:
    """(GFLOP done, wall s, CPU s) of back-to-back fp32 ``torch.mm`` of n x n."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    reps, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
    return reps * 2 * n ** 3 / 1e9, time.perf_counter() - t0, time.process_time() - c0


def gflop_per_record(model) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 12, model.config.preprocess.window)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model.encode_ecg(x)
    return fc.get_total_flops() / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=64, help="records per measured run")
    ap.add_argument("--batch-size", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--num-workers", type=int, nargs="+", default=[0])
    ap.add_argument("--chunk", type=int, default=16, help="records per embedding chunk (interleaved with matmul)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from ecgtext.inference.embed import run_embed
    from ecgtext.inference.engine import load_ecg_model

    paths = find_records(args.records)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("ECGTEXT_CACHE", str(tmp / "cache"))
        t0 = time.perf_counter()
        model = load_ecg_model(base_ecg_model_dir(tmp))
        print(f"base ECG path: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters "
              f"(built and loaded in {time.perf_counter() - t0:.1f} s); {torch.get_num_threads()} torch threads, "
              f"{os.cpu_count()} CPUs")
        flop = gflop_per_record(model)
        print(f"work per record (torch.utils.flop_counter): {flop:.1f} GFLOP")
        run_embed(paths[:4], model, tmp / "warmup.parquet", batch_size=4, num_workers=0)  # warm up kernels
        x = torch.zeros(16, 12, model.config.preprocess.window)
        mm = matmul_run()
        with torch.inference_mode():
            t0 = time.perf_counter()
            model.encode_ecg(x)
            fwd = time.perf_counter() - t0
        mm2 = matmul_run()
        limit = (mm[0] + mm2[0]) / (mm[1] + mm2[1])
        print(f"model alone (batch 16, no I/O): {16 / fwd:.2f} records/s = {16 / fwd * flop:.1f} GFLOP/s; "
              f"matmul limit {limit:.1f} GFLOP/s; ratio {16 / fwd * flop / limit:.2f}")

        # Interleave chunks of embedding with 2 s matmul runs, so both see the same machine:
        # on a shared machine the CPU available drifts by 2x within a minute. Each chunk's
        # ratio uses the matmul rate measured just before and just after it; the median
        # over chunks is reported (the total over all chunks too).
        results = []
        chunks = [paths[i:i + args.chunk] for i in range(0, len(paths), args.chunk)]
        variants = [("default", model)]
        for (variant, net), bs, nw in itertools.product(variants, args.batch_size, args.num_workers):
            ratios, walls, cpus, mm_rates, mm_cpu_rates = [], [], [], [], []
            before = matmul_run()
            for k, chunk in enumerate(chunks):
                t0, c0 = time.perf_counter(), time.process_time()
                s = run_embed(chunk, net, tmp / f"emb-{variant}-{bs}-{nw}-{k}.parquet", batch_size=bs,
                              num_workers=nw, flush_every=10 ** 9)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                assert s.written == len(chunk) and s.failed == 0
                after = matmul_run()
                limit = (before[0] + after[0]) / (before[1] + after[1])
                mm_rates.append(limit)
                mm_cpu_rates.append((before[0] + after[0]) / (before[2] + after[2]))
                ratios.append(len(chunk) * flop / wall / limit)
                walls.append(wall)
                cpus.append(cpu)
                before = after
            rate = len(paths) / sum(walls)
            limit = statistics.median(mm_rates)
            ratio = statistics.median(ratios)
            total_ratio = rate * flop / (sum(r * w for r, w in zip(mm_rates, walls)) / sum(walls))
            cpu_ratio = (len(paths) * flop / sum(cpus)) / statistics.median(mm_cpu_rates)
            results.append({"variant": variant, "batch_size": bs, "num_workers": nw,
                            "records_per_s": round(rate, 3), "achieved_gflops": round(rate * flop, 1),
                            "matmul_gflops": round(limit, 1),
                            "ratio": round(ratio, 3), "ratio_of_totals": round(total_ratio, 3),
                            "cpu_time_ratio": round(cpu_ratio, 3),
                            "chunk_ratios": [round(r, 3) for r in ratios]})
            print(f"{variant}, batch {bs:3d}, workers {nw}: {rate:6.2f} records/s = {rate * flop:6.1f} GFLOP/s; "
                  f"matmul limit {limit:6.1f} GFLOP/s; ratio {ratio:.2f} "
                  f"({'meets' if ratio >= TARGET else 'below'} the {TARGET} target; "
                  f"chunks {min(ratios):.2f}-{max(ratios):.2f}; of totals {total_ratio:.2f}; "
                  f"per CPU-second {cpu_ratio:.2f})")
        best = max(results, key=lambda r: r["ratio"])
        print(json.dumps({"benchmark": "embed", "gflop_per_record": round(flop, 2), "records": len(paths),
                          "best": best, "all": results}))


if __name__ == "__main__":
    main()
