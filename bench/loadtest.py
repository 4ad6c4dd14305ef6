#!/usr/bin/env python3
"""Load test over the WebSocket API with a latency budget.

    python -m bench.loadtest --url ws://127.0.0.1:8000/v1/stream --concurrency 16 --duration 60
    python -m bench.loadtest --url ws://127.0.0.1:8000/v1/stream --rate 4 --duration 60 --budget-p95 3.0

Closed loop (``--concurrency N``: N clients, each sending its next request when the last one ends) or
open loop (``--rate R``: Poisson arrivals at R requests/s, however slow the server gets). A realistic text
mix (short replies, sentences, paragraphs). Bounded: it stops after ``--duration`` seconds or
``--max-requests`` requests, whichever comes first, and waits at most ``--drain-s`` for stragglers.
Reports p50/p95/p99 of time to first audio and latency, RTF, throughput and errors by code; writes
``<out>.json`` and ``<out>.png``; exits 1 when a budget is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import TEXT_MIX, figure, parser, percentile, print_json, save_png, write_json
from f5tts_client import StreamError, TTSClient

MAX_DURATION_S = 3600
MAX_REQUESTS = 100_000


@dataclass
class Sample:
    started: float
    """Seconds since the test began."""
    chars: int
    ok: bool
    code: str
    ttfa_s: float | None = None
    latency_s: float | None = None
    audio_s: float = 0.0


def pick_text(rng: random.Random) -> str:
    weights, texts = zip(*TEXT_MIX, strict=True)
    return rng.choices(texts, weights=weights)[0]


async def one_request(client: TTSClient, text: str, args: argparse.Namespace, t0: float) -> Sample:
    started = time.perf_counter() - t0
    try:
        result = await client.synthesize(text, voice=args.voice, nfe_steps=args.nfe_steps)
    except StreamError as exc:
        return Sample(started, len(text), False, exc.code)
    except (ConnectionError, OSError) as exc:
        return Sample(started, len(text), False, f"connection:{type(exc).__name__}")
    return Sample(started, len(text), True, "ok", result.ttfa_s, result.latency_s,
                  result.samples / result.sample_rate)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    duration = min(args.duration, MAX_DURATION_S)
    limit = min(args.max_requests, MAX_REQUESTS)
    samples: list[Sample] = []
    issued = 0
    t0 = time.perf_counter()
    deadline = t0 + duration

    def budget_left() -> bool:
        return issued < limit and time.perf_counter() < deadline

    clients = [TTSClient(args.url, api_key=args.api_key) for _ in range(args.concurrency or args.connections)]
    await asyncio.gather(*(c.connect() for c in clients))
    try:
        if args.rate:
            tasks: list[asyncio.Task[Sample]] = []
            while budget_left():
                client = clients[issued % len(clients)]
                tasks.append(asyncio.create_task(one_request(client, pick_text(rng), args, t0)))
                issued += 1
                await asyncio.sleep(rng.expovariate(args.rate))
            done, pending = await asyncio.wait(tasks, timeout=args.drain_s) if tasks else (set(), set())
            samples.extend(t.result() for t in done)
            for task in pending:
                task.cancel()
        else:
            async def user(client: TTSClient) -> None:
                nonlocal issued
                while budget_left():
                    issued += 1
                    samples.append(await one_request(client, pick_text(rng), args, t0))

            await asyncio.wait_for(asyncio.gather(*(user(c) for c in clients)), duration + args.drain_s)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    wall = time.perf_counter() - t0
    return report(args, samples, wall, issued)


def report(args: argparse.Namespace, samples: list[Sample], wall: float, issued: int) -> dict[str, Any]:
    ok = [s for s in samples if s.ok]
    errors: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            errors[s.code] = errors.get(s.code, 0) + 1
    latencies = [s.latency_s for s in ok if s.latency_s is not None]
    ttfas = [s.ttfa_s for s in ok if s.ttfa_s is not None]
    rtfs = [s.latency_s / s.audio_s for s in ok if s.latency_s and s.audio_s]
    audio = sum(s.audio_s for s in ok)
    p95 = percentile(latencies, 95)
    ttfa95 = percentile(ttfas, 95)
    error_rate = (len(samples) - len(ok)) / len(samples) if samples else 0.0
    checks = {
        "latency_p95": {"budget_s": args.budget_p95, "value_s": p95,
                        "passed": p95 is not None and p95 <= args.budget_p95},
        "error_rate": {"budget": args.max_error_rate, "value": round(error_rate, 4),
                       "passed": error_rate <= args.max_error_rate},
    }
    if args.budget_ttfa_p95 is not None:
        checks["ttfa_p95"] = {"budget_s": args.budget_ttfa_p95, "value_s": ttfa95,
                              "passed": ttfa95 is not None and ttfa95 <= args.budget_ttfa_p95}
    return {
        "config": {"url": args.url, "mode": "open" if args.rate else "closed", "rate": args.rate,
                   "concurrency": args.concurrency, "duration_s": args.duration, "nfe_steps": args.nfe_steps},
        "wall_s": round(wall, 3), "requests": len(samples), "unfinished": issued - len(samples), "ok": len(ok),
        "errors": errors,
        "latency_s": {"p50": percentile(latencies, 50), "p95": p95, "p99": percentile(latencies, 99)},
        "ttfa_s": {"p50": percentile(ttfas, 50), "p95": ttfa95, "p99": percentile(ttfas, 99)},
        "rtf": {"p50": percentile(rtfs, 50), "p95": percentile(rtfs, 95)},
        "throughput_audio_s_per_s": round(audio / wall, 3) if wall else 0.0,
        "requests_per_s": round(len(samples) / wall, 3) if wall else 0.0,
        "mean_latency_s": round(statistics.mean(latencies), 4) if latencies else None,
        "checks": checks, "passed": all(c["passed"] for c in checks.values()),
        "samples": [asdict(s) for s in samples],
    }


def plot(result: dict[str, Any], path: Path) -> None:
    samples = [s for s in result["samples"] if s["ok"]]
    fig, (top, bottom) = figure(2, 1, (10, 6), sharex=True)
    top.scatter([s["started"] for s in samples], [s["latency_s"] for s in samples], s=8, label="latency")
    top.scatter([s["started"] for s in samples], [s["ttfa_s"] for s in samples], s=8, label="time to first audio")
    top.axhline(result["checks"]["latency_p95"]["budget_s"], color="red", ls="--", label="p95 budget")
    top.set(ylabel="seconds", title=f"{result['requests']} requests, {sum(result['errors'].values())} errors")
    seconds = int(result["wall_s"]) + 1
    audio = [0.0] * seconds
    for s in samples:
        audio[min(int(s["started"] + s["latency_s"]), seconds - 1)] += s["audio_s"]
    bottom.bar(range(seconds), audio, width=1.0)
    bottom.set(xlabel="seconds since start", ylabel="audio seconds finished")
    top.legend()
    save_png(fig, path, (top, bottom), legend=False)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cli = parser(__doc__)
    cli.add_argument("--url", required=True, help="ws://host:port/v1/stream")
    mode = cli.add_mutually_exclusive_group(required=True)
    mode.add_argument("--concurrency", type=int, help="closed loop: this many clients back to back")
    mode.add_argument("--rate", type=float, help="open loop: Poisson arrivals per second")
    cli.add_argument("--connections", type=int, default=8, help="sockets shared by open-loop requests")
    cli.add_argument("--duration", type=float, default=30.0, help=f"seconds (at most {MAX_DURATION_S})")
    cli.add_argument("--max-requests", type=int, default=2000)
    cli.add_argument("--drain-s", type=float, default=60.0, help="wait this long for unfinished requests")
    cli.add_argument("--budget-p95", type=float, default=3.0, help="p95 latency budget, seconds")
    cli.add_argument("--budget-ttfa-p95", type=float, default=None)
    cli.add_argument("--max-error-rate", type=float, default=0.01)
    cli.add_argument("--voice", default="default")
    cli.add_argument("--nfe-steps", type=int, default=None)
    cli.add_argument("--api-key", default=None)
    cli.add_argument("--seed", type=int, default=0)
    cli.add_argument("--out", default="out/loadtest", help="writes <out>.json and <out>.png")
    return cli.parse_args(argv)


async def amain(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = await run(args)
    write_json(result, args.out)
    plot(result, Path(args.out))
    print_json({k: v for k, v in result.items() if k != "samples"})
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(amain()))
