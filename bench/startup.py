#!/usr/bin/env python3
"""Cold start, measured from outside: spawn ``python -m server`` N times, time process start to
``/readyz`` 200, read the idle RSS and the server's own startup breakdown. JSON to stdout (or --json),
a table to stderr.

    python -m bench.startup --runs 5                       # tiny profile, this checkout
    python -m bench.startup --runs 5 --cwd /tmp/old-tree   # the same for another tree
    python -m bench.startup --runs 1 --importtime          # plus the slowest imports
    python -m bench.startup --full-load F5TTS_v1_Base --runs 3 [--cwd ...] [--dtype bfloat16]

The first spawn (``--discard``, default 1) writes the tiny model if needed and fills the page cache;
it is not counted, so the figures are page-cache-warm starts, as on a worker whose image is cached.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    free_port,
    http_ready,
    http_status,
    parser,
    print_json,
    rss_mb,
    server_command,
    spread,
    start_process,
    stop,
    wait_ready,
    write_json,
)

POLL_S = 0.01
PHASES = ("import", "load", "warmup", "total")
PHASE_RE = re.compile(r'^tts_startup_seconds\{phase="(\w+)"\} ([0-9.eE+-]+)$', re.M)


@dataclass
class Run:
    ready_s: float
    rss_mb: float
    metric_phases: dict[str, float]
    log_phases: dict[str, float] = field(default_factory=dict)


def log_phases(log_text: str) -> dict[str, float]:
    """The phases of the JSON ``startup`` log line (absent in trees that predate it)."""
    for line in log_text.splitlines():
        if '"msg":"startup"' in line.replace(" ", ""):
            entry = json.loads(line)
            return {k.removesuffix("_seconds"): float(v) for k, v in entry.items() if k.endswith("_seconds")}
    return {}


def spawn_once(args: argparse.Namespace, python_flags: list[str], log_path: Path) -> Run:
    port = free_port()
    command = server_command(port, "--log-format", "json", *args.server_args, model=args.model, python=args.python)
    command[1:1] = python_flags  # interpreter flags (-X importtime) go before -m
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    started = time.perf_counter()
    proc = start_process(command, log_path, args.cwd, env=env)
    try:
        wait_ready(proc, http_ready(port), args.timeout, log_path, poll_s=POLL_S)
        ready = time.perf_counter() - started
        time.sleep(args.idle)  # idle RSS: after startup's transient allocations have settled
        rss = rss_mb(proc.pid)
        phases = {p: float(v) for p, v in PHASE_RE.findall(http_status(f"http://127.0.0.1:{port}/metrics")[1])}
    finally:
        stop(proc, grace_s=30)
    return Run(round(ready, 3), round(rss, 1), phases, log_phases(log_path.read_text(errors="replace")))


def slowest_imports(log_text: str, top: int) -> list[dict[str, Any]]:
    """``-X importtime`` lines: the top-level imports by cumulative time."""
    rows: list[tuple[float, str, int]] = []
    for line in log_text.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(3)) <= 9:  # four levels: our modules and the packages they import
            rows.append((int(match.group(2)) / 1e6, match.group(4), len(match.group(3)) // 2))
    rows.sort(reverse=True)
    return [{"module": m, "cumulative_s": s, "depth": d} for s, m, d in rows[:top]]


# Released F5 checkpoints are EMA safetensors; write one of the full-size architecture, random weights.
WRITE_CHECKPOINT = """
import sys, torch
from pathlib import Path
from safetensors.torch import save_file
from engine.loader import build_cfm, load_vocab
from engine.models import model_spec
from bench.engine import full_vocos
vocab, size = load_vocab("")
model = build_cfm(model_spec({model!r}), vocab, size)
state = {{f"ema_model.{{k}}": v.contiguous() for k, v in model.state_dict().items()}}
save_file({{**state, "initted": torch.tensor([True]), "step": torch.tensor([1])}}, {ckpt!r})
full_vocos(Path({root!r}))
"""
LOAD_PROBE = """
import json, os, resource, sys
sys.path.insert(0, os.getcwd())
from engine import Engine, EngineConfig
def rss(): return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
before = rss()
engine = Engine.load(EngineConfig(model={model!r}, device={device!r}, dtype={dtype!r}, ckpt_file={ckpt!r},
                                  vocoder_path={vocoder!r}))
print(json.dumps({{"load_s": round(engine.load_seconds, 3), "rss_added_mb": round(rss() - before),
                  "peak_added_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before),
                  "dtype": str(engine.dtype)}}))
"""


def full_size_load(args: argparse.Namespace) -> dict[str, Any]:
    """``Engine.load`` of a full-size random EMA checkpoint, each run in a fresh process of ``--cwd``'s
    tree. Peak RSS includes the checkpoint's memory-mapped pages (page cache, not model memory)."""
    repo = str(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = str(Path(tmp) / "model.safetensors")
        code = WRITE_CHECKPOINT.format(model=args.full_load, ckpt=ckpt, root=tmp)
        subprocess.run([args.python, "-c", code], cwd=repo, check=True)
        probe = LOAD_PROBE.format(model=args.full_load, device=args.device, dtype=args.dtype, ckpt=ckpt,
                                  vocoder=str(Path(tmp) / "vocos"))
        runs = [json.loads(subprocess.run([args.python, "-c", probe], cwd=args.cwd, check=True,
                                          capture_output=True, text=True).stdout) for _ in range(args.runs)]
    return {"model": args.full_load, "cwd": args.cwd, "runs": runs,
            "load_s": spread([r["load_s"] for r in runs])}


def report(runs: list[Run]) -> dict[str, Any]:
    ready = [r.ready_s for r in runs]
    phases = sorted({p for r in runs for p in r.metric_phases})
    out: dict[str, Any] = {"ready_s": spread(ready), "rss_mb": spread([r.rss_mb for r in runs]),
                           "metric_phases_s": {p: spread([r.metric_phases[p] for r in runs
                                                           if p in r.metric_phases]) for p in phases}}
    totals = [(r.metric_phases["total"], r.ready_s) for r in runs if "total" in r.metric_phases]
    if totals:  # how far the server's own total is from what an orchestrator sees
        out["metric_total_vs_external"] = spread([round(t / e - 1, 4) for t, e in totals])
    return out


def print_table(runs: list[Run]) -> None:
    seen = {p for r in runs for p in r.metric_phases}
    phases = [p for p in PHASES if p in seen] + sorted(seen - set(PHASES))
    head = f"{'run':>3} {'ready s':>8} {'RSS MB':>8} " + " ".join(f"{p + ' s':>9}" for p in phases)
    print(head, file=sys.stderr)
    for i, r in enumerate(runs, 1):
        cells = " ".join(f"{r.metric_phases.get(p, float('nan')):9.3f}" for p in phases)
        print(f"{i:>3} {r.ready_s:8.3f} {r.rss_mb:8.1f} {cells}", file=sys.stderr)


def main() -> int:
    cli = parser(__doc__)
    cli.add_argument("--runs", type=int, default=5)
    cli.add_argument("--discard", type=int, default=1, help="uncounted spawns first (tiny model, page cache)")
    cli.add_argument("--model", default="tiny")
    cli.add_argument("--python", default=sys.executable)
    cli.add_argument("--cwd", default=str(ROOT), help="tree to start")
    cli.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for the server (0: unset)")
    cli.add_argument("--idle", type=float, default=1.0, help="seconds after ready before reading RSS")
    cli.add_argument("--timeout", type=float, default=120.0)
    cli.add_argument("--importtime", action="store_true", help="one more run under -X importtime")
    cli.add_argument("--json", default="", help="write the JSON here instead of stdout")
    cli.add_argument("--full-load", default="", metavar="MODEL",
                        help="instead: time Engine.load of MODEL's full-size architecture, random EMA weights")
    cli.add_argument("--device", default="cpu", help="with --full-load")
    cli.add_argument("--dtype", default="auto", help="with --full-load")
    cli.add_argument("server_args", nargs="*", help="extra server flags (after --)")
    args = cli.parse_args()
    if args.full_load:
        print_json(full_size_load(args))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        for _ in range(args.discard):
            spawn_once(args, [], log)
        runs = [spawn_once(args, [], log) for _ in range(args.runs)]
        result: dict[str, Any] = {"model": args.model, "cwd": args.cwd, "runs": [asdict(r) for r in runs],
                                  **report(runs)}
        if args.importtime:
            spawn_once(args, ["-X", "importtime"], log)
            result["slowest_imports"] = slowest_imports(log.read_text(errors="replace"), 25)
    print_table(runs)
    if args.json:
        write_json(result, args.json)
    else:
        print_json(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
