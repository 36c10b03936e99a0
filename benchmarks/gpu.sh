#!/usr/bin/env bash
# One-GPU check and benchmark, under 10 minutes (each step has its own time limit):
#   1. pytest -m gpu                       (GPU tests; TensorRT ones skip where tensorrt is missing)
#   2. eager PyTorch per clip              (fp32 and fp16 autocast, CUDA graphs off/on, H2D/D2H apart)
#   3. TensorRT fp16 / int8 build + bench  (only where `import tensorrt` works)
# Writes benchmarks/results/gpu/<stamp>/gpu.json and gpu.md. Needs no network and no package
# registry: on a machine with PyTorch+CUDA but no TensorRT it records the eager rows and says why
# the TensorRT rows are missing.
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
OUT=${OUT:-benchmarks/results/gpu/$(date -u +%Y%m%d-%H%M%S)}
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
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$*" >> "$STEPS"
  tail -n 3 "$OUT/$name.log"
  return $rc
}

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "gpu.sh: torch sees no CUDA device"; exit 2; }

step pytest_gpu 240 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
step eager 150 "$PY" benchmarks/gpu_eager.py --config "$CONFIG" --size "$SIZE" --actors "$ACTORS" \
  --iters "$ITERS" --out "$OUT/eager.json"

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
        --iters 20 --no-flops --out "$WORK/bench" --force --format json
    fi
  fi
else
  echo "tensorrt does not import here: eager rows only (see $OUT/tensorrt_import.log)"
fi

"$PY" benchmarks/gpu_report.py "$OUT"
echo "wrote $OUT/gpu.json and $OUT/gpu.md"
