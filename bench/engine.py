#!/usr/bin/env python3
"""Engine throughput and latency by batch size, JSON to stdout.

    python -m bench.engine --model tiny                     # CPU, the tiny profile
    python -m bench.engine --model F5TTS_v1_Base --random-weights --device cuda

``--random-weights`` builds the full-size architecture with random weights (no download), which times
exactly like the released model.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from engine import Engine, EngineConfig, SynthesisItem, Voice
from engine.loader import build_cfm, load_vocab
from engine.models import model_spec
from engine.tiny import randomize_
from engine.voices import default_voice_file

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Streaming speech should start quickly.",
    "Batching many requests together keeps the accelerator busy and the queue short.",
    "Hello there!",
    "Every request has its own seed, voice and text.",
    "Latency budgets are measured at the ninety fifth percentile.",
    "Short.",
    "One more sentence of moderate length for the mix.",
]


def random_weights_checkpoint(model: str, directory: Path) -> Path:
    from safetensors.torch import save_file

    vocab, size = load_vocab("")
    cfm = build_cfm(model_spec(model), vocab, size)
    randomize_(cfm, torch.Generator().manual_seed(0))
    path = directory / "random.safetensors"
    save_file({k: v.contiguous() for k, v in cfm.state_dict().items()}, str(path))
    return path


def reference_voice(engine: Engine, seconds: float) -> Voice:
    import soundfile as sf

    data, rate = sf.read(str(default_voice_file()), dtype="float32")
    import io

    buf = io.BytesIO()
    sf.write(buf, data[: int(seconds * rate)], rate, format="WAV")
    return engine.prepare_voice("bench", buf.getvalue(), "Some call me nature, others call me mother nature.")


def measure(engine: Engine, voice: object, batch: int, nfe: int, repeats: int) -> dict[str, float]:
    items = [SynthesisItem(TEXTS[i % len(TEXTS)], voice, nfe_steps=nfe, seed=i) for i in range(batch)]  # type: ignore[arg-type]
    engine.synthesize(items)  # warm this shape
    walls, audio = [], 0.0
    for _ in range(repeats):
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        waves = engine.synthesize(items)
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - started)
        audio = sum(len(w) for w in waves) / engine.sample_rate
    wall = statistics.median(walls)
    return {
        "batch_size": batch,
        "batch_seconds": round(wall, 4),
        "per_item_latency_s": round(wall, 4),
        "per_item_cost_s": round(wall / batch, 4),
        "audio_seconds": round(audio, 3),
        "throughput_audio_s_per_s": round(audio / wall, 3),
        "rtf": round(wall / audio, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--random-weights", action="store_true", help="full-size architecture, random weights")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16")
    parser.add_argument("--nfe-steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--voice-seconds", type=float, default=1.0)
    parser.add_argument("--vocoder-path", default="", help="Vocos dir; with --random-weights the tiny one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ckpt, vocoder = "", args.vocoder_path
        if args.random_weights:
            ckpt = str(random_weights_checkpoint(args.model, Path(tmp)))
            if not vocoder:  # full-size Vocos architecture with random weights
                vocoder = str(full_vocos(Path(tmp)))
        engine = Engine.load(EngineConfig(model=args.model, device=args.device, dtype=args.dtype,
                                          ckpt_file=ckpt, vocoder_path=vocoder))
        voice = reference_voice(engine, args.voice_seconds)
        rows = [measure(engine, voice, int(b), args.nfe_steps, args.repeats) for b in args.batch_sizes.split(",")]
    base = rows[0]["per_item_cost_s"]
    for row in rows:
        row["cost_vs_batch1"] = round(row["per_item_cost_s"] / base, 3)
    report = {
        "model": args.model, "random_weights": args.random_weights, "device": str(engine.device),
        "dtype": str(engine.dtype).removeprefix("torch."), "nfe_steps": args.nfe_steps,
        "voice_seconds": args.voice_seconds, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.machine(), "load_seconds": round(engine.load_seconds, 3), "results": rows,
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


def full_vocos(directory: Path) -> Path:
    """charactr/vocos-mel-24khz's architecture with random weights."""
    import yaml
    from vocos import Vocos

    from engine.tiny import VOCOS_TINY_CONFIG

    config = json.loads(json.dumps(VOCOS_TINY_CONFIG))
    config["backbone"]["init_args"].update({"dim": 512, "intermediate_dim": 1536, "num_layers": 8})
    config["head"]["init_args"]["dim"] = 512
    root = directory / "vocos"
    root.mkdir()
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    vocoder = Vocos.from_hparams(str(root / "config.yaml"))
    randomize_(vocoder, torch.Generator().manual_seed(1))
    torch.save(vocoder.state_dict(), root / "pytorch_model.bin")
    return root


if __name__ == "__main__":
    sys.exit(main())
