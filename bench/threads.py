#!/usr/bin/env python3
"""Why all model work runs on one thread (``engine.threads``): one request's cost on the model thread,
clean, beside a single-threaded helper that ran torch work, and beside a plain thread that ran the same.

    python -m bench.threads [--voice-seconds 5.3] [--nfe-steps 32] [--repeats 4]

Each case runs in a fresh process (the slowdown, once triggered, stays for the life of the process).
JSON to stdout: median seconds per request per case and the ratio to the clean case.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench.common import ROOT, parser, print_json

CASES = ("clean", "helper_single_threaded", "plain_thread")
TEXT = "The quick brown fox jumps over the lazy dog near the quiet river bank."


def _side_work() -> None:
    """What a voice upload does beside the model: resample 5 s of 44.1 kHz and scale it."""
    import torch
    import torchaudio

    audio = torch.randn(1, 44_100 * 5)
    torchaudio.functional.resample(audio, 44_100, 24_000) * 0.5


def run_case(case: str, nfe_steps: int, repeats: int) -> list[float]:
    from concurrent.futures import ThreadPoolExecutor

    from engine import Engine, EngineConfig, SynthesisItem
    from engine.threads import helper_executor, model_executor

    model = model_executor()
    engine = model.submit(Engine.load, EngineConfig(model="tiny", device="cpu")).result()
    item = SynthesisItem(TEXT, model.submit(engine.default_voice).result(), nfe_steps=nfe_steps, seed=1)
    model.submit(engine.synthesize, [item]).result()  # warm
    # The side thread stays alive, idle, as a server's pool threads do: libgomp keeps a thread's team
    # until the thread exits, and it is the live extra team that slows the model thread.
    side = {"helper_single_threaded": helper_executor(1, "helper"), "plain_thread": ThreadPoolExecutor(1)}.get(case)
    if side is not None:
        side.submit(_side_work).result()

    def once() -> float:
        started = time.perf_counter()
        engine.synthesize([item])
        return time.perf_counter() - started

    seconds = [model.submit(once).result() for _ in range(repeats)]
    if side is not None:
        side.shutdown()
    return seconds


def main() -> int:
    cli = parser(__doc__)
    cli.add_argument("--nfe-steps", type=int, default=32)
    cli.add_argument("--repeats", type=int, default=4)
    cli.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # (internal) one case, in a child
    args = cli.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.nfe_steps, args.repeats)))
        return 0
    results = {}
    for case in CASES:
        out = subprocess.run([sys.executable, "-m", "bench.threads", "--case", case, "--nfe-steps", str(args.nfe_steps),
                              "--repeats", str(args.repeats)], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        seconds = json.loads(out.stdout.strip().splitlines()[-1])
        results[case] = {"median_s": round(statistics.median(seconds), 4), "runs_s": [round(s, 4) for s in seconds]}
    for case in CASES:
        results[case]["vs_clean"] = round(results[case]["median_s"] / results["clean"]["median_s"], 3)
    print_json({"nfe_steps": args.nfe_steps, "voice": "default", "cores": os.cpu_count(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
