#!/usr/bin/env python3
"""P5: latency of a Prometheus scrape of /metrics while the batcher is saturated. JSON to stdout.

    python -m bench.scrape --model tiny --clients 24 --scrapes 200

Runs the server app on a free port (same startup as ``python -m server``), keeps ``--clients``
WebSocket clients sending paragraphs back to back so the queue never empties, and meanwhile scrapes
``/metrics`` every ``--interval-ms``. Goal: p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import aiohttp

from bench.common import add_engine_args, parser, percentile, print_json
from f5tts_client import TTSClient
from server.app import create_app, start_site
from server.core.settings import Settings
from server.core.state import STATE

PARAGRAPH = ("The queue must stay full for this measurement. Each client sends this paragraph again as soon "
             "as the last one finished, so batches run back to back while metrics are scraped.")


async def measure(args: argparse.Namespace) -> dict[str, object]:
    settings = Settings(model=args.model, device=args.device, host="127.0.0.1", port=0, voices_dir="",
                        log_level="warning", max_batch_size=args.max_batch_size)
    app = create_app(settings)
    runner, port = await start_site(app, settings.host, 0)
    state = app[STATE]
    stop = asyncio.Event()

    async def client_loop() -> None:
        async with TTSClient(f"ws://127.0.0.1:{port}/v1/stream") as client:
            while not stop.is_set():
                await client.synthesize(PARAGRAPH, nfe_steps=args.nfe_steps)

    clients = [asyncio.create_task(client_loop()) for _ in range(args.clients)]
    latencies, depths, sizes = [], [], []
    try:
        async with aiohttp.ClientSession() as session:
            await asyncio.sleep(args.ramp_s)
            for _ in range(args.scrapes):
                started = time.perf_counter()
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    body = await response.read()
                latencies.append(time.perf_counter() - started)
                assert response.status == 200 and b"tts_queue_depth" in body
                depths.append(state.runtime.batcher.queued)
                sizes.append(len(body))
                await asyncio.sleep(args.interval_ms / 1000)
    finally:
        stop.set()
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await runner.cleanup()
    millis = [1000 * s for s in latencies]
    return {
        "model": args.model, "clients": args.clients, "scrapes": len(latencies),
        "scrape_ms": {"p50": percentile(millis, 50), "p95": percentile(millis, 95),
                      "p99": percentile(millis, 99), "max": round(max(millis), 2)},
        "queue_depth_during": {"min": min(depths), "median": statistics.median(depths), "max": max(depths)},
        "scrape_bytes": statistics.median(sizes), "goal": "p99 <= 50 ms",
    }


def main() -> int:
    cli = parser(__doc__)
    add_engine_args(cli, random_weights=False)
    cli.add_argument("--clients", type=int, default=24)
    cli.add_argument("--max-batch-size", type=int, default=16)
    cli.add_argument("--scrapes", type=int, default=200)
    cli.add_argument("--interval-ms", type=float, default=50)
    cli.add_argument("--ramp-s", type=float, default=3.0)
    print_json(asyncio.run(measure(cli.parse_args())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
