#!/usr/bin/env python3
"""Synthesise text through a running server and save it as WAV; prints time to first audio, latency, RTF.

    f5tts-client "Hello there." -o hello.wav --url ws://localhost:8000/v1/stream
    f5tts-client "It costs $3.50." -o out.wav --srt out.srt --vtt out.vtt
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import soundfile as sf

from f5tts_client import StreamError, TTSClient, srt, vtt


async def run(args: argparse.Namespace) -> int:
    async with TTSClient(args.url, api_key=args.api_key) as client:
        try:
            result = await client.synthesize(args.text, voice=args.voice, seed=args.seed, speed=args.speed,
                                             nfe_steps=args.nfe_steps, lang=args.lang,
                                             normalize=False if args.no_normalize else None,
                                             marks=True if args.srt or args.vtt else None)
        except StreamError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    sf.write(args.output, result.audio(), result.sample_rate, subtype="PCM_16")
    for path, write in ((args.srt, srt), (args.vtt, vtt)):
        if path:  # captions from the server's marks: chunk times exact, one cue per chunk of text
            Path(path).write_text(write(result.marks, result.sample_rate), encoding="utf-8")
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
    parser.add_argument("--lang", default=None, help="language for normalisation (en, zh; default: detect)")
    parser.add_argument("--no-normalize", action="store_true", help="send the text to the model as given")
    parser.add_argument("--srt", default=None, metavar="FILE", help="write SubRip captions from the marks")
    parser.add_argument("--vtt", default=None, metavar="FILE", help="write WebVTT captions from the marks")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
