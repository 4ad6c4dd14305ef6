"""Reproduce a slowloris attack against a server tree: N half-open connections (a header line every 2 s)
on a server with a low fd limit; then time ``GET /healthz``, count the server's fds and its log volume.

    python -m bench.repro.slowloris --tree . --port 18802 --connections 1100 --fd-limit 1024
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import time
import urllib.request
from pathlib import Path

from bench.common import server_command


async def attacker(port: int, stop: asyncio.Event) -> None:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        while not stop.is_set():
            await asyncio.sleep(2)
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()
    except OSError:
        pass


def healthz(port: int) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            return str(response.status), round(time.perf_counter() - started, 3)
    except Exception as exc:  # the point is to see how it fails
        return type(exc).__name__, round(time.perf_counter() - started, 3)


def start(tree: str, port: int, fd_limit: int, log: Path) -> subprocess.Popen[bytes]:
    server = shlex.join(server_command(port, "--no-warmup", "--voices-dir", ""))
    command = f"ulimit -n {fd_limit}; exec {server}"
    with log.open("w") as sink:
        return subprocess.Popen(["bash", "-c", command], cwd=tree, env={**os.environ, "PYTHONPATH": tree},
                                stdout=sink, stderr=subprocess.STDOUT)


async def run(tree: str, port: int, connections: int, fd_limit: int) -> None:
    log = Path(f"/tmp/slowloris-{port}.log")
    proc = start(tree, port, fd_limit, log)
    for _ in range(300):
        if healthz(port)[0] == "200":
            break
        await asyncio.sleep(0.2)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(attacker(port, stop)) for _ in range(connections)]
    figures = []
    for wait in (5, 20):
        await asyncio.sleep(wait)
        fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
        figures.append(f"fds={fds} healthz={await asyncio.to_thread(healthz, port)}")
    stop.set()
    for task in tasks:
        task.cancel()
    proc.terminate()
    proc.wait(30)
    lines = sum(1 for _ in log.open(errors="replace"))
    print(f"{tree}: {connections} half-open connections, fd limit {fd_limit}: after 5 s {figures[0]}; "
          f"after 25 s {figures[1]}; server log {lines} lines, {log.stat().st_size} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", default=".", help="checkout to run (e.g. a git worktree of an old commit)")
    parser.add_argument("--port", type=int, default=18802)
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--fd-limit", type=int, default=1024)
    args = parser.parse_args()
    asyncio.run(run(str(Path(args.tree).resolve()), args.port, args.connections, args.fd_limit))


if __name__ == "__main__":
    main()
