"""Records/s of ``embed`` with the local engine and with Ray (1 and 2 model actors), and
Ray's overhead per record, on this machine.

Real PTB-XL records (``../shared/data/ptbxl/records500``, else the bundled ones copied
under distinct names) -> the same model for every engine (tiny by default: the pipeline's
own costs are what differ between engines; ``--model`` for another). Each engine embeds
``--records`` records into a fresh output; every finished record is timestamped
(the local engine reports records one by one, Ray per part file), giving

    total    = records / wall time (start-up included: actors, model loading, output scan)
    steady   = slope of records finished against time (least squares, one point per group
               finishing together: a model batch locally, a part file's write time on Ray)
    overhead = 1/steady(Ray, 1 actor) - 1/steady(local)      (seconds per record)

Ray runs on one local instance started once (its start-up is printed apart), with
``--ray-cpus`` logical CPUs (default: this machine's); with 2 actors each reserves
half a CPU so a read task still fits on a 2-CPU machine. A warm-up run of the local
engine comes first. One run, one machine: compare the ratios; absolute figures drift
with the machine's load (printed).

Run: ``python benchmarks/bench_ray.py [--records 192] [--per-part 8] [--batch-size 8] [--model DIR]``
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import cpu_line  # same folder

REPO = Path(__file__).resolve().parents[1]


def records(n: int, tmp: Path) -> list[str]:
    """``n`` distinct real records (distinct keys: Ray and resume dedupe by path)."""
    shared = Path(os.environ.get("ECGTEXT_SHARED_DATA", REPO.parent / "shared" / "data"))
    found = sorted(glob.glob(str(shared / "ptbxl" / "records500" / "*" / "*_hr.hea")))
    if len(found) >= n:
        return found[:n]
    src = sorted(glob.glob(str(REPO / "tests" / "data" / "ptbxl" / "*_hr.hea")))
    out = []
    for i in range(n):  # copies under new names: header names its .dat, so rename both
        h = Path(src[i % len(src)])
        stem = f"r{i:05d}"
        text = h.read_text().replace(h.stem, stem)
        (tmp / f"{stem}.hea").write_text(text)
        shutil.copy(h.with_suffix(".dat"), tmp / f"{stem}.dat")
        out.append(str(tmp / f"{stem}.hea"))
    return out


class Clock:
    """Timestamps of finished records (an ``on_record`` callback)."""

    def __init__(self):
        self.t0 = time.time()
        self.done: list[float] = []

    def __call__(self, path, err) -> None:
        self.done.append(time.time())

    def from_parts(self, folder: Path) -> "Clock":
        """Ray: when each part file was written by its actor (the driver hears of parts in bursts)."""
        import pyarrow.parquet as pq

        self.done = []
        for f in sorted(folder.glob("part-*.parquet"), key=lambda f: f.stat().st_mtime):
            self.done += [f.stat().st_mtime] * pq.ParquetFile(f).metadata.num_rows
        return self

    def figures(self, n: int) -> tuple[float, float, float]:
        """(total records/s, steady records/s, fixed s): steady is the least-squares slope of
        records finished against time, one point per group of records finishing together."""
        import numpy as np

        t = np.asarray(self.done) - self.t0
        count = np.arange(1, len(t) + 1)
        last = np.r_[t[1:] != t[:-1], True]
        steady = float(np.polyfit(t[last], count[last], 1)[0]) if last.sum() > 2 else float("nan")
        wall = t[-1]
        return n / wall, steady, wall - n / steady


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=192)
    ap.add_argument("--model", default=str(REPO / "tests" / "data" / "conformance" / "dbeta-tiny"))
    ap.add_argument("--ray-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--per-part", type=int, default=8, help="records per Ray part file / actor batch")
    ap.add_argument("--batch-size", type=int, default=8, help="windows per model batch (all engines)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the local engine (each Ray "
                    "actor uses as many as it reserves CPUs, at least 1)")
    args = ap.parse_args()

    import torch

    from ecgtext.inference.embed import run_embed
    from ecgtext.inference.engines.ray import RayOptions, connect, run_embed_ray

    torch.set_num_threads(args.threads)
    print(cpu_line())
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        (tmp / "rec").mkdir()
        paths = records(args.records, tmp / "rec")
        n = len(paths)
        run_embed(paths[:2], args.model, tmp / "warm.parquet", num_workers=0)  # imports, caches

        clock = Clock()
        s = run_embed(paths, args.model, tmp / "local.parquet", num_workers=0, batch_size=args.batch_size,
                      on_record=clock)
        assert s.written == n, s
        results["local"] = clock.figures(n)

        t0 = time.perf_counter()
        connect(RayOptions(num_cpus=args.ray_cpus))
        print(f"Ray local instance start-up: {time.perf_counter() - t0:.1f} s ({args.ray_cpus} logical CPUs)")
        for actors in (1, 2):
            opts = RayOptions(num_actors=actors, actor_cpus=1.0 if actors == 1 else 0.5,
                              records_per_part=args.per_part)
            clock = Clock()
            s = run_embed_ray(paths, args.model, tmp / f"ray{actors}", options=opts, batch_size=args.batch_size,
                              on_record=clock)
            assert s.written == n, s
            results[f"ray, {actors} actor{'s' if actors > 1 else ''}"] = clock.from_parts(tmp / f"ray{actors}").figures(n)
        import ray

        ray.shutdown()

    print(f"{n} records, model {Path(args.model).name}, {args.batch_size} windows per model batch, "
          f"{args.threads} torch thread(s) locally, "
          f"{args.per_part} records per Ray part; load average at end: {os.getloadavg()[0]:.1f}")
    print(f"{'engine':<16} {'total rec/s':>11} {'steady rec/s':>12} {'fixed s':>8}")
    for name, (total, steady, fixed) in results.items():
        print(f"{name:<16} {total:>11.1f} {steady:>12.1f} {fixed:>8.1f}")
    over = 1 / results["ray, 1 actor"][1] - 1 / results["local"][1]
    print(f"Ray overhead per record (1 actor vs local, steady state): {1000 * over:+.1f} ms; "
          f"2 actors vs 1 actor steady throughput: {results['ray, 2 actors'][1] / results['ray, 1 actor'][1]:.2f}x")


if __name__ == "__main__":
    main()
