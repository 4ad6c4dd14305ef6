#!/usr/bin/env python3
"""End-to-end figures of the real server process, JSON to stdout.

    python -m bench.server --model tiny

P2  WebSocket request latency / direct engine latency for the same request, concurrency 1 (goal <= 1.05)
P3  first request latency after startup / steady-state p50 (goal <= 1.2)
P4  time to first audio / total latency for a 6-sentence paragraph (goal <= 0.3)

Runs the server app in this process on a free port (same startup as ``python -m server``) and measures
with the real client. WebSocket requests alternate with the same request sent straight to the engine on
the same model thread, so machine drift and thread effects cancel and the ratio is the server's own
overhead (protocol, chunking, batcher, PCM framing).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from bench.common import add_engine_args, parser, print_json
from engine import SynthesisItem
from f5tts_client import TTSClient
from server.app import create_app, start_site
from server.core.settings import Settings
from server.core.state import STATE

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank."
PARAGRAPH = ("Welcome back. Today we will talk about streaming speech. The server cuts long text into chunks. "
             "The first chunk is short, so audio starts quickly. Later chunks are longer and are queued while "
             "earlier ones play. That is how a paragraph starts speaking in a fraction of its total time.")


async def measure(args: argparse.Namespace) -> dict[str, object]:
    settings = Settings(model=args.model, device=args.device, host="127.0.0.1", port=0, voices_dir="",
                        log_level="warning")
    app = create_app(settings)
    started = time.perf_counter()
    runner, port = await start_site(app, settings.host, 0)  # load + warm-up, as `python -m server` does
    startup = time.perf_counter() - started
    runtime = app[STATE].runtime
    engine, batcher, voices = runtime.engine, runtime.batcher, runtime.voices
    voice = voices.get("default")
    assert voice is not None
    item = SynthesisItem(SENTENCE, voice, nfe_steps=args.nfe_steps, seed=1)
    try:
        async with TTSClient(f"ws://127.0.0.1:{port}/v1/stream") as client:
            first = await client.synthesize(SENTENCE, seed=1, nfe_steps=args.nfe_steps)
            ws_lat, direct_lat = [], []
            for _ in range(args.repeats):
                result = await client.synthesize(SENTENCE, seed=1, nfe_steps=args.nfe_steps)
                ws_lat.append(result.latency_s or 0.0)
                # The same request straight into the engine, on the same (model) thread, in the same process.
                t0 = time.perf_counter()
                await batcher.call_in_worker(engine.synthesize, [item])
                direct_lat.append(time.perf_counter() - t0)
            ttfa_ratio, para = [], []
            for _ in range(max(3, args.repeats // 2)):
                result = await client.synthesize(PARAGRAPH, seed=2, nfe_steps=args.nfe_steps)
                ttfa_ratio.append((result.ttfa_s or 0.0) / (result.latency_s or 1.0))
                para.append((result.ttfa_s, result.latency_s, (result.end or {}).get("chunks")))
    finally:
        await runner.cleanup()
    steady = statistics.median(ws_lat)
    direct = statistics.median(direct_lat)
    return {
        "model": args.model, "device": str(engine.device), "nfe_steps": args.nfe_steps, "repeats": args.repeats,
        "startup_s": round(startup, 3),
        "P2": {"ws_latency_p50_s": round(steady, 4), "engine_latency_p50_s": round(direct, 4),
               "ratio": round(steady / direct, 3), "goal": "<= 1.05"},
        "P3": {"first_request_s": round(first.latency_s or 0.0, 4), "steady_p50_s": round(steady, 4),
               "ratio": round((first.latency_s or 0.0) / steady, 3), "goal": "<= 1.2"},
        "P4": {"ttfa_over_latency_p50": round(statistics.median(ttfa_ratio), 3),
               "runs": [{"ttfa_s": round(t or 0, 3), "latency_s": round(lat or 0, 3), "chunks": c}
                        for t, lat, c in para], "goal": "<= 0.3"},
    }


def main() -> int:
    cli = parser(__doc__)
    add_engine_args(cli, random_weights=False)
    cli.add_argument("--repeats", type=int, default=10)
    print_json(asyncio.run(measure(cli.parse_args())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
