#!/usr/bin/env python3
"""Synthesise text through a running server and save it as WAV; prints time to first audio, latency, RTF.

    python scripts/tts_client.py "Hello there." -o hello.wav --url ws://localhost:8000/v1/stream
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.client import StreamError, TTSClient


async def run(args: argparse.Namespace) -> int:
    async with TTSClient(args.url, api_key=args.api_key) as client:
        try:
            result = await client.synthesize(args.text, voice=args.voice, seed=args.seed, speed=args.speed,
                                             nfe_steps=args.nfe_steps)
        except StreamError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    sf.write(args.output, result.audio(), result.sample_rate, subtype="PCM_16")
    end = result.end or {}
    seconds = result.samples / result.sample_rate
    chunks = end.get("chunks")
    print(f"wrote {args.output}: {seconds:.2f} s audio, {chunks} chunk{'' if chunks == 1 else 's'}; "
          f"ttfa {1000 * (result.ttfa_s or 0):.0f} ms, latency {1000 * (result.latency_s or 0):.0f} ms, "
          f"rtf {(result.latency_s or 0) / max(seconds, 1e-9):.3f} (server: ttfa {end.get('ttfa_ms')} ms, "
          f"latency {end.get('latency_ms')} ms)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("text")
    parser.add_argument("-o", "--output", default="out.wav")
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1/stream")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--voice", default="default")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--speed", type=float, default=None)
    parser.add_argument("--nfe-steps", type=int, default=None)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
