#!/usr/bin/env python3
"""Closed-loop clients against the micro-batcher + engine: throughput, latency, batch sizes.

    python -m bench.batching --model tiny --out out/bench_batching

For each max_batch_size (default 1 and 16) and concurrency (default 1, 4, 8, 16), ``concurrency``
clients each send ``--requests`` requests back to back. Prints JSON; writes ``<out>.json`` and
``<out>.png``. After each closed loop, the raw engine's throughput on the same items at the same batch
size is measured on the same worker thread, so the batcher's own overhead shows as ``vs_raw_engine``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from batching import BatcherConfig, MicroBatcher
from bench.batchers import BatchSizes
from bench.common import add_engine_args, figure, int_list, parser, percentile, print_json, save_png, write_json
from bench.models import TEXTS, load_engine, reference_voice
from engine import Engine, SynthesisItem, Voice
from engine.threads import model_executor


def item(voice: Voice, n: int, nfe: int) -> SynthesisItem:
    return SynthesisItem(TEXTS[n % len(TEXTS)], voice, nfe_steps=nfe, seed=n)


async def closed_loop(engine: Engine, voice: Voice, max_batch: int, concurrency: int, requests: int,
                      nfe: int, thread: ThreadPoolExecutor) -> dict[str, Any]:
    observer = BatchSizes()
    batcher: MicroBatcher[SynthesisItem, np.ndarray] = MicroBatcher(
        engine, BatcherConfig(max_batch_size=max_batch, max_wait_ms=10, max_queue=1024), observer, executor=thread)
    await batcher.start()
    # As the server does at startup: warm the worker thread's kernels at the batch size it will run.
    await batcher.call_in_worker(engine.synthesize, [item(voice, n, nfe) for n in range(max_batch)])
    latencies: list[float] = []
    audio = 0.0

    async def client(c: int) -> None:
        nonlocal audio
        for r in range(requests):
            started = time.perf_counter()
            wave = await batcher.run(item(voice, r * concurrency + c, nfe))  # same mix as the raw engine
            latencies.append(time.perf_counter() - started)
            audio += len(wave) / engine.sample_rate

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    wall = time.perf_counter() - started
    raw = await raw_engine(batcher, engine, voice, min(max_batch, concurrency), nfe, repeats=requests)
    await batcher.close()
    throughput = audio / wall
    return {
        "max_batch_size": max_batch, "concurrency": concurrency, "requests": len(latencies),
        "wall_s": round(wall, 3), "throughput_audio_s_per_s": round(throughput, 3),
        "latency_p50_s": percentile(latencies, 50), "latency_p95_s": percentile(latencies, 95),
        "mean_batch_size": round(statistics.mean(observer.sizes), 2), "batches": len(observer.sizes),
        "raw_engine_throughput": round(raw, 3), "vs_raw_engine": round(throughput / raw, 3),
    }


async def raw_engine(batcher: MicroBatcher[SynthesisItem, np.ndarray], engine: Engine, voice: Voice, batch: int,
                     nfe: int, repeats: int) -> float:
    """Audio seconds per wall second of engine.synthesize called directly on the same mix of items, on the
    same thread (this machine slows by 10-40 % when two threads' OpenMP teams take turns)."""
    audio, wall = 0.0, 0.0
    for r in range(repeats):
        items = [item(voice, r * batch + n, nfe) for n in range(batch)]
        started = time.perf_counter()
        waves = await batcher.call_in_worker(engine.synthesize, items)
        wall += time.perf_counter() - started
        audio += sum(len(w) for w in waves) / engine.sample_rate
    return audio / wall


async def paired_overhead(engine: Engine, voice: Voice, size: int, nfe: int, pairs: int,
                          thread: ThreadPoolExecutor) -> dict[str, Any]:
    """Batcher vs direct engine calls on the same items, alternated batch by batch so the machine's drift
    hits both alike: each pair is one round of ``size`` concurrent requests through the batcher and one
    direct ``synthesize`` of the same items on the same worker thread."""
    batcher: MicroBatcher[SynthesisItem, np.ndarray] = MicroBatcher(
        engine, BatcherConfig(max_batch_size=size, max_wait_ms=10, max_queue=1024), executor=thread)
    await batcher.start()
    batched_wall, raw_wall = 0.0, 0.0
    for p in range(pairs + 1):
        items = [item(voice, p * size + n, nfe) for n in range(size)]
        started = time.perf_counter()
        await asyncio.gather(*(batcher.run(i) for i in items))
        batched = time.perf_counter() - started
        started = time.perf_counter()
        await batcher.call_in_worker(engine.synthesize, items)
        raw = time.perf_counter() - started
        if p > 0:  # the first pair warms the thread
            batched_wall += batched
            raw_wall += raw
    await batcher.close()
    return {"batch": size, "pairs": pairs, "batcher_s": round(batched_wall, 3), "raw_engine_s": round(raw_wall, 3),
            "batcher_vs_raw_engine": round(raw_wall / batched_wall, 3)}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    fig, (left, right) = figure(1, 2, (11, 4))
    for max_batch in sorted({r["max_batch_size"] for r in rows}):
        sel = [r for r in rows if r["max_batch_size"] == max_batch]
        conc = [r["concurrency"] for r in sel]
        left.plot(conc, [r["throughput_audio_s_per_s"] for r in sel], marker="o", label=f"max batch {max_batch}")
        right.plot(conc, [r["latency_p50_s"] for r in sel], marker="o", label=f"p50, max batch {max_batch}")
        right.plot(conc, [r["latency_p95_s"] for r in sel], marker="x", ls="--", label=f"p95, max batch {max_batch}")
    left.set(xlabel="concurrent clients", ylabel="audio seconds per wall second", title="Throughput")
    right.set(xlabel="concurrent clients", ylabel="seconds", title="Request latency")
    save_png(fig, path, (left, right))


def main() -> int:
    cli = parser(__doc__)
    add_engine_args(cli, random_weights=False)
    cli.add_argument("--concurrency", type=int_list, default=[1, 4, 8, 16])
    cli.add_argument("--max-batch-sizes", type=int_list, default=[1, 16])
    cli.add_argument("--requests", type=int, default=4, help="requests per client")
    cli.add_argument("--pairs", type=int, default=6, help="alternated batcher/raw-engine batches")
    cli.add_argument("--out", default="out/bench_batching")
    args = cli.parse_args()

    thread = model_executor()  # load and every batcher on one thread, as the server does (engine.threads)
    engine = thread.submit(load_engine, args, Path(".")).result()
    voice = thread.submit(reference_voice, engine, 1.0).result()
    rows = []
    for max_batch in args.max_batch_sizes:
        for concurrency in args.concurrency:
            rows.append(asyncio.run(closed_loop(engine, voice, max_batch, concurrency, args.requests,
                                                args.nfe_steps, thread)))
            print(json.dumps(rows[-1]), file=sys.stderr)
    top = max(args.concurrency)
    by = {(r["max_batch_size"], r["concurrency"]): r for r in rows}
    summary: dict[str, Any] = {}
    big, small = max(by)[0], min(by)[0]
    if (big, top) in by and (small, top) in by:
        summary["speedup_at_top_concurrency"] = round(
            by[(big, top)]["throughput_audio_s_per_s"] / by[(small, top)]["throughput_audio_s_per_s"], 3)
        summary["paired"] = asyncio.run(paired_overhead(engine, voice, big, args.nfe_steps, args.pairs, thread))
    report = {"model": args.model, "device": str(engine.device), "nfe_steps": args.nfe_steps,
              "results": rows, "summary": summary}
    write_json(report, args.out)
    plot(rows, Path(args.out))
    print_json(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
