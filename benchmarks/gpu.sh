#!/usr/bin/env bash
# One-GPU check and benchmark, under 10 minutes (each step has its own time limit):
#   1. pytest -m gpu                       (GPU tests; TensorRT ones skip where tensorrt is missing)
#   2. eager PyTorch per call              (fp32, fp16 and bf16 autocast, CUDA graphs off/on, 1 and 4
#                                           clips per call, H2D/D2H apart, logits vs a float64 CPU run)
#   3. TensorRT fp16 / int8 build + bench  (only where `import tensorrt` works)
#   4. optional, CPU only: BANK_SEEDS="0 1 2 ..." runs benchmarks/bank_gain.py once per seed in
#      parallel (1 thread each, the demo's 12 head-only epochs), within BANK_LIMIT seconds (or until
#      the epoch second BANK_UNTIL)
# Writes benchmarks/results/gpu/<stamp>/gpu.json and gpu.md (or into $GPU_OUT). Needs no network and
# no package registry: on a machine with PyTorch+CUDA but no TensorRT it records the eager rows and
# says why the TensorRT rows are missing. Only the test files that hold GPU tests are collected, so
# a machine without OpenVINO or Triton's client still runs them.
#
#   benchmarks/gpu.sh                          # acar_r50 at 256x341, 8 actors
#   CONFIG=acar_tiny SIZE=64x64 benchmarks/gpu.sh   # a quick smoke run
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
CONFIG=${CONFIG:-acar_r50}
SIZE=${SIZE:-256x341}
ACTORS=${ACTORS:-8}
ITERS=${ITERS:-50}
BATCHES=${BATCHES:-1 4}
OUT=${GPU_OUT:-benchmarks/results/gpu/$(date -u +%Y%m%d-%H%M%S)}
WORK="$OUT/work"
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
STEPS="$OUT/steps.tsv"
: > "$STEPS"

step() {  # step NAME LIMIT_S CMD...: run with a time limit, log to $OUT/NAME.log, record rc and seconds
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name (limit ${limit}s): $*"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local flat="$*"; printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "${flat//$'\n'/ }" >> "$STEPS"
  tail -n 3 "$OUT/$name.log"
  return $rc
}

DEVICE=${DEVICE:-cuda}  # DEVICE=cpu: a smoke run of this script where there is no GPU (eager on the CPU)
if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "gpu.sh: torch sees no CUDA device (DEVICE=cpu runs a CPU smoke run)"; exit 2; }
fi

step machine 30 bash -c 'nvidia-smi; nproc; uptime; "$0" -c "import torch, onnxruntime as o; print(torch.__version__, \
torch.version.cuda, \"tf32 matmul\", torch.backends.cuda.matmul.allow_tf32, \"tf32 cudnn\", torch.backends.cudnn.allow_tf32, \
\"ort\", o.__version__, o.get_available_providers())"' "$PY"
# shellcheck disable=SC2046  # one word per file
step pytest_gpu 240 "$PY" -m pytest -q -m gpu -p no:cacheprovider $(grep -l "mark.gpu" tests/*.py)
# shellcheck disable=SC2086  # BATCHES is a list
step eager 200 "$PY" benchmarks/gpu_eager.py --config "$CONFIG" --size "$SIZE" --actors "$ACTORS" \
  --iters "$ITERS" --batches $BATCHES --device "$DEVICE" --out "$OUT/eager.json"

if "$PY" -c "import tensorrt" 2> "$OUT/tensorrt_import.log"; then
  CLI=("$PY" -m acar_deploy)
  if step export 120 "${CLI[@]}" export --config "$CONFIG" --size "$SIZE" --parts split --seed 0 --no-validate \
      --out "$WORK/export" --force; then
    ENGINES=()
    for precision in fp16 int8; do
      step "build_trt_$precision" 150 "${CLI[@]}" build "$WORK/export" --runtime trt --precision "$precision" \
        --out "$WORK/trt-$precision" --force && ENGINES+=("$WORK/trt-$precision")
    done
    if [ ${#ENGINES[@]} -gt 0 ]; then
      step bench_trt 120 "${CLI[@]}" bench "${ENGINES[@]}" --config "$CONFIG" --size "$SIZE" --actors "$ACTORS" \
        --iters 20 --no-flops --eager-device cuda --out "$WORK/bench" --force --format json
    fi
  fi
else
  echo "tensorrt does not import here: eager rows only (see $OUT/tensorrt_import.log)"
fi

if [ -n "${BANK_SEEDS:-}" ]; then
  # BANK_UNTIL (epoch seconds): end the seeds by then, whatever the earlier steps took
  [ -n "${BANK_UNTIL:-}" ] && BANK_LIMIT=$((BANK_UNTIL - $(date +%s)))
  mkdir -p "$WORK/bank" "$OUT/bank"
  # shellcheck disable=SC2016,SC2086  # the script is expanded by the inner bash; BANK_SEEDS is a list
  step bank_seeds "${BANK_LIMIT:-420}" bash -c 'py=$1; work=$2; shift 2; trap "kill \$(jobs -p) 2>/dev/null" TERM
    for s in "$@"; do
      (start=$SECONDS
       OMP_NUM_THREADS=1 "$py" benchmarks/bank_gain.py --out "$work/bank-runs/s$s" --seeds "$s" --extra-epochs 12 \
         > "$work/bank/seed$s.log" 2>&1 && cp "$work/bank-runs/s$s/seed$s/bank_gain.json" "$work/bank/seed$s.json"
       echo "seed $s: rc $? after $((SECONDS - start)) s" >> "$work/bank/seed$s.log") &
    done; wait; ls "$work"/bank/*.json' _ "$PY" "$WORK" $BANK_SEEDS
  cp "$WORK"/bank/*.json "$WORK"/bank/*.log "$OUT/bank/" 2>/dev/null
fi

"$PY" benchmarks/gpu_report.py "$OUT"
echo "wrote $OUT/gpu.json and $OUT/gpu.md"
