#!/usr/bin/env bash
# ACAR R50 (seeded random weights: latency does not depend on them) at 32x256x341, 8 actors, 2 threads:
# eager fp32, ONNX Runtime fp32 / int8, OpenVINO fp32 / bf16 / int8 (default method: our QDQ graph),
# in ONE interleaved `acar-deploy bench` run, so every ratio to eager comes from the same minutes.
# EXTRA="eager-bf16" adds the eager bf16 autocast row. Off by default: on a CPU without native bf16
# PyTorch emulates it, and a run here with that row, --actors 8,1,32 and the FLOP count was stopped
# after 20 minutes (without them the bench took 1 min 45 s).
# Exports and engines go under $WORK (default ~/.cache/acar-deploy/r50-cpu); results under $RESULTS.
#     benchmarks/r50_cpu_engines.sh          # ~10 min on 2 idle cores (int8 builds ~4 min each)
set -euo pipefail
BIN=${BIN:-.venv/bin}
WORK=${WORK:-$HOME/.cache/acar-deploy/r50-cpu}
RESULTS=${RESULTS:-benchmarks/results/r50-cpu-engines}
ITERS=${ITERS:-4}
EXTRA=${EXTRA:-}
mkdir -p "$WORK"
[ -f "$WORK/export/manifest.json" ] || "$BIN/acar-deploy" export --config acar_r50 --size 256x341 --out "$WORK/export"
build() {  # runtime precision [extra build options]
  local out="$WORK/engines/r50-$1-$2"
  [ -f "$out/engine.json" ] || "$BIN/acar-deploy" build "$WORK/export" --runtime "$1" --precision "$2" --out "$out" "${@:3}"
}
build ort fp32
build ort int8
build openvino fp32
build openvino bf16
build openvino int8
"$BIN/acar-deploy" bench "$WORK"/engines/r50-ort-fp32 "$WORK"/engines/r50-ort-int8 "$WORK"/engines/r50-openvino-fp32 \
  "$WORK"/engines/r50-openvino-bf16 "$WORK"/engines/r50-openvino-int8 $EXTRA \
  --config acar_r50 --size 256x341 --actors 8 --threads 2 --warmup 1 --iters "$ITERS" --no-flops --out "$RESULTS" --force
