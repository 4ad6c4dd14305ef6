"""What every benchmark shares: statistics, server processes, ports, readiness, reports and arguments.

Importing this module loads neither torch nor the server, so client-side benchmarks stay light; the engine
helpers that need torch live in :mod:`bench.models`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
"""The checkout the benchmarks belong to (the default tree a server process runs from)."""

# (weight, text): what a voice agent mostly says is short; some answers are long.
TEXT_MIX = [
    (5, "Sure, I can help with that."),
    (5, "Thanks for calling. How can I help you today?"),
    (4, "Your order has shipped and should arrive on Thursday between nine and five."),
    (3, "I found three flights that match. The earliest leaves at seven fifteen and arrives at ten."),
    (2, "Let me explain how this works. First, you choose a plan. Then we set up your account and send "
        "you a confirmation email. After that, you can start using the service right away."),
    (1, "Here is a summary of today's news. Markets rose slightly in early trading. A storm is expected "
        "along the coast tonight, with heavy rain and strong winds. Local elections take place next week, "
        "and polling stations open at eight in the morning."),
]

Probe = Callable[[], bool]


# -- statistics ---------------------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0–100) with linear interpolation between ranks, rounded to 4 digits;
    ``None`` without values (a report then says "no data" rather than a made-up zero)."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * min(100.0, max(0.0, q)) / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 4)


def spread(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """Minimum, median and maximum of repeated runs."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {"min": round(ordered[0], digits), "median": round(median, digits), "max": round(ordered[-1], digits)}


# -- ports and processes ------------------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's choice, so parallel runs do not collide)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(port: int, *flags: str, model: str = "tiny", python: str = sys.executable) -> list[str]:
    """``python -m server`` on 127.0.0.1:``port`` with ``flags`` after the model and address."""
    return [python, "-m", "server", "--model", model, "--host", "127.0.0.1", "--port", str(port), *flags]


def start_process(command: list[str], log: Path, cwd: Path | str = ROOT, code_root: Path | str | None = None,
                  env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``command`` in ``cwd`` with its output in ``log`` (a fresh file); it imports its code from
    ``code_root`` (default: ``cwd``), so another checkout can be measured with this one's benchmark."""
    environment = {**os.environ, "PYTHONPATH": str(code_root or cwd), **(env or {})}
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, cwd=cwd, env=environment, stdout=out, stderr=subprocess.STDOUT)


def http_status(url: str, timeout_s: float = 2.0) -> tuple[int, str]:
    """Status and body of a GET; 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def http_ready(port: int, path: str = "/readyz") -> Probe:
    """Probe: ``path`` answers 200."""
    return lambda: http_status(f"http://127.0.0.1:{port}{path}", timeout_s=1.0)[0] == 200


def tcp_open(port: int) -> Probe:
    """Probe: something accepts TCP connections on ``port``."""
    def probe() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False
    return probe


def wait_ready(proc: subprocess.Popen[bytes], probe: Probe, timeout_s: float, log: Path | None = None,
               poll_s: float = 0.1) -> float:
    """Seconds until ``probe`` holds; raises if the process exits first or the time runs out."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None:
            tail = f"; log {log}:\n{log.read_text(errors='replace')[-3000:]}" if log else ""
            raise RuntimeError(f"server exited with status {proc.returncode} before it was ready{tail}")
        if probe():
            return time.perf_counter() - started
        time.sleep(poll_s)
    raise TimeoutError(f"server not ready after {timeout_s:.0f} s" + (f"; log {log}" if log else ""))


def stop(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM (the server drains), then SIGKILL after ``grace_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def served(*flags: str, model: str = "tiny", timeout_s: float = 600.0) -> Iterator[tuple[str, Path]]:
    """``python -m server`` as shipped (plus ``flags``) on a free port, until ready: (its base URL, its log,
    kept after the server stops); stopped on exit."""
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="bench-server-")) / "server.log"
    proc = start_process(server_command(port, *flags, model=model), log)
    try:
        wait_ready(proc, http_ready(port), timeout_s, log)
        yield f"http://127.0.0.1:{port}", log
    finally:
        stop(proc)


def rss_mb(pid: int) -> float:
    """Resident memory of a live process, MiB (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


# -- reports ------------------------------------------------------------------------------------------------

def write_json(report: Any, out: Path | str) -> Path:
    """Write ``report`` as indented JSON to ``out`` (``.json`` added when it has no suffix)."""
    path = Path(out)
    if not path.suffix:
        path = path.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def print_json(report: Any) -> None:
    print(json.dumps(report, indent=2))


def figure(rows: int, cols: int, size: tuple[float, float], **kwargs: Any) -> tuple[Any, Any]:
    """A matplotlib figure and its axes, drawn off-screen (benchmarks run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=size, **kwargs)


def save_png(fig: Any, path: Path | str, axes: Sequence[Any] = (), legend: bool = True) -> Path:
    """Grid (and legend) on ``axes``, tight layout, PNG at ``path`` (``.png`` suffix forced)."""
    for ax in axes:
        ax.grid(alpha=0.3)
        if legend:
            ax.legend()
    fig.tight_layout()
    target = Path(path).with_suffix(".png")
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    return target


# -- arguments ----------------------------------------------------------------------------------------------

def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser whose help is the benchmark's docstring, kept as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_engine_args(parser: argparse.ArgumentParser, nfe_steps: int = 32, dtype: bool = False,
                    random_weights: bool = True) -> None:
    """The engine a benchmark builds: ``--model``, ``--device``, ``--nfe-steps`` (and ``--dtype``,
    ``--random-weights`` where the benchmark supports them)."""
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="auto")
    if dtype:
        parser.add_argument("--dtype", default="auto")
    if random_weights:
        parser.add_argument("--random-weights", action="store_true", help="full-size architecture, random weights")
    parser.add_argument("--nfe-steps", type=int, default=nfe_steps)


def int_list(text: str) -> list[int]:
    """``"1,2,4"`` → ``[1, 2, 4]`` (argument type)."""
    return [int(x) for x in text.split(",") if x]
