#!/usr/bin/env python3
"""Batch policies side by side under open (Poisson) and closed load, in process on the real engine.

    OMP_NUM_THREADS=1 python -m bench.scheduler --model tiny --nfe-steps 8 --out out/bench_scheduler
    OMP_NUM_THREADS=2 python -m bench.scheduler --nfe-steps 16 --max-batch-size 8 --loads 0.6,0.9,1.2

For each voice (the default 5.3 s one and a 1 s one), every policy gets its own batcher, seeded from the
same warm-up: ``fill`` (request mode, the old policy: fill every batch, bounded queue only), ``latency``
(request mode, cost-model batch sizes, admission control at ``--budget``) and ``step`` (``--scheduler
step``: items join between flow steps, its per-step curve seeded by timing single step passes, the same
admission). All share one model thread, the one the engine is loaded on (``engine.threads``; one runs at a
time); built in ``bench.batchers``. Each request is a stream as the server runs it: text from the load test's
mix, chunked, the first chunk submitted as ``first``, each next chunk once the previous one started. Then:

1. warm-up: the engine's timed warm-up passes seed the request policies' cost models alike (step: timed
   single step passes);
2. closed loop: ``--clients`` clients back to back, per policy (a refused request is retried after its hint);
3. unloaded, just before the open loops: every text alone, three times (the median); capacity = 1 / mean
   service time;
4. open loop: Poisson arrivals at ``--loads`` × capacity, the same arrival sequence for every policy,
   policies alternated in order from load to load (machine drift hits both alike), arrivals for
   ``--phase-s`` seconds (at most ``--max-requests``); plus two orders of single chunks simulated at the
   unloaded service times on the same arrivals (``bench.orders``): a perfect FIFO of whole requests
   (``fifo_singles_sim``, the reference the goals are stated against) and the deadline order without
   batching or mispredictions (``first_chunks_first_sim``: the oldest first chunk next unless a later chunk
   would be late; where request mode stands against the best its order can do on a model batching does
   not help); each figure's TTFA p95 also as a multiple of the unloaded TTFA and of the FIFO's; and the
   load the model really carried: the drawn arrivals' work at the unloaded times (``work_unloaded_s``,
   ``drawn_load``) beside the seconds each policy kept the model busy (``model_busy_s``,
   ``busy_x_unloaded``: on a shared CPU the same chunks run dearer under load than alone);
5. saturation: ``--burst`` requests arriving at once, per policy: requests/s is the saturated throughput.

Reports TTFA and latency p50/p95, requests/s, refusals, and stalls (a listener who plays each chunk as it
arrives hears silence when a later chunk is not ready as the previous one ends: ``stalled`` requests,
``stall_max_s``); writes ``<out>.json`` and ``<out>.png`` (TTFA p95
against load). Timings on a shared machine are noisy: repeat runs and quote ranges.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from batching import MicroBatcher, QueueFullError, StepBatcher, Ticket
from batching.playback import Playback
from bench import orders
from bench.batchers import EXTRA, POLICIES, SizeLog, make_batchers, policies
from bench.common import TEXT_MIX, add_engine_args, figure, parser, percentile, print_json, save_png, write_json
from bench.emulated import EmulatedEngine
from bench.models import load_engine, reference_voice
from engine import SAMPLE_RATE, Engine, SynthesisItem, Voice
from engine.threads import model_executor
from text.chunking import chunk_text

STALL_S = 0.01
"""A request counts as ``stalled`` when its listener would hear more than this much silence between chunks."""
Batcher = MicroBatcher[SynthesisItem, np.ndarray] | StepBatcher[SynthesisItem, np.ndarray]


@dataclass
class Sample:
    arrival: float
    ok: bool
    ttfa_s: float = 0.0
    latency_s: float = 0.0
    retry_after_s: float | None = None
    """Set when the first chunk was refused (queue_full): the server's retry hint."""
    stall_s: float = 0.0
    """Seconds a listener playing the audio from the first chunk's arrival would hear silence between chunks."""


@dataclass
class Workload:
    voice: Voice
    texts: list[list[str]]
    """Each text of the mix, chunked for this voice."""
    weights: list[int]
    nfe: int
    seconds: Callable[[SynthesisItem], float]
    """Audio seconds of an item, known before it runs (its playback deadline's arithmetic)."""
    whole: list[list[str]] | None = None
    """Each text chunked without a short first chunk (a newcomer whose first audio is late anyway,
    ``batching.Entry.on_time``); None: ``texts`` always."""

    def pick(self, rng: random.Random) -> int:
        return rng.choices(range(len(self.texts)), weights=self.weights)[0]

    def items(self, index: int, seed: int, short_first: bool = True) -> list[SynthesisItem]:
        chunks = self.texts[index] if short_first or self.whole is None else self.whole[index]
        return [SynthesisItem(c, self.voice, nfe_steps=self.nfe, seed=seed + n) for n, c in enumerate(chunks)]


async def stream(batcher: Batcher, work: Workload, index: int, seed: int, arrival: float) -> Sample:
    """One request as ``server.core.service`` and ``server.core.stream.Stream`` run it: admission's early
    check (``refuse_early``), which also says whether the first chunk is cut short; each chunk submitted
    with its playback deadline (``batching.playback``), moved as earlier chunks arrive; a refused first
    chunk fails the request; a later chunk waits for its predecessor to start (it is never refused)."""
    loop = asyncio.get_running_loop()
    clock = Playback(batcher.config.first_audio_s)
    tickets: list[Ticket[SynthesisItem]] = []
    done: dict[int, float] = {}
    try:
        entry = batcher.refuse_early()
    except QueueFullError as exc:
        return Sample(arrival, False, retry_after_s=exc.retry_after_ms / 1000)
    try:
        for n, item in enumerate(work.items(index, seed, short_first=entry.on_time)):
            if tickets:
                await tickets[-1].started.wait()
            length = work.seconds(item)
            _, deadline = clock.submit(loop.time(), length)
            entry.close()
            try:
                tickets.append(batcher.submit(item, first=n == 0, deadline=deadline))
            except QueueFullError as exc:
                return Sample(arrival, False, retry_after_s=exc.retry_after_ms / 1000)
            tickets[-1].future.add_done_callback(functools.partial(_arrived, clock, tickets, done, n, length))
        waves = await asyncio.gather(*(t.future for t in tickets))
    except Exception:  # a timeout or any failure is a failed request, like on the server
        return Sample(arrival, False)
    finally:
        entry.close()
    finished = [done[n] for n in range(len(waves))]
    return Sample(arrival, True, finished[0] - arrival, time.perf_counter() - arrival,
                  stall_s=stall([len(w) / SAMPLE_RATE for w in waves], finished))


def _arrived(clock: Playback, tickets: list[Ticket[SynthesisItem]], done: dict[int, float], n: int,
             length: float, _future: object) -> None:
    """Chunk ``n`` is ready: the listener's clock moves, and so do the queued chunks' deadlines."""
    finished_at(done, n, _future)
    now = asyncio.get_running_loop().time()
    clock.delivered(n, now, length)
    for later, ticket in enumerate(tickets[n + 1:], n + 1):
        ticket.deadline = clock.deadline(later, now)


def finished_at(done: dict[int, float], n: int, _future: object) -> None:
    done.setdefault(n, time.perf_counter())


def stall(durations: list[float], finished: list[float]) -> float:
    """Silence heard by a listener who plays each chunk as soon as it is ready and the previous one ended."""
    silent, ends = 0.0, finished[0] + durations[0]
    for seconds, ready in zip(durations[1:], finished[1:], strict=True):
        silent += max(0.0, ready - ends)
        ends = max(ends, ready) + seconds
    return silent


async def open_loop(batcher: Batcher, work: Workload, plan: list[tuple[float, int]]) -> list[Sample]:
    """``plan``'s arrivals (``arrivals``), each at its time from the start, each on its own stream."""
    loop, tasks = asyncio.get_running_loop(), []
    started = loop.time()
    for n, (at, index) in enumerate(plan):
        await asyncio.sleep(max(0.0, started + at - loop.time()))
        arrival = time.perf_counter()
        tasks.append(asyncio.create_task(stream(batcher, work, index, 1000 * n, arrival)))
    return list(await asyncio.gather(*tasks))


async def closed_loop(batcher: Batcher, work: Workload,
                      args: argparse.Namespace) -> tuple[list[Sample], float, int]:
    """``--clients`` clients back to back; a refused request is retried after the hint, and its latency
    counts from its first attempt."""
    rng = random.Random(args.seed)
    samples: list[Sample] = []
    refusals: list[float] = []

    async def client(c: int) -> None:
        for r in range(args.closed_requests):
            index, arrival = work.pick(rng), time.perf_counter()
            while (sample := await stream(batcher, work, index, 100 * c + r, arrival)).retry_after_s is not None:
                refusals.append(sample.retry_after_s)  # a real client retries when told to
                await asyncio.sleep(sample.retry_after_s)
            samples.append(sample)

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(args.clients)))
    return samples, time.perf_counter() - started, len(refusals)


async def unloaded(thread: ThreadPoolExecutor, engine: Engine, work: Workload, passes: int = 3) -> list[list[float]]:
    """Seconds of every chunk of every text, alone: the median of ``passes`` (a slow moment of a shared
    machine, a chunk timed at 3x its usual in one pass, must not move the capacity the loads scale by)."""
    times = []
    for index in range(len(work.texts)):
        runs: list[list[float]] = [[] for _ in work.texts[index]]
        for _ in range(passes):
            for n, item in enumerate(work.items(index, 7)):
                started = time.perf_counter()
                await asyncio.get_running_loop().run_in_executor(thread, engine.synthesize, [item])
                runs[n].append(time.perf_counter() - started)
        times.append([float(np.median(r)) for r in runs])
    return times


def arrivals(work: Workload, rate: float, args: argparse.Namespace, seed: int) -> list[tuple[float, int]]:
    """The open loop's arrival sequence (seconds from its start, text index): drawn once per phase, then
    served by every policy (``open_loop``) and simulated by the references (``reference_orders``)."""
    rng = random.Random(seed)
    now, plan = 0.0, []
    for _ in range(args.max_requests):
        now += rng.expovariate(rate)
        index = work.pick(rng)
        if now > args.phase_s:
            break
        plan.append((now, index))
    return plan


def drawn_work(plan: list[tuple[float, int]], solo: list[list[float]]) -> dict[str, float]:
    """The work the drawn arrivals bring, at the unloaded times (``work_unloaded_s``), and the load they
    offer (``drawn_load``: that work over the span of the arrivals; the draw's own luck around ``--loads``).
    Beside a policy's ``model_busy_s``, ``busy_x_unloaded`` says how much dearer the same work ran under load:
    the load the model actually carried is about ``drawn_load`` × that."""
    work = sum(sum(solo[text]) for _, text in plan)
    span = plan[-1][0] if plan else 0.0
    return {"work_unloaded_s": round(work, 2), "drawn_load": round(work / span, 3) if span > 0 else 0.0}


def reference_orders(work: Workload, solo: list[list[float]], plan: list[tuple[float, int]]) -> dict[str, Any]:
    """The simulated references (``bench.orders``) on the open loop's arrivals, at the unloaded times."""
    audio = [[work.seconds(item) for item in work.items(index, 0)] for index in range(len(work.texts))]
    rows = {"fifo_singles_sim": orders.fifo_singles(plan, solo),
            "first_chunks_first_sim": orders.first_chunks_first(plan, solo, audio)}
    return {name: summary([Sample(s.arrival, True, s.finished[0] - s.arrival, s.finished[-1] - s.arrival,
                                  stall_s=stall(audio[text], s.finished))
                           for (_, text), s in zip(plan, served, strict=True)])
            for name, served in rows.items()}


def summary(samples: list[Sample], wall: float | None = None) -> dict[str, Any]:
    ok = [s for s in samples if s.ok]
    ttfa, lat = [s.ttfa_s for s in ok], [s.latency_s for s in ok]
    span = wall if wall is not None else (max((s.arrival + s.latency_s for s in ok), default=0.0)
                                          - min((s.arrival for s in samples), default=0.0))
    return {"requests": len(samples), "ok": len(ok), "refused": len(samples) - len(ok),
            "ttfa_p50_s": percentile(ttfa, 50), "ttfa_p95_s": percentile(ttfa, 95),
            "latency_p50_s": percentile(lat, 50), "latency_p95_s": percentile(lat, 95),
            "requests_per_s": round(len(ok) / span, 3) if span > 0 else None,
            "stalled": sum(s.stall_s > STALL_S for s in ok),
            "stall_max_s": round(max((s.stall_s for s in ok), default=0.0), 4)}


async def bench_voice(engine: Engine, voice: Voice, args: argparse.Namespace,
                      thread: ThreadPoolExecutor) -> dict[str, Any]:
    limit = engine.chunk_limit(voice)
    work = Workload(voice, [chunk_text(t, limit) for _, t in TEXT_MIX], [w for w, _ in TEXT_MIX], args.nfe_steps,
                    engine.audio_seconds, [chunk_text(t, limit, first_max_bytes=limit) for _, t in TEXT_MIX])
    logs = {name: SizeLog() for name in policies(args)}
    batchers, timings = await make_batchers(engine, voice, args, thread, logs)
    report: dict[str, Any] = {"voice_s": round(voice.seconds, 2), "warmup": [list(t) for t in timings], "closed": {}}
    for name, batcher in batchers.items():
        samples, wall, retried = await closed_loop(batcher, work, args)
        report["closed"][name] = summary(samples, wall) | logs[name].take() | {"refused_then_retried": retried}
        print(json.dumps({"closed": name, **report["closed"][name]}), file=sys.stderr)
    # Capacity: a single server's rate at the unloaded service times, measured just before the open loops.
    solo = await unloaded(thread, engine, work)
    weights = np.array(work.weights, dtype=float) / sum(work.weights)
    report |= {"unloaded_chunk_s": [[round(c, 3) for c in chunks] for chunks in solo],
               "unloaded_ttfa_mean_s": round(float(weights @ [chunks[0] for chunks in solo]), 3),
               "service_mean_s": round(float(weights @ [sum(chunks) for chunks in solo]), 3)}
    report["capacity_req_s"] = round(1.0 / report["service_mean_s"], 3)
    report["open"] = [await open_phase(batchers, logs, work, solo, n, load * report["capacity_req_s"], args)
                      for n, load in enumerate(args.loads)]
    for row in report["open"]:  # the ratios the goals are stated in
        fifo = row["fifo_singles_sim"]["ttfa_p95_s"]
        for figures in (v for v in row.values() if isinstance(v, dict) and v.get("ttfa_p95_s") is not None):
            figures["ttfa_p95_x_unloaded"] = round(figures["ttfa_p95_s"] / report["unloaded_ttfa_mean_s"], 2)
            figures["ttfa_p95_x_fifo"] = round(figures["ttfa_p95_s"] / fifo, 2) if fifo else None
    report["saturation"] = await burst_phase(batchers, logs, work, args) if args.burst else {}
    for batcher in batchers.values():
        await batcher.close()
    return report


async def open_phase(batchers: dict[str, Batcher], logs: dict[str, SizeLog], work: Workload,
                     solo: list[list[float]], n: int, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    """One offered load: every policy on the same arrivals, in alternating order from load to load."""
    plan = arrivals(work, rate, args, args.seed + n)
    row: dict[str, Any] = {"load": args.loads[n], "rate": round(rate, 3), **drawn_work(plan, solo),
                           **reference_orders(work, solo, plan)}
    order = list(batchers)
    for name in order if n % 2 == 0 else order[::-1]:
        row[name] = summary(await open_loop(batchers[name], work, plan)) | logs[name].take()
        row[name]["predicted_s"] = batchers[name].costs.table([1, 2, 4, args.max_batch_size])  # step: per pass
        work_s = row["work_unloaded_s"]
        row[name]["busy_x_unloaded"] = round(row[name]["model_busy_s"] / work_s, 2) if work_s else None
    print(json.dumps(row), file=sys.stderr)
    return row


async def burst_phase(batchers: dict[str, Batcher], logs: dict[str, SizeLog], work: Workload,
                      args: argparse.Namespace) -> dict[str, Any]:
    """``--burst`` requests at once (the same texts for every policy): the saturated throughput."""
    rng = random.Random(args.seed + 99)
    picks = [work.pick(rng) for _ in range(args.burst)]
    row: dict[str, Any] = {"requests": args.burst}
    for name, batcher in batchers.items():
        started = time.perf_counter()
        samples = await asyncio.gather(*(stream(batcher, work, i, 1000 * n, started) for n, i in enumerate(picks)))
        row[name] = summary(list(samples), time.perf_counter() - started) | logs[name].take()
    print(json.dumps({"saturation": row}), file=sys.stderr)
    return row


def plot(report: dict[str, Any], path: Path) -> None:
    fig, axes = figure(1, len(report["voices"]), (6 * len(report["voices"]), 4), squeeze=False)
    for ax, (label, voice) in zip(axes[0], report["voices"].items(), strict=True):
        loads = [row["load"] for row in voice["open"]]
        for name in (*report["args"]["policies"], "fifo_singles_sim", "first_chunks_first_sim"):
            ax.plot(loads, [row[name]["ttfa_p95_s"] for row in voice["open"]], marker="o", label=name)
        ax.axhline(voice["unloaded_ttfa_mean_s"], color="grey", ls=":", label="unloaded TTFA (mean)")
        ax.axhline(report["budget_s"], color="red", ls="--", label="budget")
        ax.set(xlabel="offered load (x measured capacity)", ylabel="TTFA p95 (s)", title=f"{label} voice")
    save_png(fig, path, axes[0])


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    thread = model_executor()  # load, voices, warm-up and every batcher on one thread, as the server does
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model.startswith("emulated:"):  # the real scheduler on a curve given as data (bench.emulated)
            tiny = await loop.run_in_executor(thread, load_engine, argparse.Namespace(model="tiny", device="cpu"),
                                              Path(tmp))
            engine = cast(Engine, EmulatedEngine(tiny, args.model.removeprefix("emulated:")))  # Engine, duck-typed
        else:
            engine = await loop.run_in_executor(thread, load_engine, args, Path(tmp))
    voices: dict[str, Voice] = {"default": await loop.run_in_executor(thread, engine.default_voice),
                                "1s": await loop.run_in_executor(thread, reference_voice, engine, 1.0)}
    report: dict[str, Any] = {"model": args.model, "device": str(engine.device), "nfe_steps": args.nfe_steps,
                              "budget_s": args.budget, "args": vars(args), "voices": {}}
    for label in args.voices:
        report["voices"][label] = await bench_voice(engine, voices[label], args, thread)
    thread.shutdown()
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cli = parser(__doc__)
    add_engine_args(cli, nfe_steps=8)
    cli.add_argument("--max-batch-size", type=int, default=16)
    cli.add_argument("--voices", type=lambda s: s.split(","), default=["default", "1s"])
    cli.add_argument("--loads", type=lambda s: [float(x) for x in s.split(",")], default=[0.3, 0.6, 0.9, 1.2])
    cli.add_argument("--phase-s", type=float, default=20.0, help="open-loop arrivals per phase for this long")
    cli.add_argument("--max-requests", type=int, default=120, help="and at most this many per phase")
    cli.add_argument("--clients", type=int, default=8)
    cli.add_argument("--closed-requests", type=int, default=3, help="requests per closed-loop client")
    cli.add_argument("--budget", type=float, default=3.0, help="admission TTFA budget (s)")
    cli.add_argument("--no-admission", action="store_true", help="latency/step policy without admission control")
    cli.add_argument("--policies", type=lambda s: s.split(","), default=list(POLICIES),
                        help=f"columns, of {','.join(POLICIES + EXTRA)}")
    cli.add_argument("--burst", type=int, default=24, help="saturation phase: requests at once (0: skip)")
    cli.add_argument("--seed", type=int, default=0)
    cli.add_argument("--out", default="out/bench_scheduler")
    return cli.parse_args(argv)


def main() -> int:
    args = parse_args()
    report = asyncio.run(amain(args))
    write_json(report, args.out)
    plot(report, Path(args.out))
    print_json(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
