#!/usr/bin/env bash
# Container entrypoint. One variable picks the worker kind:
#   TTS_MODE=queue  (default; alias runpod): the RunPod serverless queue handler, python -m server.runpod_worker
#   TTS_MODE=server (alias http): the HTTP/WebSocket server, python -m server, for RunPod load-balancing
#                   endpoints and Kubernetes. RunPod names the ports in PORT and PORT_HEALTH; they are mapped
#                   onto TTS_PORT and TTS_HEALTH_PORT unless those are set explicitly.
#
# Logs what an operator needs when a worker fails to start: which python3, free disk, whether the network
# volume is mounted and writable, which GPU is visible. Then (optionally) prepares a venv on the volume,
# and execs python3. It calls `python3` explicitly: images without a `python` alias killed every
# container of the system this grew from with exit code 1.
set -euo pipefail

VOLUME="${TTS_VOLUME_PATH:-/runpod-volume}"
REQUIRE_VOLUME="${TTS_REQUIRE_VOLUME:-0}"
NETWORK_VENV="${TTS_NETWORK_VENV:-0}"
MODE="${TTS_MODE:-queue}"
APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

log() { printf '%s start.sh: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

PYTHON="$(command -v python3 || true)"
[ -n "$PYTHON" ] || die "python3 is not on PATH ($PATH)"
log "python3: $PYTHON ($("$PYTHON" --version 2>&1))"
log "disk /: $(df -Ph / | awk 'NR==2 {print $4 " free of " $2}')"

if [ -d "$VOLUME" ]; then
    log "volume $VOLUME: mounted, $(df -Ph "$VOLUME" | awk 'NR==2 {print $4 " free of " $2}')"
    if probe="$(mktemp "$VOLUME/.write-test.XXXXXX" 2>/dev/null)"; then
        rm -f "$probe"
        VOLUME_WRITABLE=1
        log "volume $VOLUME: writable"
    else
        VOLUME_WRITABLE=0
        log "volume $VOLUME: NOT writable by uid $(id -u)"
    fi
else
    VOLUME_WRITABLE=0
    log "volume $VOLUME: not mounted"
    if [ "$REQUIRE_VOLUME" = "1" ]; then
        die "network volume $VOLUME is required (TTS_REQUIRE_VOLUME=1) but is not mounted"
    fi
    case "${TTS_VOICES_DIR:-}" in
        "$VOLUME"/*)
            log "voices: $TTS_VOICES_DIR is on the missing volume; keeping voices in memory only"
            export TTS_VOICES_DIR="" ;;
    esac
fi

if command -v nvidia-smi >/dev/null 2>&1; then
    gpus="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true)"
    log "gpu: ${gpus:-nvidia-smi found no GPU}"
else
    log "gpu: nvidia-smi not found (no NVIDIA GPU visible; the model will run on CPU unless TTS_DEVICE says)"
fi

# Weights baked into the image (docker build --build-arg BAKE_MODEL=1) are used unless TTS_* says otherwise.
if [ -z "${TTS_CKPT_FILE:-}" ] && [ -f /models/f5/F5TTS_v1_Base/model_1250000.safetensors ]; then
    export TTS_CKPT_FILE=/models/f5/F5TTS_v1_Base/model_1250000.safetensors TTS_VOCODER_PATH=/models/vocos
    log "weights: baked into the image (/models)"
fi

# Model weights: cached on the network volume when it is writable, so only the first worker downloads.
if [ -z "${HF_HOME:-}" ] && [ "$VOLUME_WRITABLE" = "1" ]; then
    export HF_HOME="$VOLUME/hf"
fi
log "HF_HOME: ${HF_HOME:-default (~/.cache/huggingface)}"

if [ "$NETWORK_VENV" = "1" ]; then
    [ "$VOLUME_WRITABLE" = "1" ] || die "TTS_NETWORK_VENV=1 needs a writable volume at $VOLUME"
    log "preparing venv on the volume"
    "$PYTHON" "$APP_DIR/deploy/runpod/setup_network_venv.py" --venv "$VOLUME/venv" \
        --lock "$APP_DIR/constraints.txt" --project "$APP_DIR" || die "network venv setup failed"
    PYTHON="$VOLUME/venv/bin/python3"
fi

cd "$APP_DIR"
case "$MODE" in
    queue|runpod)
        log "exec $PYTHON -m server.runpod_worker $*"
        exec "$PYTHON" -m server.runpod_worker "$@" ;;
    server|http)
        # Explicit TTS_* settings win; RunPod's PORT/PORT_HEALTH come next; 8000 and no health port last.
        export TTS_PORT="${TTS_PORT:-${PORT:-8000}}" TTS_HEALTH_PORT="${TTS_HEALTH_PORT:-${PORT_HEALTH:-0}}"
        log "ports: main $TTS_PORT, health $TTS_HEALTH_PORT (0 = /ping on the main port only)"
        log "exec $PYTHON -m server $*"
        exec "$PYTHON" -m server "$@" ;;
    *) die "TTS_MODE must be queue (alias runpod) or server (alias http), not '$MODE'" ;;
esac
