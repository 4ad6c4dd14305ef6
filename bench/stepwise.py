#!/usr/bin/env python3
"""Seconds per flow step of the stepwise sampler by active count, beside a whole-batch run; JSON to stdout.

    python -m bench.stepwise                                 # CPU, tiny profile, 1 s and default voice
    python -m bench.stepwise --model F5TTS_v1_Base --random-weights --device cuda

A step-level scheduler costs a step with these figures: ``step_s`` is one ``StepSampler.step()`` with
``active`` items (all with CFG, so 2×active DiT rows); ``batch_step_s`` is ``Engine.synthesize`` of the
same items divided by its step count (the request mode's cost per step, vocoder included);
``finish_s`` is the batched vocoder pass for all of them.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

from bench.engine import TEXTS, full_vocos, random_weights_checkpoint
from engine import Engine, EngineConfig, SynthesisItem, Voice
from engine.step_sampler import StepSampler
from engine.voices import default_voice_file

CLIP_TRANSCRIPT = "Some call me"  # what the first second of the default voice says


def clip_voice(engine: Engine, seconds: float) -> Voice:
    data, rate = sf.read(str(default_voice_file()), dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, data[: int(seconds * rate)], rate, format="WAV")
    return engine.prepare_voice("clip", buf.getvalue(), CLIP_TRANSCRIPT)


def timed(engine: Engine, fn: Callable[[], Any]) -> float:
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


SHORT_TEXTS = ("Sure, I can help with that.", "Thanks for calling. How can I help you today?",
               "Your order has shipped and should arrive on Thursday between nine and five.")
"""First-chunk-like texts (the load test's short replies): small passes, where per-step overhead shows."""


def measure(engine: Engine, voice: Voice, active: int, steps: int, nfe: int,
            texts: Sequence[str] = TEXTS) -> dict[str, float]:
    items = [SynthesisItem(texts[i % len(texts)], voice, nfe_steps=nfe, seed=i) for i in range(active)]
    stepper = StepSampler(engine)
    for i, item in enumerate(items):
        stepper.add(item, i)
    rows, frames = stepper.pass_cost()
    stepper.step()  # warm this shape
    walls = [timed(engine, stepper.step) for _ in range(steps)]
    while stepper.active:
        stepper.step()
    finish = timed(engine, lambda: stepper.finish(list(range(active))))
    batch = timed(engine, lambda: engine.synthesize(items)) / nfe
    step = statistics.median(walls)
    return {"active": active, "rows": rows, "padded_frames": frames, "step_s": round(step, 5),
            "step_s_per_item": round(step / active, 5), "batch_step_s": round(batch, 5),
            "finish_s": round(finish, 5)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--random-weights", action="store_true", help="full-size architecture, random weights")
    parser.add_argument("--active", default="1,2,4,8")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per active count (median)")
    parser.add_argument("--nfe-steps", type=int, default=16)
    parser.add_argument("--short", action="store_true", help="first-chunk-like texts only (small passes)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ckpt, vocoder = "", ""
        if args.random_weights:
            ckpt, vocoder = str(random_weights_checkpoint(args.model, Path(tmp))), str(full_vocos(Path(tmp)))
        engine = Engine.load(EngineConfig(model=args.model, device=args.device, dtype=args.dtype,
                                          ckpt_file=ckpt, vocoder_path=vocoder))
        voices = {"1s": clip_voice(engine, 1.0), "default": engine.default_voice()}
        texts = SHORT_TEXTS if args.short else TEXTS
        results = {name: [measure(engine, voice, int(n), args.steps, args.nfe_steps, texts)
                          for n in args.active.split(",")] for name, voice in voices.items()}
    report = {"model": args.model, "random_weights": args.random_weights, "device": str(engine.device),
              "dtype": str(engine.dtype).removeprefix("torch."), "nfe_steps": args.nfe_steps,
              "threads": torch.get_num_threads(), "results": results}
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
