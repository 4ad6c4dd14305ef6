"""Replicas of ``python -m server`` on one voices dir behind HAProxy (deploy/haproxy/haproxy.cfg), and
clients that say exactly how a stream ended. Used by tests/test_fleet.py."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
NFE = 4
DRAIN_DELAY_S = 2.0
"""Longer than the balancer needs to see readiness go off (2 checks 500 ms apart), short for a test."""


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)


@dataclass
class Heard:
    """How one stream ended, as its client saw it."""

    samples: int = 0
    end: dict[str, Any] | None = None
    error: str | None = None
    """The error code the server sent."""
    closed: bool = False
    """The connection closed (or broke) before the stream's end."""
    ended: float = 0.0
    """time.monotonic() when the client knew."""

    @property
    def ok(self) -> bool:
        return self.error is None and not self.closed and self.end is not None and \
            self.end.get("samples", self.samples) == self.samples and self.samples > 0

    @property
    def failure(self) -> str:
        return f"error={self.error} closed={self.closed} samples={self.samples} end={self.end}"


async def speak_ws(session: aiohttp.ClientSession, url: str, voice: str, text: str,
                   playing: asyncio.Event | None = None, nfe: int = NFE) -> Heard:
    """One stream on its own WebSocket (so a balancer places each stream afresh)."""
    heard = Heard()
    try:
        async with session.ws_connect(f"{url.replace('http', 'ws', 1)}/v1/stream") as ws:
            await ws.send_json({"type": "synthesize", "id": "s", "text": text, "voice": voice, "nfe_steps": nfe,
                                "seed": 1})
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    heard.samples += (len(message.data) - 8) // 2
                    if playing is not None:
                        playing.set()
                    continue
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                event = orjson.loads(message.data)
                if event["type"] == "audio_end":
                    heard.end = event
                    break
                if event["type"] == "error":
                    heard.error = event["code"]
                    break
            else:
                heard.closed = True
    except (aiohttp.ClientError, ConnectionError):
        heard.closed = True
    heard.closed = heard.closed or (heard.end is None and heard.error is None)
    heard.ended = time.monotonic()
    return heard


async def speak_http(session: aiohttp.ClientSession, url: str, voice: str, text: str) -> Heard:
    heard = Heard()
    body = {"model": "tts-1", "input": text, "voice": voice, "response_format": "pcm", "nfe_steps": NFE, "seed": 1}
    try:
        async with session.post(f"{url}/v1/audio/speech", json=body) as response:
            data = await response.read()
            if response.status != 200:
                heard.error = str(orjson.loads(data)["error"]["code"])
            else:
                heard.samples = len(data) // 2
                heard.end = {"samples": heard.samples}
    except (aiohttp.ClientError, ConnectionError):
        heard.closed = True
    heard.ended = time.monotonic()
    return heard


class Fleet:
    """``size`` replicas (loopback ports, one voices dir) and one HAProxy in front of them."""

    def __init__(self, root: Path, tiny_cache: Path, size: int = 3) -> None:
        self.root, self.tiny_cache, self.size = root, tiny_cache, size
        self.ports = [free_port() for _ in range(size)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size
        self.lb_port, self.stats_port = free_port(), free_port()
        self.balancer: subprocess.Popen[bytes] | None = None
        self.figures: dict[str, Any] = {}
        """What the tests measured, written to ``<root>/figures.json`` at the end (docs/scaling.md quotes it)."""

    @property
    def lb_url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    def replica_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def start_balancer(self, binary: str) -> None:
        env = {**os.environ, "TTS_LB_BIND": f"127.0.0.1:{self.lb_port}",
               "TTS_LB_STATS": f"127.0.0.1:{self.stats_port}",
               **{f"TTS_REPLICA_{i + 1}": f"127.0.0.1:{port}" for i, port in enumerate(self.ports)}}
        log = (self.root / "haproxy.log").open("ab")
        self.balancer = subprocess.Popen([binary, "-db", "-f", str(CONFIG)], env=env, stdout=log, stderr=log)

    def start_replica(self, index: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TTS_")}
        # One OpenMP thread each: three replicas' teams spinning on two cores would slow every pass severalfold
        env.update({"TTS_TINY_CACHE_DIR": str(self.tiny_cache), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
        log = (self.root / f"replica{index + 1}.log").open("ab")
        # A generous grace: on a loaded 2-core box a drained stream can take tens of seconds to finish
        self.procs[index] = subprocess.Popen(
            [sys.executable, "-m", "server", "--model", "tiny", "--host", "127.0.0.1", "--port",
             str(self.ports[index]), "--voices-dir", str(self.root / "voices"), "--no-warmup",
             "--default-nfe-steps", str(NFE), "--max-batch-size", "4", "--drain-delay-s", str(DRAIN_DELAY_S),
             "--shutdown-grace-s", "60", "--no-admission"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    async def ensure_up(self, *indices: int, timeout: float = 120.0) -> None:
        """These replicas (default: all) running, ready and in the balancer's rotation; any of them that a
        test ended is started again."""
        wanted = indices or tuple(range(self.size))
        for index in wanted:
            proc = self.procs[index]
            if proc is None or proc.poll() is not None:
                self.start_replica(index)
        deadline = time.monotonic() + timeout
        while True:
            for index in wanted:
                proc = self.procs[index]
                assert proc is not None and proc.poll() is None, \
                    (self.root / f"replica{index + 1}.log").read_text()[-3000:]
            states = await self.balancer_states()
            if all(states.get(f"replica{index + 1}") == "UP" for index in wanted):
                return
            assert time.monotonic() < deadline, f"fleet not up within {timeout} s: {states}"
            await asyncio.sleep(0.2)

    def running(self) -> list[int]:
        return [index for index, proc in enumerate(self.procs) if proc is not None and proc.poll() is None]

    def write_figures(self) -> Path:
        path = self.root / "figures.json"
        path.write_bytes(orjson.dumps(self.figures, option=orjson.OPT_INDENT_2))
        return path

    def stop(self) -> None:
        for proc in [*self.procs, self.balancer]:
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.wait(10)

    async def balancer_states(self) -> dict[str, str]:
        """Server name (replica1, ...) -> HAProxy's view: UP, DOWN, "UP 1/2" (going down), ..."""
        url = f"http://127.0.0.1:{self.stats_port}/stats;csv"
        try:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                text = (await response.text()).removeprefix("# ")
        except aiohttp.ClientError:
            return {}
        rows = csv.DictReader(io.StringIO(text))
        return {row["svname"]: row["status"] for row in rows
                if row["pxname"] == "replicas" and row["svname"].startswith("replica")}

    async def until_down(self, index: int, timeout: float = 10.0) -> float:
        """When the balancer first counted a replica out (polled every 50 ms)."""
        deadline = time.monotonic() + timeout
        while not (await self.balancer_states()).get(f"replica{index + 1}", "").startswith("DOWN"):
            assert time.monotonic() < deadline, f"the balancer still sends to replica {index + 1}"
            await asyncio.sleep(0.05)
        return time.monotonic()

    async def until_busy(self, index: int, timeout: float = 30.0) -> None:
        """Until a replica has a stream in flight (polled every 50 ms)."""
        deadline = time.monotonic() + timeout
        while await self.inflight(index) == 0:
            assert time.monotonic() < deadline, f"replica {index + 1} got no stream"
            await asyncio.sleep(0.05)

    async def readiness(self, index: int) -> int:
        async with aiohttp.ClientSession() as session, session.get(f"{self.replica_url(index)}/readyz") as r:
            return r.status

    async def _metrics(self, index: int) -> list[Any]:
        async with aiohttp.ClientSession() as session, session.get(f"{self.replica_url(index)}/metrics") as r:
            return list(text_string_to_metric_families(await r.text()))

    async def outcomes(self, index: int) -> Counter[str]:
        """Requests a replica finished, by outcome (all transports)."""
        counts: Counter[str] = Counter()
        for family in await self._metrics(index):
            for sample in family.samples:
                if sample.name == "tts_requests_total":
                    counts[sample.labels["outcome"]] += int(sample.value)
        return counts

    async def inflight(self, index: int) -> int:
        return int(sum(sample.value for family in await self._metrics(index) for sample in family.samples
                       if sample.name == "tts_inflight_requests"))

    async def until_refused(self, session: aiohttp.ClientSession, index: int, voice: str,
                            timeout: float = 10.0) -> float:
        """When a replica first answered 404 for a voice (polled every 50 ms)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with session.get(f"{self.replica_url(index)}/v1/voices/{voice}") as response:
                if response.status == 404:
                    return time.monotonic()
            await asyncio.sleep(0.05)
        raise AssertionError(f"replica {index + 1} still serves {voice!r} after {timeout} s")
