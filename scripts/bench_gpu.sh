#!/usr/bin/env bash
# One-shot GPU benchmark (at most 7.7 min: every step has its own limit): engine cost by batch size, the
# batch policies under open and closed load, and the server's own overhead, on the full-size F5TTS_v1_Base
# architecture with random weights (no hub access needed; random weights time like the released ones).
# Results land in out/gpu/.
#
#   bash scripts/bench_gpu.sh            # MODEL=F5TTS_v1_Base DEVICE=cuda by default
#
# bench.server has no --random-weights (it loads through Settings, which would fetch the released
# checkpoint), so it runs on the tiny profile here: its figures are the server's overhead, not the model's.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MODEL=${MODEL:-F5TTS_v1_Base}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"

"$PY" - <<'PYEOF' | tee "$OUT/env.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
PYEOF

step() {  # step NAME SECONDS CMD...: run one bench with its own time limit; a failure does not stop the rest
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)" >&2
    local started=$SECONDS
    if timeout "$limit" "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"; then
        echo "   ok in $((SECONDS - started)) s -> $OUT/$name.json" >&2
    else
        echo "   FAILED ($?) after $((SECONDS - started)) s; tail of $OUT/$name.log:" >&2
        tail -5 "$OUT/$name.log" >&2
    fi
}

# 1. Engine: seconds per batch by size at 32 steps, default-length (5.3 s) and 1 s references (~1.5 min).
step engine_5s 100 "$PY" -m bench.engine --model "$MODEL" --random-weights --device "$DEVICE" \
    --batch-sizes 1,2,4,8,16,32 --nfe-steps 32 --repeats 3 --voice-seconds 5.3
step engine_1s 60 "$PY" -m bench.engine --model "$MODEL" --random-weights --device "$DEVICE" \
    --batch-sizes 1,4,16,32 --nfe-steps 32 --repeats 3 --voice-seconds 1.0

# 2. Scheduler: fill vs latency policy, open loop at 0.3-1.2 of capacity and 8 closed-loop clients (~3.5 min).
step scheduler 240 "$PY" -m bench.scheduler --model "$MODEL" --random-weights --device "$DEVICE" \
    --nfe-steps 32 --phase-s 10 --max-requests 200 --closed-requests 4 --out "$OUT/bench_scheduler"

# 3. Server overhead (tiny profile on the GPU, see above) (~1 min).
step server 60 "$PY" -m bench.server --model tiny --device "$DEVICE" --repeats 10

echo "done: $(ls "$OUT")" >&2
