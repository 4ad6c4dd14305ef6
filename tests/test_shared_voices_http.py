"""Two in-process servers on one voices dir, through their HTTP and WebSocket routes (the fleet behind a
real balancer is tests/test_fleet.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from f5tts_client import TTSClient
from server.core.settings import Settings
from tests.conftest import LiveServer, upload_voice

Start = Callable[..., Awaitable[LiveServer]]


@pytest.mark.slow
async def test_upload_on_one_server_speak_and_delete_on_the_other(start_server: Start,
                                                                  test_settings: Settings) -> None:
    settings = test_settings.replace(voices_sync_s=0.2)
    a, b = await start_server(settings), await start_server(settings)
    assert (await upload_voice(a, "shared")).status == 201
    async with TTSClient(b.ws_url) as client:  # at once: b reads the directory on its miss
        result = await client.synthesize("Hello from the other replica.", voice="shared", seed=1)
    assert result.end is not None and result.samples > 0
    async with aiohttp.ClientSession() as session:
        async with session.delete(b.url("/v1/voices/shared")) as response:
            assert response.status == 204
        async with session.get(a.url("/v1/voices/shared")) as response:
            assert response.status in (200, 404)  # a may still hold it until its next rescan...
        for _ in range(40):
            async with session.get(a.url("/v1/voices/shared")) as response:
                if response.status == 404:
                    break
            await asyncio.sleep(0.05)
        assert response.status == 404  # ...which comes within the sync interval


async def test_the_same_id_created_on_two_servers_at_once(start_server: Start, test_settings: Settings) -> None:
    a, b = await start_server(test_settings), await start_server(test_settings)
    statuses = sorted(r.status for r in await asyncio.gather(upload_voice(a, "twice"), upload_voice(b, "twice")))
    assert statuses == [201, 409]
    async with aiohttp.ClientSession() as session:
        for live in (a, b):
            async with session.get(live.url("/v1/voices/twice")) as response:
                assert response.status == 200
