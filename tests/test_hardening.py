"""Sockets and HTTP edges under hostile or broken clients — the real listening site (connection cap,
header timeout), client resets, per-address caps, idle timers, JSON errors, /ping and the health port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from server import app as app_module
from server.app import create_app, serve, start_site
from server.core.settings import Settings
from server.core.state import STATE
from tests.conftest import LiveServer, free_port, wait_until

LONG_TEXT = "This sentence keeps the model busy for a while. " * 6


@pytest.fixture
async def site(test_settings: Settings) -> AsyncIterator[Callable[..., Awaitable[tuple[web.AppRunner, int]]]]:
    """The production listening path (``start_site``: bound socket, guarded site), not aiohttp's TestServer."""
    runners: list[web.AppRunner] = []

    async def start(**changes: Any) -> tuple[web.AppRunner, int]:
        app = create_app(test_settings.replace(**changes), registry=CollectorRegistry())
        runner, port = await start_site(app, "127.0.0.1", 0)
        runners.append(runner)
        return runner, port

    yield start
    for runner in runners:
        await runner.cleanup()


async def _half_open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")  # headers never finished
    await writer.drain()
    return reader, writer


@pytest.mark.slow
async def test_slowloris_cannot_starve_healthz(site: Any) -> None:
    runner, port = await site(max_connections=16, header_timeout_s=1.0)
    attackers = [await _half_open(port) for _ in range(40)]
    guarded = next(iter(runner.sites))
    assert len(guarded.live) <= 16 and guarded.evicted >= 24  # the cap held: idle half-open ones were evicted
    server_fds = len(os.listdir("/proc/self/fd")) - len(attackers)  # this process holds both ends
    assert server_fds < 16 + 64, server_fds  # cap + spare: evicted sockets closed, not leaked
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
        assert time.perf_counter() - started < 2.0
    # A header line now and then does not keep a connection alive past the header timeout.
    reader, writer = attackers[-1]
    closed_at = None
    deadline = time.perf_counter() + 4.0
    while time.perf_counter() < deadline:
        with contextlib.suppress(ConnectionError):
            writer.write(b"X-More: 1\r\n")
        try:
            if await asyncio.wait_for(reader.read(1024), 0.3) == b"":
                closed_at = time.perf_counter()
                break
        except TimeoutError:
            continue
        except ConnectionError:
            closed_at = time.perf_counter()
            break
    assert closed_at is not None, "a slow-header connection outlived the header timeout"
    for _, w in attackers:
        w.close()


@pytest.mark.slow
async def test_client_reset_mid_stream_is_cancelled_not_internal(live_en: LiveServer) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(live_en.ws_url)
        await ws.send_json({"type": "synthesize", "id": "r", "text": LONG_TEXT, "voice": "en", "nfe_steps": 4})
        while (await ws.receive()).type != aiohttp.WSMsgType.BINARY:
            pass
        raw = ws._response.connection.transport.get_extra_info("socket")  # type: ignore[union-attr]
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ws._response.connection.transport.abort()  # type: ignore[union-attr]  # RST, not FIN
    await wait_until(lambda: live_en.state.service.active == 0, timeout=20)
    assert live_en.metric("tts_requests_total", transport="ws", outcome="cancelled") == 1
    assert live_en.metric("tts_requests_total", transport="ws", outcome="internal") == 0


async def test_per_address_socket_cap(start_server: Any, test_settings: Settings) -> None:
    live = await start_server(test_settings.replace(max_sockets_per_client=2))
    async with aiohttp.ClientSession() as session:
        held = [await session.ws_connect(live.ws_url) for _ in range(2)]
        third = await session.ws_connect(live.ws_url)
        message = await third.receive_json(timeout=5)
        assert message["code"] == "too_many_sockets" and "per client" in message["message"]
        for ws in held:
            await ws.close()
        fourth = await session.ws_connect(live.ws_url)  # a slot freed: accepted again
        await fourth.send_json({"type": "cancel", "id": "x"})
        assert not fourth.closed
        await fourth.close()


@pytest.mark.slow
async def test_cancel_messages_do_not_reset_the_idle_timer(start_server: Any, test_settings: Settings) -> None:
    live = await start_server(test_settings.replace(idle_timeout_s=1.0))
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(live.ws_url)
        started = time.perf_counter()
        while not ws.closed and time.perf_counter() - started < 6:
            with contextlib.suppress(ConnectionError):
                await ws.send_json({"type": "cancel", "id": "nothing"})
            with contextlib.suppress(TimeoutError):
                await ws.receive(timeout=0.3)
        assert ws.closed and time.perf_counter() - started < 4.0


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/nope", 404, "not_found"),
    ("POST", "/healthz", 405, "method_not_allowed"),
])
async def test_aiohttp_refusals_are_json(live: LiveServer, method: str, path: str, status: int, code: str) -> None:
    async with aiohttp.ClientSession() as session, session.request(method, live.url(path)) as response:
        assert response.status == status
        body = await response.json()
        assert body["error"]["code"] == code and body["error"]["message"]


async def test_over_limit_body_is_json_413(start_server: Any, test_settings: Settings) -> None:
    live = await start_server(test_settings.replace(max_upload_bytes=10_000))
    form = aiohttp.FormData()
    form.add_field("audio", b"\0" * 50_000, filename="big.wav")
    form.add_field("transcript", "Too big.")
    async with aiohttp.ClientSession() as session, session.post(live.url("/v1/voices"), data=form) as response:
        assert response.status == 413
        assert (await response.json())["error"]["code"]


async def test_draining_503_has_retry_after(live_en: LiveServer) -> None:
    live_en.state.service.draining = True
    async with aiohttp.ClientSession() as session, session.post(live_en.url("/v1/audio/speech"), json={
            "model": "tts-1", "voice": "en", "input": "Hello."}) as response:
        assert response.status == 503
        assert int(response.headers["Retry-After"]) >= 1
        assert (await response.json())["error"]["code"] == "shutting_down"
    live_en.state.service.draining = False


@pytest.mark.slow
async def test_ping_and_health_port_through_startup(test_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """/ping on the health port answers 204 while the model loads, 200 once ready (also on the main
    port), 503 while draining."""
    release = asyncio.Event()
    real_prepare = app_module.prepare

    async def slow_prepare(*args: Any) -> Any:
        await release.wait()
        return await real_prepare(*args)

    monkeypatch.setattr(app_module, "prepare", slow_prepare)
    ports = [free_port(), free_port()]
    settings = test_settings.replace(port=ports[0], health_port=ports[1])
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    async with aiohttp.ClientSession() as session:
        async def ping(port: int) -> int:
            async with session.get(f"http://127.0.0.1:{port}/ping") as response:
                return response.status

        await wait_until_async(lambda: _ping_status(ping, ports[1], 204))
        release.set()
        await wait_until_async(lambda: _ping_status(ping, ports[0], 200))
        assert await ping(ports[1]) == 200
        stop.set()
        await wait_until_async(lambda: _ping_status(ping, ports[1], 503))
    await asyncio.wait_for(task, 30)


async def _ping_status(ping: Callable[[int], Awaitable[int]], port: int, expected: int) -> bool:
    try:
        return await ping(port) == expected
    except aiohttp.ClientConnectionError:
        return False


async def wait_until_async(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)



async def _never_reading_client(port: int, text: str) -> socket.socket:
    """A WebSocket client that sends one request and then never reads (a stalled phone, a stuck proxy)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    payload = orjson.dumps({"type": "synthesize", "id": "r", "text": text, "voice": "en", "nfe_steps": 2})
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    header = b"\x81" + (bytes([0x80 | 126]) + struct.pack(">H", len(payload)) if len(payload) >= 126
                        else bytes([0x80 | len(payload)]))
    sock.sendall(header + mask + masked)
    return sock


@pytest.mark.slow
async def test_never_reading_client_releases_its_socket(site: Any, test_settings: Settings) -> None:
    runner, port = await site(heartbeat_s=0.5)
    app = runner.app
    assert (await _upload(port)).status == 201
    sock = await _never_reading_client(port, LONG_TEXT * 4)
    state = app[STATE]
    await wait_until(lambda: len(state.connections) == 1, timeout=10)
    # The heartbeat gives up on the silent client; its socket must then be gone at once, unsent audio and all.
    await wait_until(lambda: len(state.connections) == 0 and len(runner.server.connections) == 0, timeout=30)
    sock.close()


async def _upload(port: int) -> aiohttp.ClientResponse:
    from tests.audio import EN_TRANSCRIPT, encode, english_clip

    form = aiohttp.FormData()
    form.add_field("audio", encode(*english_clip(1.0)), filename="ref.wav")
    form.add_field("transcript", EN_TRANSCRIPT)
    form.add_field("id", "en")
    async with aiohttp.ClientSession() as session, \
            session.post(f"http://127.0.0.1:{port}/v1/voices", data=form) as response:
        await response.read()
        return response
