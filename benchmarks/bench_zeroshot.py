"""Latency of a cached single-record ``ecgtext zeroshot`` with the base architecture.

Builds a complete base-size model directory (random weights, seeded; the tiny
fixture's tokenizer, since Flan-T5's cannot be downloaded here) whose
``model.safetensors`` is the real ~1.3 GB, runs ``ecgtext zeroshot`` once to
fill the label-feature cache, then times cached runs of the console script on
one PTB-XL record against ``python -c "import torch"``:

    ratio = wall(cached ecgtext zeroshot, 1 record) / wall(python -c "import torch")

Target: ratio <= 2.0. Medians of ``--repeat`` alternating runs. Also prints which
heavy modules the cached run imported (it must not import transformers).

Run: ``python benchmarks/bench_zeroshot.py [--repeat 5] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 2.0
HEAVY = ("transformers", "tokenizers", "sentencepiece", "pandas", "pyarrow", "matplotlib", "sklearn", "scipy",
         "wfdb", "h5py", "torch._dynamo")


def record() -> str:
    shared = Path(os.environ.get("ECGTEXT_SHARED_DATA", REPO.parent / "shared" / "data"))
    for p in (shared / "ptbxl" / "records500" / "00000" / "00001_hr.hea", REPO / "tests/data/ptbxl/00001_hr.hea"):
        if p.exists():
            return str(p)
    raise SystemExit("no PTB-XL record found")


def build_base_dir(d: Path) -> Path:
    """A full dbeta-base model directory with random (seeded) weights."""
    if (d / "model.safetensors").exists():
        return d
    import torch

    from ecgtext.model.loading import build_model, save_model_dir

    torch.manual_seed(0)
    model = build_model("dbeta-base")
    save_model_dir(model, d, tokenizer_from=REPO / "tests/data/conformance/dbeta-tiny")
    return d


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the base model directory here between runs (default: a temp dir)")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    work = args.workdir or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model_dir = build_base_dir(work / "dbeta-base-random")
    size = (model_dir / "model.safetensors").stat().st_size
    print(f"base model directory ready in {time.perf_counter() - t0:.1f} s "
          f"(model.safetensors {size / 2 ** 30:.2f} GiB)")
    env = {**os.environ, "ECGTEXT_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
    exe = Path(sys.executable).with_name("ecgtext")
    ecgtext = [str(exe)] if exe.exists() else [sys.executable, "-m", "ecgtext.cli"]
    cmd = ecgtext + ["zeroshot", record(), "--model", str(model_dir), "--labels", "code15", "--format", "jsonl"]

    first = timed(cmd, env)  # fills the label-feature cache (loads the text tower once)
    print(f"first run (text features computed and cached): {first:.2f} s")
    torch_cmd = [sys.executable, "-c", "import torch"]
    timed(torch_cmd, env)  # warm the page cache for both
    cached, base = [], []
    for _ in range(args.repeat):
        base.append(timed(torch_cmd, env))
        cached.append(timed(cmd, env))
    c, b = statistics.median(cached), statistics.median(base)

    probe = ("import sys, runpy\n"
             f"sys.argv = {['ecgtext'] + cmd[len(ecgtext):]!r}\n"
             "try:\n    runpy.run_module('ecgtext.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             f"print('HEAVY', ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    heavy = next((ln.split(" ", 1)[1] if " " in ln else "" for ln in r.stderr.splitlines()
                  if ln.startswith("HEAVY")), "?")

    print(f"python -c 'import torch': median {b:.2f} s  (runs: {', '.join(f'{x:.2f}' for x in base)})")
    print(f"cached ecgtext zeroshot, 1 record: median {c:.2f} s  (runs: {', '.join(f'{x:.2f}' for x in cached)})")
    print(f"heavy modules imported by the cached run: {heavy or 'none'}")
    print(f"ratio {c / b:.2f} ({'meets' if c / b <= TARGET else 'above'} the {TARGET} target)")
    print(json.dumps({"benchmark": "zeroshot", "import_torch_s": round(b, 3), "cached_zeroshot_s": round(c, 3),
                      "ratio": round(c / b, 3), "first_run_s": round(first, 2), "heavy_imports": heavy}))
    tmp.cleanup()


if __name__ == "__main__":
    main()
