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

import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from bench.common import add_engine_args, int_list, parser, print_json
from bench.models import TEXTS, load_engine, reference_voice, timed
from engine import Engine, SynthesisItem, Voice
from engine.step_sampler import StepSampler

CLIP_TRANSCRIPT = "Some call me"  # what the first second of the default voice says


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
    cli = parser(__doc__)
    add_engine_args(cli, nfe_steps=16, dtype=True)
    cli.add_argument("--active", type=int_list, default=[1, 2, 4, 8])
    cli.add_argument("--steps", type=int, default=5, help="timed steps per active count (median)")
    cli.add_argument("--short", action="store_true", help="first-chunk-like texts only (small passes)")
    args = cli.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        engine = load_engine(args, Path(tmp))
        voices = {"1s": reference_voice(engine, 1.0, CLIP_TRANSCRIPT), "default": engine.default_voice()}
        texts = SHORT_TEXTS if args.short else TEXTS
        results = {name: [measure(engine, voice, n, args.steps, args.nfe_steps, texts)
                          for n in args.active] for name, voice in voices.items()}
    report = {"model": args.model, "random_weights": args.random_weights, "device": str(engine.device),
              "dtype": str(engine.dtype).removeprefix("torch."), "nfe_steps": args.nfe_steps,
              "threads": torch.get_num_threads(), "results": results}
    print_json(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
