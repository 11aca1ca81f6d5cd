#!/usr/bin/env bash
# GPU check (issue 12): one script, under 8 minutes on a CUDA machine.
#
#   1. agreement  CUDA fp32 / bf16 vs CPU fp32 ECG features (base architecture, 64 PTB-XL records)
#   2. embed      end-to-end records/s, bf16, batch 64/128/256/512, reading workers feeding
#                 the GPU; GPU utilisation and memory sampled with nvidia-smi
#   3. pretrain   pretraining samples/s and peak GPU memory, base model, batch 32, bf16
#                 (benchmarks/bench_train.py)
#   4. ddp        one DistributedDataParallel pretraining step, 1 process, NCCL
#
# Usage: benchmarks/gpu_check.sh [--dry-run] [--out DIR]
#   --dry-run   the same steps on the CPU with the tiny model and a few records (~2-4 min
#               on 2 cores): proves the script before a GPU session spends time on it
#   --out DIR   where each step's JSON goes (default: gpu-check-out)
# Each step has a time limit; the script exits 1 if any step fails, and prints a summary.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
OUT=gpu-check-out
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (use --dry-run, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
PY="${PYTHON:-python}"
mkdir -p "$OUT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ecgtext-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export GPU_CHECK_WORK="$WORK" ECGTEXT_CACHE="$WORK/cache" HF_HUB_OFFLINE=1

FLAG=()
if [ "$DRY" = 1 ]; then
  FLAG=(--dry-run)
  echo "gpu_check: dry run on the CPU (tiny model)"
else
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: no CUDA GPU here (nvidia-smi / torch.cuda); run with --dry-run on a CPU machine" >&2
    exit 1
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
"$PY" -c "import torch, ecgtext; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, ecgtext {ecgtext.__version__}')"

START=$(date +%s)
FAILED=()
SCALE=1
[ "$DRY" = 1 ] && SCALE=4  # limits are for the GPU machine; a shared 2-core CPU imports and runs slower
step() {  # step NAME LIMIT_S command...
  local name="$1" limit=$(( $2 * SCALE )); shift 2
  local t0; t0=$(date +%s)
  echo "== $name (limit ${limit} s)"
  if timeout "$limit" "$@"; then
    echo "== $name: ok in $(( $(date +%s) - t0 )) s"
  else
    echo "== $name: FAILED (exit $?) after $(( $(date +%s) - t0 )) s" >&2
    FAILED+=("$name")
  fi
}

step agreement 90 "$PY" benchmarks/gpu_check.py agreement "${FLAG[@]}" --out "$OUT"
step embed 200 "$PY" benchmarks/gpu_check.py embed "${FLAG[@]}" --out "$OUT"
if [ "$DRY" = 1 ]; then
  step pretrain 120 "$PY" benchmarks/bench_train.py --arch dbeta-tiny --cpu-batch 2 --cpu-steps 1
else
  step pretrain 120 "$PY" benchmarks/bench_train.py --skip-cpu --gpu-batch 32 --gpu-steps 8 --gpu-precision bf16
fi
step ddp 60 "$PY" benchmarks/gpu_check.py ddp "${FLAG[@]}" --out "$OUT"

echo "gpu_check: $(( $(date +%s) - START )) s in all; results in $OUT/"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "gpu_check: failed steps: ${FAILED[*]}" >&2
  exit 1
fi
echo "gpu_check: all steps passed"
