"""Long recordings in bounded memory, and SCP-ECG / ISHNE / EDF reading speed.

1. Peak memory of a 24-hour 12-lead 500 Hz Holter (ISHNE and EDF, generated in a
   temporary folder by repeating a real PTB-XL record): the streamed path
   (``ecgtext.io.stream``: lazy range reads, windows a chunk at a time) against
   the naive whole-record path (``read_ecg`` + ``prepare``). Each measure runs in
   a fresh process and reports the peak resident memory it added (``VmHWM`` after
   resetting it, minus ``VmRSS`` before; ``ru_maxrss`` where the peak cannot be reset).
   The naive path is measured on 1 h and 2 h and extrapolated linearly to the
   target length (running it on 24 h would need ~10 GB). ``--embed`` also runs
   the streamed record through the engine and the tiny model end to end.
2. Records/s/core of ``read_ecg`` and of ``read_ecg`` + ``prepare`` for 10-s
   SCP-ECG (default Huffman, second differences), ISHNE and EDF+ files written
   from the PTB-XL records in ``tests/data``, plus the real files of
   ``../shared/data/clinical/{scp,ishne,edf}`` where present; one process, one
   BLAS thread, CPU time.

Run: ``python benchmarks/bench_long_records.py [--hours 24] [--embed] [--seconds 2]``.
"""

from __future__ import annotations

import os

# one core: pin the math libraries before numpy/scipy load
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _common import cpu_line  # noqa: E402 - same folder

REPO = Path(__file__).resolve().parents[1]
CLINICAL = Path(os.environ.get("ECGTEXT_SHARED_DATA", REPO.parent / "shared" / "data")) / "clinical"
STANDARD = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
TINY = REPO / "tests" / "data" / "conformance" / "dbeta-tiny"
sys.path.insert(0, str(REPO / "tests"))


def ptbxl_counts() -> np.ndarray:
    import wfdb

    return wfdb.rdrecord(str(REPO / "tests" / "data" / "ptbxl" / "00001_hr"), physical=False).d_signal.T.astype(np.int64)


# --------------------------------------------------------------------------- long files
def write_long_edf(path: Path, counts: np.ndarray, hours: float) -> Path:
    """Plain EDF (1-s records, uV), made by pyEDFlib for 10 s, then its data records
    repeated to ``hours`` (plain EDF has no time-keeping annotations to rewrite)."""
    import pyedflib

    short = path.with_suffix(".10s.edf")
    headers = [{"label": f"ECG {n}", "dimension": "uV", "sample_frequency": 500, "physical_min": -32768,
                "physical_max": 32767, "digital_min": -32768, "digital_max": 32767, "transducer": "",
                "prefilter": ""} for n in STANDARD]
    w = pyedflib.EdfWriter(str(short), 12, file_type=pyedflib.FILETYPE_EDF)
    try:
        w.setSignalHeaders(headers)
        w.writeSamples([c.astype(np.int32) for c in counts], digital=True)
    finally:
        w.close()
    raw = short.read_bytes()
    header_bytes = int(raw[184:192])
    block = raw[header_bytes:]  # 10 one-second records
    n_blocks = int(round(hours * 360))
    head = bytearray(raw[:header_bytes])
    head[236:244] = f"{n_blocks * 10:<8d}".encode()
    with open(path, "wb") as fh:
        fh.write(bytes(head))
        for _ in range(n_blocks):
            fh.write(block)
    short.unlink()
    return path


_CHILD = """
import json, resource, sys, time
mode, path = sys.argv[1], sys.argv[2]
from ecgtext.config import PreprocessConfig
from ecgtext.io import read_ecg
from ecgtext.inference.streaming import WindowStream
from ecgtext.io.stream import open_lazy
from ecgtext.preprocess import prepare
import scipy.signal  # noqa: F401 - loaded before the baseline in every mode
pre = PreprocessConfig()
if mode == "embed":
    from ecgtext.inference.engine import embed_paths, load_ecg_model
    model = load_ecg_model(sys.argv[3])
    embed_paths([sys.argv[4]], model)
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB -> MB
try:  # reset the peak (VmHWM) so import-time peaks do not hide the measured one (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    reset = True
except OSError:
    reset = False
base = status("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
if mode == "naive":
    n = len(prepare(read_ecg(path), pre).windows)
elif mode == "stream":
    with open_lazy(path) as rec:
        n = sum(len(w) for _, w in WindowStream(rec, pre))
else:
    feats, keys, errs = embed_paths([path], model, batch_size=32)
    assert not errs, errs
    n = len(keys)
peak = status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"added_mb": peak - base, "base_mb": base, "seconds": time.perf_counter() - t, "n": n}))
"""


def child(mode: str, path: Path, warm: str = "") -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(path), str(TINY), warm],
                         capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        raise SystemExit(f"{mode} {path.name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory(tmp: Path, hours: float, embed: bool) -> None:
    counts = ptbxl_counts()
    from clinical_writers import write_long_ishne

    print(f"\n== peak memory, {hours:g} h x 12 leads x 500 Hz (added resident memory above the "
          "process's baseline) ==")
    for fmt in ("ishne", "edf"):
        def make(h: float, fmt: str = fmt) -> Path:
            p = tmp / f"{fmt}_{h:g}h.{'ecg' if fmt == 'ishne' else 'edf'}"
            if fmt == "ishne":
                return write_long_ishne(p, counts, STANDARD, 500, hours=h)
            return write_long_edf(p, counts, h)

        short = [make(1.0), make(2.0)]
        naive = [child("naive", p) for p in short]
        slope = naive[1]["added_mb"] - naive[0]["added_mb"]
        naive_long = naive[1]["added_mb"] + slope * (hours - 2.0)
        for p in short:
            p.unlink()
        long = make(hours)
        size_mb = long.stat().st_size / 2 ** 20
        streamed = child("stream", long)
        print(f"{fmt:6s} file {size_mb:8.0f} MB | naive read_ecg+prepare: 1 h {naive[0]['added_mb']:6.0f} MB, "
              f"2 h {naive[1]['added_mb']:6.0f} MB -> {hours:g} h ~{naive_long:6.0f} MB (linear) | "
              f"streamed windows {hours:g} h: {streamed['added_mb']:5.0f} MB in {streamed['seconds']:.0f} s "
              f"({streamed['n']} windows) | ratio naive/streamed {naive_long / max(streamed['added_mb'], 1):.0f}x")
        if embed:
            warm = str(REPO / "tests" / "data" / "ptbxl" / "00001_hr.hea")
            e = child("embed", long, warm)
            print(f"{fmt:6s} streamed embed (engine + tiny model) {hours:g} h: {e['added_mb']:5.0f} MB above the "
                  f"loaded model ({e['base_mb']:.0f} MB process baseline) in {e['seconds']:.0f} s")
        long.unlink()


# --------------------------------------------------------------------------- reading speed
def measure(paths: list[str], fn, seconds: float) -> float:
    n, cpu0 = 0, time.process_time()
    while True:
        for p in paths:
            fn(p)
        n += len(paths)
        if time.process_time() - cpu0 >= seconds:
            return n / (time.process_time() - cpu0)


def speed(tmp: Path, seconds: float) -> None:
    import wfdb
    from clinical_writers import write_edf, write_ishne, write_scp

    from ecgtext.config import load_preset
    from ecgtext.io import read_ecg
    from ecgtext.preprocess import prepare

    pre = load_preset("dbeta-base").preprocess
    sets: dict[str, list[str]] = {"wfdb PTB-XL (reference)": sorted(glob.glob(str(REPO / "tests" / "data" / "ptbxl"
                                                                            / "*_hr.hea"))),
                                  "scp (PTB-XL written)": [], "ishne (PTB-XL written)": [], "edf (PTB-XL written)": []}
    for hea in sorted(glob.glob(str(REPO / "tests" / "data" / "ptbxl" / "*_hr.hea"))):
        name = Path(hea).stem
        counts = wfdb.rdrecord(hea[:-4], physical=False).d_signal.T.astype(np.int64)
        sets["scp (PTB-XL written)"].append(str(write_scp(tmp / f"{name}.scp", counts, STANDARD, 500)))
        sets["ishne (PTB-XL written)"].append(str(write_ishne(tmp / f"{name}.ecg", counts, STANDARD, 500)))
        sets["edf (PTB-XL written)"].append(str(write_edf(tmp / f"{name}.edf", [
            dict(label=f"ECG {n}", digital=counts[i], fs=500, dimension="uV", phys_per_count=1.0)
            for i, n in enumerate(STANDARD)])))
    for kind in ("scp", "ishne", "edf"):
        real = sorted(p for p in glob.glob(str(CLINICAL / kind / "*")) if p.endswith((".scp", ".ecg", ".edf")))
        if real:
            sets[f"{kind} (../shared real)"] = real
    print(f"\n== reading speed, records/s/core (CPU time, {seconds:g} s per measure; the WFDB row is the "
          "same-run reference: compare ratios on a shared machine) ==")
    import scipy.signal  # noqa: F401 - prepare imports it on first resampling: not a per-record cost
    for label, paths in sets.items():
        prepare(read_ecg(paths[0]), pre)  # warm imports
        r = measure(paths, read_ecg, seconds)
        rp = measure(paths, lambda p: prepare(read_ecg(p), pre), seconds)
        dur = np.mean([read_ecg(p).duration_s for p in paths])
        print(f"{label:26s} {len(paths):2d} files, {dur:5.1f} s each | read_ecg {r:7.0f} rec/s/core | "
              f"read_ecg+prepare {rp:7.0f} rec/s/core")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0, help="length of the long recording")
    ap.add_argument("--embed", action="store_true", help="also embed the long recording (tiny model)")
    ap.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per speed measure")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    print(cpu_line())
    with tempfile.TemporaryDirectory(prefix="ecgtext-bench-long-") as d:
        tmp = Path(d)
        if not args.skip_speed:
            speed(tmp, args.seconds)
        if not args.skip_memory:
            memory(tmp, args.hours, args.embed)


if __name__ == "__main__":
    main()
