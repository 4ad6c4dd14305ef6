#!/usr/bin/env python3
"""Far more requests at once than the server can serve: is every one either refused at once or served
whole?

    python -m bench.overload --requests 200                 # starts `python -m server --model tiny` as shipped
    python -m bench.overload --url http://127.0.0.1:8000 --requests 200   # a server already running

Two phases, one after the other: ``--requests`` concurrent ``POST /v1/audio/speech`` (PCM), then as many
concurrent WebSocket streams (``/v1/stream``), texts from the load test's mix. Each ends one of three ways:

- ``ok``: status 200 / ``audio_end``, the whole body read;
- refused: an HTTP error status or a WebSocket ``error`` before any audio; its seconds from sending to the
  refusal, and whether it carried a retry hint (``Retry-After`` / ``retry_after_ms``);
- ``truncated``: a 200 whose body broke off, or an ``error`` / close after audio had started. The server
  promises none.

Reports per phase: counts by outcome, refusal seconds p50/p95/max, hints, and the accepted requests'
TTFA and latency p50/p95; then ``probe``: ``--probes`` more requests sent 50 ms apart from
``--probe-after-s`` into the burst, while its accepted requests hold the server (the refusal's own cost,
not the burst's 200 connections queued on this machine's event loops); writes ``<out>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from bench.common import (
    TEXT_MIX,
    parser,
    percentile,
    print_json,
    served,
    write_json,
)


@dataclass
class Outcome:
    end: str
    """ok, truncated, or the refusal (HTTP status / error code)."""
    seconds: float
    """To the refusal, or to the end of an accepted request."""
    ttfa_s: float | None = None
    hinted: bool = False


async def http_speech(session: aiohttp.ClientSession, base: str, text: str, answer_only: bool = False) -> Outcome:
    """``answer_only``: return at the status, ``accepted``, without reading an accepted body."""
    body = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm"}
    started = time.perf_counter()
    try:
        async with session.post(f"{base}/v1/audio/speech", json=body) as response:
            if response.status != 200:
                await response.read()
                return Outcome(str(response.status), time.perf_counter() - started,
                               hinted="Retry-After" in response.headers)
            if answer_only:
                return Outcome("accepted", time.perf_counter() - started)
            ttfa = None
            async for _ in response.content.iter_any():
                ttfa = ttfa if ttfa is not None else time.perf_counter() - started
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
        return Outcome("truncated", time.perf_counter() - started)
    except aiohttp.ClientConnectionError as exc:
        return Outcome(f"connection:{type(exc).__name__}", time.perf_counter() - started)
    return Outcome("ok", time.perf_counter() - started, ttfa)


async def ws_stream(session: aiohttp.ClientSession, base: str, text: str, n: int,
                    answer_only: bool = False) -> Outcome:
    """``answer_only``: return at the first audio, ``accepted``."""
    started, ttfa = time.perf_counter(), None
    try:
        async with session.ws_connect(f"{base.replace('http', 'ws', 1)}/v1/stream") as ws:
            await ws.send_str(orjson.dumps({"type": "synthesize", "id": f"s{n}", "text": text}).decode())
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    if answer_only:
                        return Outcome("accepted", time.perf_counter() - started)
                    ttfa = ttfa if ttfa is not None else time.perf_counter() - started
                    continue
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                event = orjson.loads(message.data)
                if event["type"] == "audio_end":
                    return Outcome("ok", time.perf_counter() - started, ttfa)
                if event["type"] == "error":
                    if ttfa is not None:
                        break
                    return Outcome(event["code"], time.perf_counter() - started,
                                   hinted=event.get("retry_after_ms") is not None)
    except aiohttp.WSServerHandshakeError as exc:
        return Outcome(str(exc.status), time.perf_counter() - started,
                       hinted="Retry-After" in (exc.headers or {}))
    except aiohttp.ClientConnectionError as exc:
        if ttfa is None:
            return Outcome(f"connection:{type(exc).__name__}", time.perf_counter() - started)
    return Outcome("truncated", time.perf_counter() - started, ttfa)


def summarise(outcomes: list[Outcome], wall_s: float) -> dict[str, Any]:
    ok = [o for o in outcomes if o.end == "ok"]
    refused = [o for o in outcomes if o.end not in ("ok", "truncated")]
    return {"requests": len(outcomes), "ends": dict(Counter(o.end for o in outcomes)),
            "truncated": sum(o.end == "truncated" for o in outcomes),
            "refused": len(refused), "refused_with_hint": sum(o.hinted for o in refused),
            "refusal_p50_s": percentile([o.seconds for o in refused], 50),
            "refusal_p95_s": percentile([o.seconds for o in refused], 95),
            "refusal_max_s": round(max((o.seconds for o in refused), default=0.0), 4),
            "ok": len(ok), "ttfa_p50_s": percentile([o.ttfa_s or 0.0 for o in ok], 50),
            "ttfa_p95_s": percentile([o.ttfa_s or 0.0 for o in ok], 95),
            "latency_p50_s": percentile([o.seconds for o in ok], 50),
            "latency_p95_s": percentile([o.seconds for o in ok], 95), "wall_s": round(wall_s, 2)}


async def probe(phase: str, session: aiohttp.ClientSession, base: str, text: str, count: int,
                delay_s: float, gap_s: float = 0.05) -> list[Outcome]:
    """Requests ``gap_s`` apart while the burst's accepted requests (and the accepted probes, until their
    first audio) hold the server: a refusal's own cost, without the burst's 200 connections queued in
    front of it on this machine's two event loops."""
    send = http_speech if phase == "http" else functools.partial(ws_stream, n=0)
    tasks = []
    for n in range(count):
        await asyncio.sleep(delay_s if n == 0 else gap_s)
        tasks.append(asyncio.create_task(send(session, base, text, answer_only=True)))
    return list(await asyncio.gather(*tasks))


async def run(base: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    weights, texts = zip(*TEXT_MIX, strict=True)
    picks = [rng.choices(texts, weights=weights)[0] for _ in range(args.requests)]
    report: dict[str, Any] = {"requests": args.requests, "url": base}
    connector = aiohttp.TCPConnector(limit=0)  # every request on its own connection, all at once
    timeout = aiohttp.ClientTimeout(total=args.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for phase in args.phases:
            started = time.perf_counter()
            probes = asyncio.create_task(probe(phase, session, base, picks[0], args.probes, args.probe_after_s))
            if phase == "http":
                outcomes = await asyncio.gather(*(http_speech(session, base, t) for t in picks))
            else:
                outcomes = await asyncio.gather(*(ws_stream(session, base, t, n) for n, t in enumerate(picks)))
            report[phase] = summarise(list(outcomes), time.perf_counter() - started)
            alone = [o for o in await probes if o.end not in ("accepted", "truncated")]
            report[phase]["probe"] = {"sent": args.probes, "refused": len(alone),
                                      "refused_with_hint": sum(o.hinted for o in alone),
                                      "refusal_p50_s": percentile([o.seconds for o in alone], 50),
                                      "refusal_max_s": round(max((o.seconds for o in alone), default=0.0), 4)}
            print(orjson.dumps({phase: report[phase]}).decode(), file=sys.stderr)
            await asyncio.sleep(args.pause_s)
    return report


def main() -> int:
    cli = parser(__doc__)
    cli.add_argument("--url", help="a running server (default: start `python -m server --model tiny`)")
    cli.add_argument("--requests", type=int, default=200)
    cli.add_argument("--phases", type=lambda s: s.split(","), default=["http", "ws"])
    cli.add_argument("--probes", type=int, default=20,
                     help="then this many requests, 50 ms apart, while the burst's accepted ones run")
    cli.add_argument("--probe-after-s", type=float, default=0.5, help="when the probes start, after the burst")
    cli.add_argument("--pause-s", type=float, default=5.0, help="between phases (the server drains)")
    cli.add_argument("--timeout-s", type=float, default=600.0)
    cli.add_argument("--seed", type=int, default=0)
    cli.add_argument("--server-flags", default="",
                     help="extra `python -m server` flags, one string (when this starts the server)")
    cli.add_argument("--out", default="out/bench_overload")
    args = cli.parse_args()
    if args.url:
        report = asyncio.run(run(args.url.rstrip("/"), args))
    else:
        with served(*shlex.split(args.server_flags)) as (url, log):
            report = asyncio.run(run(url, args))
        report["server_log_tracebacks"] = log.read_text(errors="replace").count("Traceback")
    write_json(report, args.out)
    print_json(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
