#!/usr/bin/env python3
"""Our server against upstream F5-TTS's streaming server, 8 closed-loop clients, the same tiny model.

    python -m bench.upstream [--clients 8] [--requests 3] [--rounds 2] [--nfe-steps 32]

The baseline is ``f5_tts/socket_server.py``: serial, one connection at a time, float32 PCM then ``END``.
It cannot load the tiny profile from its flags (it reads the architecture from ``configs/<model>.yaml``
and always downloads Vocos), so ``serve-upstream`` below runs its own ``TTSStreamingProcessor`` and
``start_server`` with two hooks: the tiny architecture and the local Vocos. Everything else — chunking,
``infer_batch_process``, the accept loop, the wire — is upstream's code as installed.

Systems: upstream; ours as it ships (``ours-latency``: request mode, ``--batch-policy latency``), in
step mode (``ours-step``: ``--scheduler step``) and with ``--batch-policy fill`` (``ours-fill``). Each runs
in its own process with OMP_NUM_THREADS=2, on the same checkpoint files, the default voice (f5-tts's
``basic_ref_en.wav`` with its transcript), the same sentences and flow steps. Rounds run the systems
interleaved (A, B, C, A, B, C...) so machine drift hits all alike.
JSON to out/bench_upstream.json; a table with the ratios ours/upstream to stdout.

Upstream clients open one connection per request (its server serves a connection until it closes, so a
client holding its socket would lock the others out for all its requests); latency and time to first
audio are measured from before ``connect``, so they include the wait in the accept backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    free_port,
    http_ready,
    parser,
    percentile,
    server_command,
    start_process,
    stop,
    tcp_open,
    wait_ready,
    write_json,
)
from engine.tiny import TinyPaths, ensure_tiny_model
from engine.voices import DEFAULT_TRANSCRIPT, default_voice_file

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "A warm wind moved through the valley as the sun went down behind the hills.",
    "We will meet again tomorrow morning to finish the report for the board.",
]
END = b"END"
SERVER_ENV = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class Sample:
    latency_s: float
    """From the first attempt (a refused request retried after its hint counts the wait)."""
    ttfa_s: float | None
    samples: int
    refusals: int = 0


@dataclass(frozen=True)
class RoundStats:
    system: str
    round: int
    requests: int
    errors: int
    refusals: int
    """Refusals (``queue_full``) retried after the server's hint, as a client does; not errors."""
    wall_s: float
    requests_per_s: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    ttfa_p50_s: float | None
    ttfa_p95_s: float | None
    audio_s_per_request: float
    audio_s_per_s: float
    foreign_cores: float
    """CPU cores busy with other processes during this segment (another bench on the machine)."""
    model_busy: float | None = None
    """Share of the round our model spent running batches (``tts_batch_seconds`` over the wall time); None
    for upstream, which exports no metrics. Below 1 under a closed loop that keeps work queued: the model
    idled while clients waited (for a retry hint, or on the wire)."""


# -- upstream's server on the tiny model ------------------------------------------------------------------

def serve_upstream(args: argparse.Namespace) -> None:
    """Run upstream's socket server on the tiny checkpoint (in a subprocess started by the bench)."""
    import functools

    import f5_tts.socket_server as upstream

    from engine.models import TINY, model_spec

    # torchaudio 2.9's load goes through torchcodec, whose native library does not load on these machines
    # (libnvrtc missing); upstream only reads the (already preprocessed) reference WAV with it.
    upstream.torchaudio.load = _read_wav
    # Upstream's generate_stream never passes nfe_step; pin it to ours so both do the same work.
    upstream.infer_batch_process = functools.partial(upstream.infer_batch_process, nfe_step=args.nfe_steps)

    class TinyProcessor(upstream.TTSStreamingProcessor):
        def load_ema_model(self, ckpt_file: str, vocab_file: str, dtype: Any) -> Any:
            # The mel settings come from F5TTS_v1_Base's config (the tiny profile shares them); the arch
            # must be the tiny one the checkpoint was written with.
            self.model_arc = model_spec(TINY).arch
            return super().load_ema_model(ckpt_file, vocab_file, dtype)

        def load_vocoder_model(self) -> Any:
            # Upstream always downloads charactr/vocos-mel-24khz here; no hub on these machines.
            return upstream.load_vocoder(vocoder_name="vocos", is_local=True, local_path=args.vocoder_dir,
                                         device=self.device)

    processor = TinyProcessor(model="F5TTS_v1_Base", ckpt_file=args.ckpt, vocab_file=args.vocab,
                              ref_audio=str(default_voice_file()), ref_text=DEFAULT_TRANSCRIPT, device="cpu")
    upstream.start_server("127.0.0.1", args.port, processor)


def _read_wav(path: str) -> tuple[Any, int]:
    """``torchaudio.load``'s result (float32, channels x frames) read with soundfile."""
    import soundfile
    import torch

    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), int(rate)


def upstream_command(tiny: TinyPaths, port: int, nfe_steps: int) -> list[str]:
    return [sys.executable, "-m", "bench.upstream", "serve-upstream", "--port", str(port),
            "--ckpt", str(tiny.ckpt), "--vocab", str(tiny.vocab), "--vocoder-dir", str(tiny.vocoder_dir),
            "--nfe-steps", str(nfe_steps)]


OURS = {"ours-step": ["--scheduler", "step"],
        "ours-latency": ["--scheduler", "request", "--batch-policy", "latency"],
        "ours-fill": ["--scheduler", "request", "--batch-policy", "fill"]}
"""Our systems and the flags that make them (everything else as the server ships)."""


def ours_command(tiny: TinyPaths, port: int, system: str) -> list[str]:
    return server_command(port, "--ckpt-file", str(tiny.ckpt), "--vocab-file", str(tiny.vocab), "--vocoder-path",
                          str(tiny.vocoder_dir), "--device", "cpu", *OURS[system])


# -- processes --------------------------------------------------------------------------------------------

def start(command: list[str], log: Path, cwd: Path, code_root: Path) -> subprocess.Popen[bytes]:
    """A system under test with the thread and hub settings every system gets alike."""
    return start_process(command, log, cwd, code_root, env=SERVER_ENV)


# -- clients ----------------------------------------------------------------------------------------------

async def upstream_request(port: int, text: str) -> Sample:
    """One request on upstream's wire: text in, float32 PCM chunks out, then ``END``."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(text.encode())
    await writer.drain()
    received = bytearray()
    ttfa: float | None = None
    # float32 audio is 4-byte aligned and END is 3 bytes, so the stream is over when it ends in END at
    # length 3 mod 4 (an END-like float tail mid-stream would also need that misalignment).
    while not (len(received) % 4 == 3 and received.endswith(END)):
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("upstream closed the connection before END")
        if ttfa is None:
            ttfa = time.perf_counter() - t0
        received.extend(data)
    latency = time.perf_counter() - t0
    writer.close()
    await writer.wait_closed()
    return Sample(latency, ttfa, (len(received) - len(END)) // 4)


async def ours_session(port: int, nfe_steps: int, texts: list[str], seed: int) -> list[Sample | None]:
    """One closed-loop client on our WebSocket API: one socket, one request after another; a refused
    request (``queue_full``, admission) is retried after the server's ``retry_after_ms``, as a client does,
    and its latency and first audio count from the first attempt."""
    from f5tts_client import StreamError, TTSClient

    out: list[Sample | None] = []
    async with TTSClient(f"ws://127.0.0.1:{port}/v1/stream") as client:
        for i, text in enumerate(texts):
            first_try, refusals = time.perf_counter(), 0
            while True:
                attempt = time.perf_counter()
                try:
                    result = await client.synthesize(text, voice="default", nfe_steps=nfe_steps, seed=seed + i)
                except StreamError as exc:
                    if exc.code == "queue_full" and exc.retry_after_ms is not None:
                        refusals += 1
                        await asyncio.sleep(exc.retry_after_ms / 1000)
                        continue
                    out.append(None)
                except ConnectionError:
                    out.append(None)
                else:
                    waited = attempt - first_try
                    out.append(Sample(waited + (result.latency_s or 0.0),
                                      None if result.ttfa_s is None else waited + result.ttfa_s,
                                      result.samples, refusals))
                break
    return out


async def upstream_session(port: int, texts: list[str]) -> list[Sample | None]:
    out: list[Sample | None] = []
    for text in texts:
        try:
            out.append(await upstream_request(port, text))
        except (ConnectionError, OSError):
            out.append(None)
    return out


def client_texts(client: int, requests: int) -> list[str]:
    # Every system gets the same texts per client; clients start at different sentences so the mix in
    # flight at any moment is varied.
    return [SENTENCES[(client + i) % len(SENTENCES)] for i in range(requests)]


async def closed_loop(system: str, port: int, args: argparse.Namespace) -> tuple[list[Sample | None], float]:
    t0 = time.perf_counter()
    sessions = [
        upstream_session(port, client_texts(c, args.requests)) if system == "upstream"
        else ours_session(port, args.nfe_steps, client_texts(c, args.requests), seed=1000 * c)
        for c in range(args.clients)
    ]
    results = await asyncio.gather(*sessions)
    return [s for session in results for s in session], time.perf_counter() - t0


async def model_seconds(port: int) -> float:
    """Seconds our server's model has spent running batches so far (``tts_batch_seconds_sum``)."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == "tts_batch_seconds_sum")


# -- statistics -------------------------------------------------------------------------------------------

def round_stats(system: str, index: int, samples: list[Sample | None], wall_s: float, foreign: float,
                busy_s: float | None = None) -> RoundStats:
    ok = [s for s in samples if s is not None]
    audio_s = sum(s.samples for s in ok) / 24_000
    lat = [s.latency_s for s in ok]
    ttfa = [s.ttfa_s for s in ok if s.ttfa_s is not None]
    return RoundStats(
        system=system, round=index, requests=len(ok), errors=len(samples) - len(ok),
        refusals=sum(s.refusals for s in ok), wall_s=round(wall_s, 3),
        requests_per_s=round(len(ok) / wall_s, 4),
        latency_p50_s=percentile(lat, 50), latency_p95_s=percentile(lat, 95),
        ttfa_p50_s=percentile(ttfa, 50), ttfa_p95_s=percentile(ttfa, 95),
        audio_s_per_request=round(audio_s / len(ok), 3) if ok else 0.0,
        audio_s_per_s=round(audio_s / wall_s, 3), foreign_cores=round(foreign, 3),
        model_busy=None if busy_s is None else round(busy_s / wall_s, 3),
    )


def summarise(rounds: list[RoundStats], systems: list[str]) -> dict[str, Any]:
    """Per system: median over rounds and [min, max] of each figure; ratios ours/upstream per round."""
    out: dict[str, Any] = {}
    for system in systems:
        mine = [r for r in rounds if r.system == system]
        figures: dict[str, Any] = {}
        for key in ("requests_per_s", "audio_s_per_s", "latency_p50_s", "latency_p95_s", "ttfa_p50_s",
                    "ttfa_p95_s", "model_busy"):
            values = [v for r in mine if (v := getattr(r, key)) is not None]
            if values:
                figures[key] = {"median": round(statistics.median(values), 4),
                                "range": [min(values), max(values)]}
        out[system] = figures
    for system in systems:
        if system == "upstream":
            continue
        ratios: dict[str, list[float]] = {}
        for key in ("requests_per_s", "audio_s_per_s", "latency_p50_s", "latency_p95_s", "ttfa_p50_s",
                    "ttfa_p95_s"):
            pairs = [(getattr(o, key), getattr(u, key)) for o, u in _paired(rounds, system)]
            ratios[key] = [round(o / u, 3) for o, u in pairs if o is not None and u]
        out[system]["ratio_to_upstream_per_round"] = ratios
    return out


def _paired(rounds: list[RoundStats], system: str) -> list[tuple[RoundStats, RoundStats]]:
    by_round = {(r.system, r.round): r for r in rounds}
    return [(by_round[(system, i)], by_round[("upstream", i)]) for (s, i) in by_round
            if s == system and ("upstream", i) in by_round]


# -- the run ----------------------------------------------------------------------------------------------

def _busy_jiffies() -> int:
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    return user + nice + system + irq + softirq + steal


def _process_jiffies(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


class ForeignCpu:
    """Cores used by processes other than this bench and its servers since construction: the load average
    cannot tell another engineer's bench from our own last segment, this can."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK")
        self.start = self._sample()

    def _sample(self) -> tuple[float, int, int]:
        times = os.times()
        own = round((times.user + times.system) * self.tick) + sum(_process_jiffies(p) for p in self.pids)
        return time.perf_counter(), _busy_jiffies(), own

    def cores(self) -> float:
        (t0, busy0, own0), (t1, busy1, own1) = self.start, self._sample()
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / self.tick / max(t1 - t0, 1e-6))


async def wait_until_idle(limit: float, max_wait_s: float) -> float:
    """Before a segment: wait (bounded) until other processes use at most ``limit`` cores."""
    started = time.perf_counter()
    while True:
        meter = ForeignCpu([])  # our servers are idle between segments; what is busy now is someone else
        await asyncio.sleep(2.0)
        foreign = meter.cores()
        if foreign <= limit or time.perf_counter() - started > max_wait_s:
            return foreign
        print(f"other processes busy on {foreign:.2f} cores; waiting", flush=True)
        await asyncio.sleep(8.0)


def clean_rounds(rounds: list[RoundStats], max_foreign: float) -> set[int]:
    indices = {r.round for r in rounds}
    return {i for i in indices if all(r.foreign_cores <= max_foreign for r in rounds if r.round == i)}


def wait_for_quiet(limit: float, max_wait_s: float) -> list[float]:
    """Another engineer may be benchmarking on this machine: wait (bounded) for the load to settle."""
    waited = 0.0
    while os.getloadavg()[0] > limit and waited < max_wait_s:
        print(f"load {os.getloadavg()[0]:.2f} > {limit}; waiting 20 s", flush=True)
        time.sleep(20)
        waited += 20
    return [round(x, 2) for x in os.getloadavg()]


def launch_all(args: argparse.Namespace, workdir: Path) -> dict[str, tuple[subprocess.Popen[bytes], int]]:
    tiny = ensure_tiny_model(Path(args.tiny_cache_dir) if args.tiny_cache_dir else None)
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for system in args.systems:
            port = free_port()
            command = (upstream_command(tiny, port, args.nfe_steps) if system == "upstream"
                       else ours_command(tiny, port, system))
            log = workdir / f"{system}.log"
            code_root = ROOT if system == "upstream" else Path(args.ours_root).resolve()
            procs[system] = (start(command, log, workdir, code_root), port)
        for system, (proc, port) in procs.items():
            probe = tcp_open(port) if system == "upstream" else http_ready(port)
            took = wait_ready(proc, probe, args.startup_timeout_s, workdir / f"{system}.log", poll_s=0.5)
            print(f"{system}: ready on port {port} ({took:.1f} s after the check began)", flush=True)
    except BaseException:
        for proc, _ in procs.values():
            stop(proc)
        raise
    return procs


async def measure(args: argparse.Namespace, procs: dict[str, tuple[subprocess.Popen[bytes], int]]
                  ) -> list[RoundStats]:
    for system, (_, port) in procs.items():  # one unrecorded request each: first-use costs out of round 1
        await closed_loop(system, port, argparse.Namespace(**{**vars(args), "clients": 1, "requests": 1}))
    rounds: list[RoundStats] = []
    for index in range(args.rounds):
        for system, (_, port) in procs.items():
            await wait_until_idle(args.max_foreign, args.max_load_wait_s)
            meter = ForeignCpu([p.pid for p, _ in procs.values()])
            busy0 = None if system == "upstream" else await model_seconds(port)
            samples, wall = await closed_loop(system, port, args)
            busy = None if busy0 is None else await model_seconds(port) - busy0
            stats = round_stats(system, index, samples, wall, meter.cores(), busy)
            rounds.append(stats)
            print(f"round {index} {system:12s} {stats.requests_per_s:.3f} req/s  p50 {stats.latency_p50_s} s"
                  f"  p95 {stats.latency_p95_s} s  ttfa p50 {stats.ttfa_p50_s} s  errors {stats.errors}"
                  f"  refused then retried {stats.refusals}"
                  f"  foreign cpu {stats.foreign_cores:.2f} cores"
                  + ("" if stats.model_busy is None else f"  model busy {stats.model_busy:.0%}"), flush=True)
    return rounds


def table(summary: dict[str, Any], systems: list[str]) -> str:
    keys = ("requests_per_s", "audio_s_per_s", "latency_p50_s", "latency_p95_s", "ttfa_p50_s", "ttfa_p95_s")
    lines = [f"{'system':14s}" + "".join(f"{k:>22s}" for k in keys)]
    for system in systems:
        cells = []
        for key in keys:
            fig = summary[system].get(key)
            cells.append(f"{fig['median']:.3f} [{fig['range'][0]:.2f}-{fig['range'][1]:.2f}]" if fig else "-")
        lines.append(f"{system:14s}" + "".join(f"{c:>22s}" for c in cells))
        ratios = summary[system].get("ratio_to_upstream_per_round")
        if ratios:
            cells = [("/".join(f"{r:.2f}" for r in ratios[k]) or "-") for k in keys]
            lines.append(f"{'  ÷ upstream':14s}" + "".join(f"{c:>22s}" for c in cells))
    return "\n".join(lines)


def goals(summary: dict[str, Any]) -> dict[str, Any]:
    """The default (latency) policy against upstream, every round: p50 latency <= 0.9x, requests/s >= 1.1x."""
    ratios = summary.get("ours-latency", {}).get("ratio_to_upstream_per_round", {})
    p50, rps = ratios.get("latency_p50_s", []), ratios.get("requests_per_s", [])
    return {"latency_p50_ratio_le_0_9": bool(p50) and max(p50) <= 0.9,
            "requests_per_s_ratio_ge_1_1": bool(rps) and min(rps) >= 1.1,
            "latency_p50_ratios": p50, "requests_per_s_ratios": rps}


def bench(args: argparse.Namespace) -> dict[str, Any]:
    load_before = wait_for_quiet(args.max_load, args.max_load_wait_s)
    print(f"load average before start: {load_before}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-upstream-") as tmp:
        workdir = Path(tmp)  # upstream writes output.wav into its working directory
        procs = launch_all(args, workdir)
        try:
            load_measure = wait_for_quiet(args.max_load, args.max_load_wait_s)
            rounds = asyncio.run(measure(args, procs))
        finally:
            for proc, _ in procs.values():
                stop(proc)
    clean = clean_rounds(rounds, args.max_foreign)
    summary = summarise([r for r in rounds if r.round in clean] or rounds, args.systems)
    return {"config": {k: v for k, v in vars(args).items() if k != "command"}, "sentences": SENTENCES,
            "load_before_start": load_before, "load_before_measuring": load_measure,
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "rounds": [asdict(r) for r in rounds], "clean_rounds": sorted(clean),
            "summary_over": "clean rounds" if clean else "all rounds (none clean)", "summary": summary,
            "goals": goals(summary)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cli = parser(__doc__)
    sub = cli.add_subparsers(dest="command")
    serve = sub.add_parser("serve-upstream", help="(internal) upstream's socket server on the tiny model")
    serve.add_argument("--port", type=int, required=True)
    for name in ("--ckpt", "--vocab", "--vocoder-dir"):
        serve.add_argument(name, required=True)
    serve.add_argument("--nfe-steps", type=int, default=32)
    cli.add_argument("--clients", type=int, default=8)
    cli.add_argument("--requests", type=int, default=3, help="requests per client per round")
    cli.add_argument("--rounds", type=int, default=2)
    cli.add_argument("--nfe-steps", type=int, default=32)
    cli.add_argument("--systems", nargs="+", default=["upstream", *OURS], choices=["upstream", *OURS])
    cli.add_argument("--tiny-cache-dir", default="")
    cli.add_argument("--ours-root", default=str(ROOT),
                        help="the tree our server runs from (e.g. a `git archive HEAD` snapshot while the shared "
                             "checkout is mid-change)")
    cli.add_argument("--startup-timeout-s", type=float, default=300.0)
    cli.add_argument("--max-load", type=float, default=1.5, help="wait while the 1-min load is above this")
    cli.add_argument("--max-foreign", type=float, default=0.25,
                        help="a round counts as clean when other processes used at most this many cores")
    cli.add_argument("--max-load-wait-s", type=float, default=180.0)
    cli.add_argument("--out", default=str(ROOT / "out" / "bench_upstream.json"))
    return cli.parse_args(argv)


def main() -> int:
    args = parse_args()
    if args.command == "serve-upstream":
        serve_upstream(args)
        return 0
    report = bench(args)
    write_json(report, args.out)
    print(table(report["summary"], args.systems))
    print(json.dumps(report["goals"]))
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
