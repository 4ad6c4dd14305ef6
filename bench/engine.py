#!/usr/bin/env python3
"""Engine throughput and latency by batch size, JSON to stdout.

    python -m bench.engine --model tiny                     # CPU, the tiny profile
    python -m bench.engine --model F5TTS_v1_Base --random-weights --device cuda

``--random-weights`` builds the full-size architecture with random weights (no download), which times
exactly like the released model.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from bench.common import add_engine_args, int_list, parser, print_json
from bench.models import TEXTS, load_engine, reference_voice, timed
from engine import Engine, SynthesisItem, Voice


def measure(engine: Engine, voice: Voice, batch: int, nfe: int, repeats: int) -> dict[str, float]:
    items = [SynthesisItem(TEXTS[i % len(TEXTS)], voice, nfe_steps=nfe, seed=i) for i in range(batch)]
    waves = engine.synthesize(items)  # warm this shape
    audio = sum(len(w) for w in waves) / engine.sample_rate
    walls = [timed(engine, lambda: engine.synthesize(items)) for _ in range(repeats)]
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
    cli = parser(__doc__)
    add_engine_args(cli, dtype=True)
    cli.add_argument("--batch-sizes", type=int_list, default=[1, 2, 4, 8, 16])
    cli.add_argument("--repeats", type=int, default=3)
    cli.add_argument("--voice-seconds", type=float, default=1.0)
    cli.add_argument("--vocoder-path", default="", help="Vocos dir; with --random-weights the tiny one")
    return report(cli.parse_args())


def report(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        engine = load_engine(args, Path(tmp))
        voice = reference_voice(engine, args.voice_seconds)
        rows = [measure(engine, voice, b, args.nfe_steps, args.repeats) for b in args.batch_sizes]
    base = rows[0]["per_item_cost_s"]
    for row in rows:
        row["cost_vs_batch1"] = round(row["per_item_cost_s"] / base, 3)
    result = {
        "model": args.model, "random_weights": args.random_weights, "device": str(engine.device),
        "dtype": str(engine.dtype).removeprefix("torch."), "nfe_steps": args.nfe_steps,
        "voice_seconds": args.voice_seconds, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.machine(), "load_seconds": round(engine.load_seconds, 3), "results": rows,
    }
    print_json(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
