#!/usr/bin/env python3
"""Request scheduler vs step scheduler, side by side in one process on the in-process engine; JSON to out/.

    OMP_NUM_THREADS=2 python scripts/bench_step.py --requests 24 --repeats 2

Each request is a two-chunk stream (its second chunk is submitted once the first has started, as
``server.core.stream`` does): TTFA is the first chunk's result, latency the second's. Capacity is the
request scheduler's saturated throughput (a burst of ``--requests`` streams); open-loop Poisson arrivals at
each ``--loads`` fraction of it (the same arrival times for both modes), modes interleaved per repeat.
Throughput at saturation: the same burst through each mode. Both batchers are seeded from one warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batching import BatcherConfig, MicroBatcher, StepBatcher
from engine import Engine, EngineConfig, SynthesisItem, Voice, warmup_batch_sizes
from engine.step_model import EngineStepModel
from scripts.bench_engine import TEXTS
from scripts.bench_stepwise import clip_voice

Batcher = MicroBatcher[SynthesisItem, np.ndarray] | StepBatcher[SynthesisItem, np.ndarray]
MODES = ("request", "step")


def make(mode: str, engine: Engine, config: BatcherConfig, seed: list[tuple[int, int, float]], nfe: int) -> Batcher:
    batcher: Batcher
    if mode == "step":
        batcher = StepBatcher(EngineStepModel(engine), config, seed_steps=nfe)
    else:
        batcher = MicroBatcher(engine, config)
    batcher.seed_costs(seed)
    return batcher


async def stream(batcher: Batcher, voice: Voice, n: int, nfe: int) -> tuple[float, float]:
    """(TTFA, latency) of one two-chunk stream."""
    t0 = time.perf_counter()
    chunks = [SynthesisItem(TEXTS[(2 * n + k) % len(TEXTS)], voice, nfe_steps=nfe, seed=n * 2 + k) for k in (0, 1)]
    first = batcher.submit(chunks[0], first=True, request_id=str(n))
    await first.started.wait()
    second = batcher.submit(chunks[1], request_id=str(n))
    await first.future
    ttfa = time.perf_counter() - t0
    await second.future
    return ttfa, time.perf_counter() - t0


async def run(batcher: Batcher, voice: Voice, arrivals: list[float], nfe: int) -> dict[str, Any]:
    """Streams started at ``arrivals`` (seconds from now); figures over all of them."""
    await batcher.start()
    started = time.perf_counter()

    async def one(n: int, at: float) -> tuple[float, float]:
        await asyncio.sleep(max(0.0, started + at - time.perf_counter()))
        return await stream(batcher, voice, n, nfe)

    results = await asyncio.gather(*(one(n, at) for n, at in enumerate(arrivals)))
    wall = time.perf_counter() - started
    await batcher.close()
    ttfa, latency = np.array([r[0] for r in results]), np.array([r[1] for r in results])
    return {"ttfa_p50": _q(ttfa, 50), "ttfa_p95": _q(ttfa, 95), "latency_p50": _q(latency, 50),
            "latency_p95": _q(latency, 95), "throughput_rps": round(len(arrivals) / wall, 3), "n": len(arrivals)}


def _q(values: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values, q)), 3)


def poisson(rate: float, count: int, seed: int) -> list[float]:
    rng, at, times = random.Random(seed), 0.0, []
    for _ in range(count):
        at += rng.expovariate(rate)
        times.append(at)
    return times


def bench_voice(engine: Engine, voice: Voice, args: argparse.Namespace) -> dict[str, Any]:
    config = BatcherConfig(max_batch_size=args.max_batch_size, queue_timeout_s=600.0)
    seed = engine.warmup(warmup_batch_sizes(args.max_batch_size), 2, voice, args.nfe)
    burst = [0.0] * args.requests
    capacity = asyncio.run(run(make("request", engine, config, seed, args.nfe), voice, burst, args.nfe))
    rate = capacity["throughput_rps"]
    out: dict[str, Any] = {"capacity_rps": rate, "saturation": {m: [] for m in MODES},
                           "open": {str(load): {m: [] for m in MODES} for load in args.loads}}
    for rep in range(args.repeats):
        order = MODES if rep % 2 == 0 else MODES[::-1]  # interleaved: drift hits both modes alike
        for load in args.loads:
            arrivals = poisson(load * rate, args.requests, seed=1000 * rep + int(100 * load))
            for mode in order:
                result = asyncio.run(run(make(mode, engine, config, seed, args.nfe), voice, arrivals, args.nfe))
                out["open"][str(load)][mode].append(result)
                print(voice.id, rep, load, mode, result, file=sys.stderr, flush=True)
        for mode in order:
            result = asyncio.run(run(make(mode, engine, config, seed, args.nfe), voice, burst, args.nfe))
            out["saturation"][mode].append(result)
            print(voice.id, rep, "burst", mode, result, file=sys.stderr, flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=24, help="streams per run")
    parser.add_argument("--loads", type=float, nargs="+", default=[0.6, 0.9])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--nfe", type=int, default=16)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--voices", nargs="+", default=["1s", "default"])
    parser.add_argument("--out", default="out/bench_step.json")
    args = parser.parse_args()
    engine = Engine.load(EngineConfig(model="tiny", device="cpu"))
    voices = {"1s": lambda: clip_voice(engine, 1.0), "default": engine.default_voice}
    report = {"nfe_steps": args.nfe, "requests": args.requests, "threads": torch.get_num_threads(),
              "max_batch_size": args.max_batch_size,
              "voices": {name: bench_voice(engine, voices[name](), args) for name in args.voices}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
