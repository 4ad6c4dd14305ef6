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
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

POLL_S = 0.01
PHASES = ("import", "load", "warmup", "total")
PHASE_RE = re.compile(r'^tts_startup_seconds\{phase="(\w+)"\} ([0-9.eE+-]+)$', re.M)


@dataclass
class Run:
    ready_s: float
    rss_mb: float
    metric_phases: dict[str, float]
    log_phases: dict[str, float] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def wait_ready(proc: subprocess.Popen[bytes], base: str, timeout_s: float) -> float:
    """The ``perf_counter`` instant of the first 200 from /readyz."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before it was ready")
        if http_get(f"{base}/readyz")[0] == 200:
            return time.perf_counter()
        time.sleep(POLL_S)
    raise TimeoutError(f"not ready after {timeout_s} s")


def log_phases(log_text: str) -> dict[str, float]:
    """The phases of the JSON ``startup`` log line (absent in trees that predate it)."""
    for line in log_text.splitlines():
        if '"msg":"startup"' in line.replace(" ", ""):
            entry = json.loads(line)
            return {k.removesuffix("_seconds"): float(v) for k, v in entry.items() if k.endswith("_seconds")}
    return {}


def spawn_once(args: argparse.Namespace, python_flags: list[str], log_path: Path) -> Run:
    port = free_port()
    command = [args.python, *python_flags, "-m", "server", "--model", args.model, "--port", str(port),
               "--host", "127.0.0.1", "--log-format", "json", *args.server_args]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads)) if args.threads else dict(os.environ)
    with log_path.open("wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=args.cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            ready = wait_ready(proc, f"http://127.0.0.1:{port}", args.timeout) - started
            time.sleep(args.idle)  # idle RSS: after startup's transient allocations have settled
            rss = rss_mb(proc.pid)
            phases = {p: float(v) for p, v in PHASE_RE.findall(http_get(f"http://127.0.0.1:{port}/metrics")[1])}
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
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
    repo = str(Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = str(Path(tmp) / "model.safetensors")
        code = WRITE_CHECKPOINT.format(model=args.full_load, ckpt=ckpt, root=tmp)
        subprocess.run([args.python, "-c", code], cwd=repo, check=True)
        probe = LOAD_PROBE.format(model=args.full_load, device=args.device, dtype=args.dtype, ckpt=ckpt,
                                  vocoder=str(Path(tmp) / "vocos"))
        runs = [json.loads(subprocess.run([args.python, "-c", probe], cwd=args.cwd, check=True,
                                          capture_output=True, text=True).stdout) for _ in range(args.runs)]
    return {"model": args.full_load, "cwd": args.cwd, "runs": runs,
            "load_s": summary([r["load_s"] for r in runs])}


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": round(statistics.median(values), 3), "max": max(values)}


def report(runs: list[Run]) -> dict[str, Any]:
    ready = [r.ready_s for r in runs]
    phases = sorted({p for r in runs for p in r.metric_phases})
    out: dict[str, Any] = {"ready_s": summary(ready), "rss_mb": summary([r.rss_mb for r in runs]),
                           "metric_phases_s": {p: summary([r.metric_phases[p] for r in runs
                                                           if p in r.metric_phases]) for p in phases}}
    totals = [(r.metric_phases["total"], r.ready_s) for r in runs if "total" in r.metric_phases]
    if totals:  # how far the server's own total is from what an orchestrator sees
        out["metric_total_vs_external"] = summary([round(t / e - 1, 4) for t, e in totals])
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--discard", type=int, default=1, help="uncounted spawns first (tiny model, page cache)")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--cwd", default=str(Path(__file__).resolve().parent.parent), help="tree to start")
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for the server (0: unset)")
    parser.add_argument("--idle", type=float, default=1.0, help="seconds after ready before reading RSS")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--importtime", action="store_true", help="one more run under -X importtime")
    parser.add_argument("--json", default="", help="write the JSON here instead of stdout")
    parser.add_argument("--full-load", default="", metavar="MODEL",
                        help="instead: time Engine.load of MODEL's full-size architecture, random EMA weights")
    parser.add_argument("--device", default="cpu", help="with --full-load")
    parser.add_argument("--dtype", default="auto", help="with --full-load")
    parser.add_argument("server_args", nargs="*", help="extra server flags (after --)")
    args = parser.parse_args()
    if args.full_load:
        print(json.dumps(full_size_load(args), indent=2))
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
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
