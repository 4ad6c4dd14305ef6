"""Time to first audio through the agent endpoints against the native WebSocket, side by side.

One server as shipped (``python -m server --model tiny`` at its defaults) and, in each round, the same text
through three front ends in rotating order, one request at a time so they never share the model:

- ``native``: ``/v1/stream`` (a ``synthesize`` message with ``final: true``; first binary frame),
- ``cartesia``: ``/tts/websocket`` (a context with ``continue: false``; first ``chunk`` message),
- ``elevenlabs``: ``/v1/text-to-speech/{voice}/stream-input`` (open, text with ``flush``, end of input;
  first message with ``audio``).

Each request opens its socket before its clock starts (agents keep theirs open), so each figure is the time from
the request's text leaving the client to its first audio arriving. All three ask for 24 kHz PCM s16le.

    python -m bench.agents                    # 20 rounds
    python -m bench.agents --rounds 30 --out runs/agents.json
    python -m bench.agents --server-flags "--default-nfe-steps 4"   # a faster server, same comparison
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from bench.common import (
    TEXT_MIX,
    parser,
    percentile,
    print_json,
    served,
    write_json,
)

VOICE = "default"
PROTOCOLS = ("native", "cartesia", "elevenlabs")
Probe = Callable[[aiohttp.ClientSession, str, str, str], Awaitable[float]]


async def native(session: aiohttp.ClientSession, base: str, text: str, rid: str) -> float:
    async with session.ws_connect(f"{base}/v1/stream") as ws:
        started = time.perf_counter()
        await ws.send_json({"type": "synthesize", "id": rid, "text": text, "voice": VOICE, "final": True})
        first = 0.0
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY and not first:
                first = time.perf_counter() - started
            elif message.type == aiohttp.WSMsgType.TEXT and json.loads(message.data)["type"] in ("audio_end", "error"):
                break
        return _checked(first, "native")


async def cartesia(session: aiohttp.ClientSession, base: str, text: str, rid: str) -> float:
    fmt = {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000}
    async with session.ws_connect(f"{base}/tts/websocket") as ws:
        started = time.perf_counter()
        await ws.send_json({"context_id": rid, "transcript": text, "continue": False, "model_id": "sonic-3",
                            "voice": {"mode": "id", "id": VOICE}, "output_format": fmt})
        first = 0.0
        async for message in ws:
            event = json.loads(message.data)
            if event["type"] == "chunk" and not first:
                first = time.perf_counter() - started
            elif event["type"] in ("done", "error"):
                break
        return _checked(first, "cartesia")


async def elevenlabs(session: aiohttp.ClientSession, base: str, text: str, rid: str) -> float:
    url = f"{base}/v1/text-to-speech/{VOICE}/stream-input?model_id=eleven_flash_v2_5&output_format=pcm_24000"
    async with session.ws_connect(url) as ws:
        started = time.perf_counter()
        await ws.send_json({"text": " "})
        await ws.send_json({"text": text + " ", "flush": True})
        await ws.send_json({"text": ""})
        first = 0.0
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            event = json.loads(message.data)
            if event.get("audio") and not first:
                first = time.perf_counter() - started
            if event.get("isFinal") or event.get("error"):
                break
        return _checked(first, "elevenlabs")


def _checked(first: float, name: str) -> float:
    if not first:
        raise RuntimeError(f"{name}: no audio")
    return first


PROBES: dict[str, Probe] = {"native": native, "cartesia": cartesia, "elevenlabs": elevenlabs}


async def measure(base: str, rounds: int) -> dict[str, list[float]]:
    """``rounds`` rounds; round ``i`` speaks one text through every protocol, starting with protocol ``i``."""
    texts = [text for _, text in TEXT_MIX]
    ttfa: dict[str, list[float]] = {name: [] for name in PROTOCOLS}
    async with aiohttp.ClientSession() as session:
        for name in PROTOCOLS:  # one unmeasured request each: first-use costs are no protocol's
            await PROBES[name](session, base, texts[0], f"warm-{name}")
        for i in range(rounds):
            order = PROTOCOLS[i % 3:] + PROTOCOLS[:i % 3]
            for name in order:
                ttfa[name].append(await PROBES[name](session, base, texts[i % len(texts)], f"r{i}-{name}"))
    return ttfa


def summarise(ttfa: dict[str, list[float]]) -> dict[str, Any]:
    native_p = {q: percentile(ttfa["native"], q) or 0.0 for q in (50, 95)}
    report: dict[str, Any] = {}
    for name, values in ttfa.items():
        p50, p95 = percentile(values, 50) or 0.0, percentile(values, 95) or 0.0
        report[name] = {"n": len(values), "p50_ms": round(p50 * 1000, 1), "p95_ms": round(p95 * 1000, 1),
                        "p50_ratio": round(p50 / native_p[50], 3), "p95_ratio": round(p95 / native_p[95], 3)}
    return report


def main() -> None:
    args_parser = parser(__doc__)
    args_parser.add_argument("--rounds", type=int, default=20)
    args_parser.add_argument("--model", default="tiny")
    args_parser.add_argument("--server-flags", default="", help="extra `python -m server` flags, one string")
    args_parser.add_argument("--out", default="")
    args = args_parser.parse_args()
    with served(*shlex.split(args.server_flags), model=args.model) as (url, _):
        ttfa = asyncio.run(measure(url, args.rounds))
    report = {"rounds": args.rounds, "model": args.model, "server_flags": args.server_flags, "ttfa": summarise(ttfa)}
    for name, row in report["ttfa"].items():
        print(f"{name:<11} p50 {row['p50_ms']:7.1f} ms ({row['p50_ratio']:.3f}x)   "
              f"p95 {row['p95_ms']:7.1f} ms ({row['p95_ratio']:.3f}x)")
    print_json(report)
    if args.out:
        write_json(report, args.out)


if __name__ == "__main__":
    main()
