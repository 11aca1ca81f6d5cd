"""Embedding throughput of the base architecture on CPU, end to end, per precision.

WFDB files (``../shared/data/ptbxl``, else ``tests/data/ptbxl``) -> read ->
prepare -> base ECG encoder (random weights, seeded) -> Parquet, through the same
``run_embed`` the ``embed`` command uses, for each variant in one run:

    reference   fp32 eager with the fast paths switched off (the reference implementation's cost)
    fp32        ``--precision fp32`` (the conformance path)
    bf16        ``--precision bf16`` (the fast CPU path; emulated, and slow, on CPUs without native bf16)
    int8        ``--precision int8`` (torchao dynamic int8; on a CPU without VNNI/AMX it is forced here,
                only to report its numbers: the CLI refuses it there)

Variants run interleaved, chunk by chunk, on the same records, so a shared
machine's drifting load hits them alike; each speed-up is the median over chunks
of t(reference) / t(variant). Also printed: the CPU (model, torch kernels,
bf16/int8 instructions), this machine's fp32 / bf16 / int8 matmul limits
(FFN-shaped products, measured in the same run), the GFLOP per record of the
reference and of the fast path, and the fidelity of each variant against fp32:
per-record cosine of the ECG features, and zero-shot top-1 agreement over the
PTB-XL label sets (label features from the base text tower with random weights,
tokenised with the tiny model's tokenizer: the published weights are not
reachable offline). Gates: bf16 cosine >= 0.999 and agreement >= 98 %; int8
cosine >= 0.99. Target: bf16 >= 2.5x the reference on a CPU with native bf16.

Run: ``python benchmarks/bench_embed.py [--records 16] [--chunk 4] [--batch-size 32] [--onnx]``
(use ``--records 96`` or more on a CPU with native bf16, where bf16 is fast).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "conformance" / "dbeta-tiny"
LABEL_SETS = ("ptbxl-super", "ptbxl-rhythm", "ptbxl-form")
TARGET = 2.5


def find_records(n: int) -> list[str]:
    shared = Path(os.environ.get("ECGTEXT_SHARED_DATA", REPO.parent / "shared" / "data"))
    found = sorted(glob.glob(str(shared / "ptbxl" / "records500" / "*" / "*_hr.hea")))
    found = found or sorted(glob.glob(str(REPO / "tests" / "data" / "ptbxl" / "*_hr.hea")))
    if not found:
        raise SystemExit("no PTB-XL records found (../shared/data/ptbxl or tests/data/ptbxl)")
    return (found * (n // len(found) + 1))[:n] if len(found) < n else found[:n]


def base_model(root: Path):
    """(model dir with the dbeta-base config and a seeded random ECG path, a base model whose
    text path has random weights, for label features). Only the parts used are initialised:
    random init of all 321 M parameters costs minutes on a busy 2-core machine."""
    import torch
    from safetensors.torch import save_file

    from ecgtext.config import load_preset
    from ecgtext.model.loading import build_model
    from ecgtext.model.tokenizer import load_tokenizer

    torch.manual_seed(0)
    cfg = load_preset("dbeta-base")
    ecg = build_model(cfg, components="ecg")
    d = root / "dbeta-base-random"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    save_file({k: v.contiguous() for k, v in ecg.state_dict().items()}, str(d / "model.safetensors"))
    full = build_model(cfg, components="all", random_init=False).eval()
    with torch.no_grad():
        for name, p in full.named_parameters():
            if not name.startswith(("language_encoder.", "multi_modal_language_proj.", "unimodal_language_pooler.")):
                continue
            if name.endswith("layer_norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02 if p.dim() > 1 and "embed" not in name else 1.0)
    full._tokenizer = load_tokenizer(TINY)  # ids < 1,152: valid in the base vocabulary
    return d, full


def rate(fn, flop: float, seconds: float = 1.5) -> float:
    """GFLOP/s of ``fn`` (warm, at least one timed call)."""
    fn()
    reps, t0 = 0, time.perf_counter()
    while reps == 0 or time.perf_counter() - t0 < seconds:
        fn()
        reps += 1
    return reps * flop / (time.perf_counter() - t0) / 1e9


def matmul_limits(m: int = 512, k: int = 768, n: int = 3072, int8: bool = True) -> dict[str, float]:
    """fp32 / bf16 / int8 GFLOP/s (GOP/s) of an FFN-shaped product, as the model calls it."""
    import torch
    import torch.nn.functional as F

    x, w = torch.randn(m, k), torch.randn(n, k)
    flop = 2.0 * m * k * n
    out = {"fp32": rate(lambda: F.linear(x, w), flop)}
    xb, wb = x.bfloat16(), w.bfloat16()
    out["bf16"] = rate(lambda: F.linear(xb, wb), flop)
    from ecgtext.model.precision import cpu_features

    cpu = cpu_features()
    # what torchao runs on a CPU: s8s8 torch._int_mm (AMX, or the fallback), u8s8 with VNNI but no AMX
    u8 = "avx512_vnni" in cpu.flags and not cpu.amx
    xi = torch.randint(0 if u8 else -127, 256 if u8 else 128, (m, k), dtype=torch.uint8 if u8 else torch.int8)
    wi = torch.randint(-127, 128, (n, k), dtype=torch.int8).t()  # the weight's transpose, as torchao passes it
    try:
        out["int8"] = rate(lambda: torch._int_mm(xi, wi), flop) if int8 else float("nan")
    except RuntimeError:  # no CPU kernel in this torch build
        out["int8"] = float("nan")
    return {k_: round(v, 1) for k_, v in out.items()}


def gflop(fn, window: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 12, window)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        fn(x)
    return fc.get_total_flops() / 1e9


def read_features(files: list[Path]):
    import numpy as np
    import pyarrow.parquet as pq

    rows = {}
    for f in files:
        t = pq.read_table(f, columns=["path", "embedding"]).to_pydict()
        rows.update(zip(t["path"], t["embedding"]))
    keys = sorted(rows)
    return keys, np.asarray([rows[k] for k in keys], dtype=np.float32)


def onnx_vs_torch(model, model_dir: Path, tmp: Path, batch: int = 8, reps: int = 3) -> dict:
    """Model-only records/s of ONNX Runtime vs torch fp32 on the exported ECG encoder."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from ecgtext.inference.export import export_onnx

    t0 = time.perf_counter()
    res = export_onnx(model_dir, tmp / "onnx", text=False)
    export_s = time.perf_counter() - t0
    sess = ort.InferenceSession(str(tmp / "onnx" / "ecg_encoder.onnx"), providers=["CPUExecutionProvider"])
    x = 0.3 * torch.randn(batch, 12, model.config.preprocess.window)
    times = {"torch": [], "onnxruntime": []}
    with torch.inference_mode():
        model.encode_ecg(x)
        sess.run(None, {"ecg": x.numpy()})
        for _ in range(reps):  # alternate, so both see the same machine
            t0 = time.perf_counter()
            model.encode_ecg(x)
            times["torch"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sess.run(None, {"ecg": x.numpy()})
            times["onnxruntime"].append(time.perf_counter() - t0)
    ratios = [t / o for t, o in zip(times["torch"], times["onnxruntime"])]
    return {"batch": batch, "export_s": round(export_s, 1), "max_abs_error": res.max_abs_error,
            "torch_records_per_s": round(batch / statistics.median(times["torch"]), 3),
            "onnxruntime_records_per_s": round(batch / statistics.median(times["onnxruntime"]), 3),
            "onnxruntime_speedup": round(statistics.median(ratios), 3),
            "note": f"{np.round(ratios, 2).tolist()} per repetition"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=16, help="records embedded by every variant")
    ap.add_argument("--chunk", type=int, default=4, help="records per interleaved chunk")
    ap.add_argument("--slow-records", type=int, default=4,
                    help="records for variants this CPU only emulates (bf16 without native bf16, forced int8)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--variants", nargs="+", default=["reference", "fp32", "bf16", "int8"])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--onnx", action="store_true", help="also compare ONNX Runtime with torch (model only)")
    args = ap.parse_args()

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from ecgtext.inference.embed import run_embed
    from ecgtext.inference.engine import load_ecg_model
    from ecgtext.inference.zeroshot import compute_label_features
    from ecgtext.labels import load_label_set
    from ecgtext.model import precision as P
    from ecgtext.model.ecg_encoder import set_fast_paths
    from ecgtext.model.fast_ecg import FastEcgPath

    cpu = P.cpu_features()
    print(f"CPU: {cpu.describe()}; native bf16: {cpu.native_bf16}; int8 instructions: {cpu.fast_int8}; "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs; torch {torch.__version__}")
    variants = list(args.variants)
    forced = []
    if "int8" in variants:
        if not P.torchao_available():
            print("int8: skipped (torchao not installed: pip install 'ecgtext[int8]')")
            variants.remove("int8")
        elif not cpu.fast_int8:
            forced.append("int8")
            real = P.cpu_features()
            P.cpu_features = lambda: P.CpuFeatures(real.model, real.flags | {"avx512_vnni"}, real.capability)
    if "bf16" in variants and not cpu.native_bf16:
        forced.append("bf16")
        print("bf16: this CPU has no native bf16, so bf16 is emulated here (auto picks fp32); measured anyway")
    if forced:
        print(f"{' and '.join(forced)}: emulated on this CPU, so measured on the first {args.slow_records} records only")
    paths = find_records(args.records)
    chunks = [paths[i:i + args.chunk] for i in range(0, len(paths), args.chunk)]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("ECGTEXT_CACHE", str(tmp / "cache"))
        t0 = time.perf_counter()
        model_dir, full = base_model(tmp)
        labels = {}
        for name in LABEL_SETS:
            labels.update({f"{name}:{k}": v for k, v in load_label_set(name).items()})
        text = compute_label_features(full, labels).numpy()
        del full
        models = {v: load_ecg_model(model_dir) for v in variants}
        if "reference" in models:
            set_fast_paths(models["reference"], False)
        window = models[variants[0]].config.preprocess.window
        ref_model = next(iter(models.values()))
        flop_ref = gflop(ref_model.encode_ecg, window)
        flop_fast = gflop(FastEcgPath(ref_model, torch.float32), window)
        print(f"base ECG path, random weights (built in {time.perf_counter() - t0:.0f} s); work per record: "
              f"{flop_ref:.1f} GFLOP reference, {flop_fast:.1f} GFLOP fast path (bf16/int8)")
        # limits measured before the first and after every chunk (the load drifts); medians reported
        limit_runs = [matmul_limits(int8="int8" in variants)]

        precision_of = {"reference": "fp32", "fp32": "fp32", "bf16": "bf16", "int8": "int8"}
        build_s = {}
        for v in variants:  # warm up; builds the bf16/int8 forms once (timed)
            t0 = time.perf_counter()
            run_embed(paths[:1], models[v], tmp / f"warm-{v}.parquet", batch_size=args.batch_size,
                      num_workers=0, precision=precision_of[v], device="cpu")
            build_s[v] = round(time.perf_counter() - t0, 1)
        walls = {v: [] for v in variants}
        files = {v: [] for v in variants}
        for k, chunk in enumerate(chunks):
            for v in variants:
                if v in forced and (k + 1) * args.chunk > max(args.slow_records, args.chunk):
                    continue
                out = tmp / f"emb-{v}-{k}.parquet"
                t0 = time.perf_counter()
                s = run_embed(chunk, models[v], out, batch_size=args.batch_size, num_workers=0,
                              precision=precision_of[v], device="cpu", flush_every=10 ** 9)
                walls[v].append(time.perf_counter() - t0)
                assert s.written == len(chunk) and s.failed == 0, s
                files[v].append(out)
            limit_runs.append(matmul_limits(int8="int8" in variants))
            print(f"chunk {k + 1}/{len(chunks)}: " + ", ".join(f"{v} {len(chunk) / walls[v][k]:.2f}/s"
                                                             for v in variants if len(walls[v]) > k), flush=True)

        limits = {p: round(statistics.median(r[p] for r in limit_runs), 1) for p in ("fp32", "bf16", "int8")}
        print(f"matmul limits (512x768 @ 768x3072, as the FFN calls it; median of {len(limit_runs)} runs "
              f"between chunks): fp32 {limits['fp32']} GFLOP/s, bf16 {limits['bf16']} GFLOP/s, "
              f"int8 {limits['int8']} GOP/s")
        feats = {v: read_features(files[v]) for v in variants}
        base = "fp32" if "fp32" in variants else variants[0]
        all_keys, all_f32 = feats[base]
        results = []
        for v in variants:
            n_run = len(walls[v])
            rate_v = sum(len(c) for c in chunks[:n_run]) / sum(walls[v])
            row = {"variant": v, "precision": precision_of[v], "records_per_s": round(rate_v, 3),
                   "first_batch_s": build_s[v], "forced": v in forced}
            if "reference" in walls:
                row["speedup_vs_reference"] = round(statistics.median(
                    r / w for r, w in zip(walls["reference"], walls[v])), 3)  # same chunks, same order
            flop = flop_ref if v in ("reference", "fp32") else flop_fast
            lim = limits.get(precision_of[v])
            row["gflops"] = round(rate_v * flop, 1)
            row["fraction_of_matmul_limit"] = round(rate_v * flop / lim, 3) if lim and lim == lim else None
            kv, fv = feats[v]
            pick = [all_keys.index(k_) for k_ in kv]
            f32 = all_f32[pick]
            row["fidelity_records"] = len(kv)
            cos = (fv * f32).sum(1) / (np.linalg.norm(fv, axis=1) * np.linalg.norm(f32, axis=1))
            row["cosine_vs_fp32_min"] = round(float(cos.min()), 6)
            row["cosine_vs_fp32_mean"] = round(float(cos.mean()), 6)
            row["zeroshot_top1_agreement"] = round(float(
                (np.argmax(fv @ text.T, 1) == np.argmax(f32 @ text.T, 1)).mean()), 4)
            results.append(row)

        print(f"\n{'variant':10s} {'records/s':>10s} {'x reference':>12s} {'GFLOP/s':>8s} {'of limit':>9s} "
              f"{'cos min':>9s} {'top-1 agree':>12s} {'records':>8s}")
        for r in results:
            note = " (emulated on this CPU)" if r["forced"] else ""
            print(f"{r['variant']:10s} {r['records_per_s']:10.2f} {r.get('speedup_vs_reference', float('nan')):12.2f} "
                  f"{r['gflops']:8.1f} {r['fraction_of_matmul_limit'] or float('nan'):9.2f} "
                  f"{r['cosine_vs_fp32_min']:9.5f} {r['zeroshot_top1_agreement']:12.3f} "
                  f"{r['fidelity_records']:8d}{note}")
        gates = {}
        for r in results:
            if r["precision"] == "bf16":
                gates["bf16_cosine>=0.999"] = r["cosine_vs_fp32_min"] >= 0.999
                gates["bf16_top1>=0.98"] = r["zeroshot_top1_agreement"] >= 0.98
                if cpu.native_bf16:
                    gates[f"bf16_speedup>={TARGET}"] = r.get("speedup_vs_reference", 0) >= TARGET
            if r["precision"] == "int8":
                gates["int8_cosine>=0.99"] = r["cosine_vs_fp32_min"] >= 0.99
        print("gates: " + ", ".join(f"{k} {'pass' if ok else 'FAIL'}" for k, ok in gates.items()))
        report = {"benchmark": "embed", "cpu": cpu.describe(), "flags": sorted(
            f for f in cpu.flags if "bf16" in f or "vnni" in f or "amx" in f or f.startswith("avx512")),
            "threads": torch.get_num_threads(), "records": len(paths), "batch_size": args.batch_size,
            "gflop_per_record": {"reference": round(flop_ref, 2), "fast": round(flop_fast, 2)},
            "matmul_limits": limits, "labels": len(labels), "results": results, "gates": gates}
        if args.onnx:
            ref = models.get("fp32") or ref_model
            report["onnxruntime"] = onnx_vs_torch(ref, model_dir, tmp)
            o = report["onnxruntime"]
            print(f"ONNX Runtime vs torch fp32 (model only, batch {o['batch']}): "
                  f"{o['onnxruntime_records_per_s']} vs {o['torch_records_per_s']} records/s, "
                  f"speed-up {o['onnxruntime_speedup']}x; export {o['export_s']} s, max |diff| {o['max_abs_error']}")
        print(json.dumps(report))


if __name__ == "__main__":
    main()
