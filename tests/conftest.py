from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from bench.common import free_port as free_port  # one definition for benches and tests
from engine import Engine, EngineConfig, Voice
from server.app import create_app
from server.core.settings import Settings
from server.core.state import STATE, AppState
from tests.audio import EN_TRANSCRIPT, ZH_TRANSCRIPT, chinese_clip, encode, english_clip


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache per test run, so the tiny profile's writer is exercised every time."""
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="session")
def tiny_config(tiny_cache: Path) -> EngineConfig:
    return EngineConfig(model="tiny", device="cpu", tiny_cache_dir=tiny_cache)


@pytest.fixture(scope="session")
def engine(tiny_config: EngineConfig) -> Iterator[Engine]:
    yield Engine.load(tiny_config)


@pytest.fixture(scope="session")
def voice_en(engine: Engine) -> Voice:
    samples, rate = english_clip(1.0)
    return engine.prepare_voice("en", encode(samples, rate), EN_TRANSCRIPT)


@pytest.fixture(scope="session")
def voice_zh(engine: Engine) -> Voice:
    samples, rate = chinese_clip(1.0)
    return engine.prepare_voice("zh", encode(samples, rate), ZH_TRANSCRIPT)


# -- helpers ------------------------------------------------------------------------------------------------

def server_env(tiny_cache: Path, **extra: str) -> dict[str, str]:
    """Environment for a ``python -m server`` child: this process's, minus any ``TTS_*`` setting, plus the
    tiny profile's cache and the suite's small defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TTS_")}
    env.update({"TTS_TINY_CACHE_DIR": str(tiny_cache), "TTS_DEFAULT_NFE_STEPS": "4", "TTS_MAX_BATCH_SIZE": "4",
                "TTS_COST_SEED_DIR": "off", "PYTHONUNBUFFERED": "1", **extra})
    return env


async def wait_ready(proc: subprocess.Popen[str], port: int, timeout: float = 90) -> list[int]:
    """Poll a child server's /readyz until 200; returns every status seen (connection refused is not one)."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "server exited during startup"
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    seen.append(response.status)
                    if response.status == 200:
                        return seen
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("server never became ready")


async def wait_until(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll ``check`` until it holds; fail (not hang) after ``timeout``. Tests wait on conditions, not sleeps."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        await asyncio.sleep(interval)


# -- server fixtures ------------------------------------------------------------------------------------





@dataclass
class LiveServer:
    server: TestServer
    app: web.Application
    registry: CollectorRegistry

    @property
    def state(self) -> AppState:
        return self.app[STATE]

    def url(self, path: str, ws: bool = False) -> str:
        base = str(self.server.make_url(path))
        return base.replace("http://", "ws://", 1) if ws else base

    @property
    def ws_url(self) -> str:
        return self.url("/v1/stream", ws=True)

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
def test_settings(tiny_cache: Path, tmp_path: Path) -> Settings:
    return Settings(model="tiny", device="cpu", tiny_cache_dir=str(tiny_cache), voices_dir=str(tmp_path / "voices"),
                    warmup=False, default_nfe_steps=4, host="127.0.0.1", max_wait_ms=5.0, heartbeat_s=0,
                    admission=False,  # unwarmed, the cost model guesses: tests that want admission turn it on
                    cost_seed_dir="off")  # every test times its own seed: none is kept between tests or runs


@pytest.fixture
async def start_server() -> AsyncIterator[Callable[..., Awaitable[LiveServer]]]:
    servers: list[TestServer] = []

    async def start(settings: Settings) -> LiveServer:
        registry = CollectorRegistry()
        app = create_app(settings, registry=registry)
        server = TestServer(app, host="127.0.0.1", handler_cancellation=True)
        await server.start_server()
        servers.append(server)
        return LiveServer(server, app, registry)

    yield start
    for server in servers:
        with contextlib.suppress(Exception):
            await server.close()


@pytest.fixture
async def live(start_server: Callable[..., Awaitable[LiveServer]], test_settings: Settings) -> LiveServer:
    return await start_server(test_settings)


async def upload_voice(live: LiveServer, voice_id: str = "en", *, samples: Any = None, transcript: str = EN_TRANSCRIPT,
                       api_key: str | None = None) -> aiohttp.ClientResponse:
    if samples is None:
        samples, rate = english_clip(1.0)
        data = encode(samples, rate)
    else:
        data = samples
    form = aiohttp.FormData()
    form.add_field("audio", data, filename="ref.wav", content_type="audio/wav")
    form.add_field("transcript", transcript)
    if voice_id:
        form.add_field("id", voice_id)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with aiohttp.ClientSession() as session, session.post(live.url("/v1/voices"), data=form,
                                                                 headers=headers) as response:
        await response.read()
        return response


@pytest.fixture
async def live_en(live: LiveServer) -> LiveServer:
    """A live server with the short English test voice ``en`` registered."""
    response = await upload_voice(live)
    assert response.status == 201
    return live
