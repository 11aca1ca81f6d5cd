"""Records per second per core: PTB-XL WFDB file -> model tensor.

Times ``read_ecg`` + ``prepare`` with the dbeta-base preprocessing contract on
the PTB-XL records in ``../shared/data/ptbxl`` (falls back to ``tests/data``),
in one process with one BLAS/OpenMP thread, and prints the rate against the
target of 200 records/s/core. Run: ``python benchmarks/bench_read.py``.
"""

from __future__ import annotations

import os

# one core: pin the math libraries before numpy/scipy load
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import glob  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

TARGET = 200.0  # records / s / core
REPO = Path(__file__).resolve().parents[1]


def find_records(rate: str) -> list[str]:
    shared = Path(os.environ.get("ECGTEXT_SHARED_DATA", REPO.parent / "shared" / "data"))
    pattern = {"500": "records500/*/*_hr.hea", "100": "records100/*/*_lr.hea"}[rate]
    found = sorted(glob.glob(str(shared / "ptbxl" / pattern)))
    if not found:
        found = sorted(glob.glob(str(REPO / "tests" / "data" / "ptbxl" / f"*_{'hr' if rate == '500' else 'lr'}.hea")))
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", choices=["500", "100"], default="500", help="PTB-XL records500 or records100")
    ap.add_argument("--repeat", type=int, default=3, help="passes over the records (best one counts)")
    args = ap.parse_args()

    from ecgtext.config import load_preset
    from ecgtext.io import read_ecg
    from ecgtext.preprocess import prepare

    pre = load_preset("dbeta-base").preprocess
    paths = find_records(args.rate)
    if not paths:
        raise SystemExit("no PTB-XL records found (../shared/data/ptbxl or tests/data/ptbxl)")
    prepare(read_ecg(paths[0]), pre)  # warm imports (wfdb, scipy) outside the timing

    best_wall = best_cpu = float("inf")
    for _ in range(args.repeat):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for p in paths:
            out = prepare(read_ecg(p), pre)
            assert out.windows.shape[1:] == (len(pre.leads), pre.window)
        best_wall = min(best_wall, time.perf_counter() - wall0)
        best_cpu = min(best_cpu, time.process_time() - cpu0)

    n = len(paths)
    per_core = n / best_cpu  # CPU time: one process on one core, whatever else the machine runs
    print(f"PTB-XL {args.rate} Hz WFDB -> (W, {len(pre.leads)}, {pre.window}) tensor, {n} records, "
          f"best of {args.repeat}")
    print(f"  wall: {n / best_wall:8.1f} records/s   ({1e3 * best_wall / n:.2f} ms/record)")
    print(f"  cpu:  {per_core:8.1f} records/s/core ({1e3 * best_cpu / n:.2f} ms/record)")
    print(f"  target {TARGET:.0f} records/s/core: ratio {per_core / TARGET:.2f}x")

    # reference: wfdb.rdrecord alone (header parsing through pandas dominates it)
    import wfdb

    sample = paths[: min(100, n)]
    cpu0 = time.process_time()
    for p in sample:
        wfdb.rdrecord(p[:-4])
    ref = len(sample) / (time.process_time() - cpu0)
    print(f"  reference wfdb.rdrecord alone: {ref:.1f} records/s/core "
          f"(ecgtext is {per_core / ref:.1f}x faster end to end)")


if __name__ == "__main__":
    main()
