"""Batcher wiring for ``bench.scheduler``: each policy's batcher, built, seeded and started on the
in-process engine, and the observers that record batch (or step) sizes.

Columns: ``fill`` and ``latency`` (request mode: whole batches, seeded from the engine's timed warm-up
passes) and ``step`` (``--scheduler step``: items join between flow steps; its per-step curve seeded by
timing single step passes, as it learns live). All share the one model thread the engine was loaded on
(``engine.threads``: a second thread running torch slows every pass on CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from batching import BatcherConfig, MicroBatcher, NullObserver, StepBatcher, policy
from bench.emulated import EmulatedEngine
from engine import Engine, SynthesisItem, Voice, warmup_batch_sizes
from engine.step_adapter import EngineStepModel

Batcher = MicroBatcher[SynthesisItem, np.ndarray] | StepBatcher[SynthesisItem, np.ndarray]
POLICIES = ("fill", "latency", "step")
EXTRA = ("latency-no-margin",)
"""Columns on request only: ``latency`` with admission's learned margin switched off (the margin's A/B)."""
WARM_TEXTS = ("Warming up the model.", "The quick brown fox jumps over the lazy dog near the river.")


class BatchSizes(NullObserver):
    """Observer that keeps the size of every batch (step mode: of every pass) and the seconds it ran."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.busy_s = 0.0

    def batch_done(self, size: int, seconds: float, padded_frames: int, real_frames: int) -> None:
        self.sizes.append(size)
        self.busy_s += seconds


class SizeLog(BatchSizes):
    """Observer that keeps the batch sizes of the current phase, and how long the model was busy in it."""

    def take(self) -> dict[str, Any]:
        sizes, busy, self.sizes, self.busy_s = self.sizes, self.busy_s, [], 0.0
        return {"batches": len(sizes), "mean_batch_size": round(float(np.mean(sizes)), 2) if sizes else None,
                "model_busy_s": round(busy, 2)}


def policies(args: argparse.Namespace) -> dict[str, BatcherConfig]:
    common = {"max_batch_size": args.max_batch_size, "max_queue": 1024, "queue_timeout_s": 120.0}
    latency = BatcherConfig(policy="latency", admission=not args.no_admission, admission_ttfa_s=args.budget, **common)
    configs = {"fill": BatcherConfig(policy="fill", **common), "latency": latency,
               "step": dataclasses.replace(latency, scheduler="step"), "latency-no-margin": latency}
    return {name: configs[name] for name in args.policies}


async def make_batchers(engine: Engine, voice: Voice, args: argparse.Namespace, thread: ThreadPoolExecutor,
                        logs: dict[str, SizeLog]) -> tuple[dict[str, Batcher], list[tuple[int, int, float]]]:
    """Every policy's batcher, seeded and started: request mode from the engine's timed warm-up passes,
    step mode by timing single step passes (what it will learn from live); all on ``thread``."""
    timings = await asyncio.get_running_loop().run_in_executor(
        thread, engine.warmup, warmup_batch_sizes(args.max_batch_size), 2, voice, args.nfe_steps)
    batchers: dict[str, Batcher] = {}
    for name, config in policies(args).items():
        if config.scheduler == "step":
            model = engine.step_model() if isinstance(engine, EmulatedEngine) else EngineStepModel(engine)
            step = StepBatcher(model, config, logs[name], seed_steps=args.nfe_steps,
                               executor=thread)  # the one model thread (engine.threads)
            items = [SynthesisItem(WARM_TEXTS[n % 2], voice, nfe_steps=args.nfe_steps, seed=n)
                     for n in range(args.max_batch_size)]
            await step.seed_step_costs(items, warmup_batch_sizes(args.max_batch_size))
            batchers[name] = step
        else:
            batcher = batchers[name] = MicroBatcher(engine, config, logs[name], executor=thread)
            batcher.seed_costs(timings)
            if name == "latency-no-margin":  # never enough misses for a margin: the prediction as it stands
                batcher.planner.misses = policy.Misses(min_samples=sys.maxsize)
        await batchers[name].start()
    return batchers, timings


def predicted(batcher: Batcher, sizes: list[int]) -> dict[int, Any]:
    """Predicted seconds per batch (request mode) or per step pass (step mode), per size."""
    return batcher.costs.table(sizes)
