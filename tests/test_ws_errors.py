"""Every error code is reachable; malformed input never crashes the server or the socket."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Hashable, Iterable, Sequence
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest

from engine import SynthesisItem
from engine.step_adapter import EngineStepModel
from f5tts_client import StreamError, TTSClient
from server.app import drain
from server.ws.protocol import ERROR_CODES
from tests.conftest import LiveServer, upload_voice, wait_until
from tests.fakes import Gate


async def next_error(client: TTSClient, timeout: float = 10) -> dict[str, Any]:
    for _ in range(int(timeout / 0.01)):
        if client.errors:
            error = client.errors.pop(0)
            return error
        await asyncio.sleep(0.01)
    raise AssertionError("no error message arrived")


async def expect_stream_error(client: TTSClient, text: str, code: str, **kwargs: Any) -> StreamError:
    with pytest.raises(StreamError) as info:
        await client.synthesize(text, **kwargs)
    assert info.value.code == code, info.value.error
    return info.value


async def still_works(client: TTSClient) -> None:
    result = await client.synthesize("Still working.", voice="en")
    assert result.end is not None and result.samples > 0


@pytest.mark.parametrize(("raw", "fragment"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"type": "dance", "id": "x"}', "unknown message type"),
    ('{"id": "x", "text": "hi"}', "unknown message type"),
    ('{"type": "synthesize", "text": "hi"}', "field 'id' is required"),
    ('{"type": "synthesize", "id": "x"}', "field 'text' is required"),
    ('{"type": "synthesize", "id": 5, "text": "hi"}', "'id' must be a string"),
    ('{"type": "synthesize", "id": "x", "text": "hi", "speed": "fast"}', "'speed' must be"),
    ('{"type": "synthesize", "id": "x", "text": "hi", "final": 1}', "'final' must be true or false"),
    ('{"type": "synthesize", "id": "x", "text": "hi", "nfe_steps": 2.5}', "'nfe_steps' must be an integer"),
    ('{"type": "synthesize", "id": "x", "text": "hi", "seed": true}', "'seed' must be an integer"),
    ('{"type": "synthesize", "id": "x", "text": "hi", "colour": "red"}', "unknown field"),
    ('{"type": "synthesize", "id": "", "text": "hi"}', "id must be"),
    ('{"type": "synthesize", "id": "a\\nb", "text": "hi"}', "id must be"),
    ('{"type": "synthesize", "id": "x y", "text": "hi"}', "id must be"),
    ('{"type": "cancel", "id": "a\\r\\u2028b"}', "id must be"),
    ('{"type": "append", "id": "nope", "text": "hi"}', "no open stream"),
    ('{"type": "flush", "id": "nope"}', "no open stream"),
])
async def test_malformed_messages_get_bad_request(live_en: LiveServer, raw: str, fragment: str) -> None:
    async with TTSClient(live_en.ws_url) as client:
        assert client.ws is not None
        await client.ws.send_str(raw)
        error = await next_error(client)
        assert error["code"] == "bad_request" and fragment in error["message"], error
        await still_works(client)


async def test_a_stream_id_cannot_forge_a_log_line(live_en: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    """Ids are checked like voice ids: one with a newline is refused (bad_request) and never echoed back or
    logged, and a valid one is what the ``stream finished`` line prints."""
    caplog.set_level(logging.INFO)
    forged = "a\n12:00:00 I server.core.stream: stream finished  request_id=admin"
    async with TTSClient(live_en.ws_url) as client:
        await client.send({"type": "synthesize", "id": forged, "text": "Hi.", "voice": "en"})
        error = await next_error(client)
        assert error["code"] == "bad_request" and error["id"] is None and "id must be" in error["message"]
        await client.synthesize("Still fine.", id="job:1.a_b-c", voice="en")
    assert all(forged not in record.getMessage() and getattr(record, "request_id", None) != forged
               for record in caplog.records)
    finished = [r for r in caplog.records if r.getMessage() == "stream finished"]
    assert [getattr(r, "request_id", None) for r in finished] == ["job:1.a_b-c"]


async def test_binary_frames_from_client_are_rejected(live_en: LiveServer) -> None:
    async with TTSClient(live_en.ws_url) as client:
        assert client.ws is not None
        await client.ws.send_bytes(b"\x00\x01\x02")
        error = await next_error(client)
        assert error["code"] == "bad_request" and "binary" in error["message"]
        await still_works(client)


@pytest.mark.parametrize(("params", "code"), [
    ({"voice": "nobody"}, "unknown_voice"),
    ({"voice": "en", "speed": 0.0}, "bad_request"),
    ({"voice": "en", "nfe_steps": 0}, "bad_request"),
    ({"voice": "en", "seed": -1}, "bad_request"),
    ({"voice": "en", "cfg_strength": 99.0}, "bad_request"),
])
async def test_bad_parameters(live_en: LiveServer, params: dict[str, Any], code: str) -> None:
    async with TTSClient(live_en.ws_url) as client:
        await expect_stream_error(client, "Hello.", code, **params)
        await still_works(client)


@pytest.mark.parametrize("text", ["", "   ", "☃☃☃"])
async def test_unspeakable_text(live_en: LiveServer, text: str) -> None:
    async with TTSClient(live_en.ws_url) as client:
        error = await expect_stream_error(client, text, "bad_request", voice="en")
        assert "text" in str(error)


async def test_text_too_long(start_server, test_settings) -> None:  # type: ignore[no-untyped-def]
    live = await start_server(test_settings.replace(max_text_chars=50, max_append_chars=10))
    await upload_voice(live)
    async with TTSClient(live.ws_url) as client:
        await expect_stream_error(client, "x" * 51, "text_too_long", voice="en")
        # An append over the per-message limit ends that stream with the error (no words silently lost).
        long_append = await client.start("", id="inc", final=False, voice="en")
        await client.send({"type": "append", "id": "inc", "text": "y" * 11})
        with pytest.raises(StreamError, match="text_too_long"):
            await long_append.done
        # Many small appends over the per-stream total likewise.
        total = await client.start("", id="tot", final=False, voice="en")
        for _ in range(5):
            await client.send({"type": "append", "id": "tot", "text": "Hello now "})  # 50 chars: at the limit
        await client.send({"type": "append", "id": "tot", "text": "z"})
        with pytest.raises(StreamError, match="text_too_long"):
            await total.done
        await still_works(client)
        assert live.state.service.active == 0
    assert live.metric("tts_requests_total", transport="ws", outcome="text_too_long") == 3


async def test_duplicate_id_and_too_many_streams(start_server, test_settings) -> None:  # type: ignore[no-untyped-def]
    live = await start_server(test_settings.replace(max_streams_per_socket=2))
    await upload_voice(live)
    async with TTSClient(live.ws_url) as client:
        a = await client.start("", id="a", final=False, voice="en")
        b = await client.start("", id="b", final=False, voice="en")
        await client.send({"type": "synthesize", "id": "a", "text": "again", "voice": "en"})
        error = await next_error(client)
        assert error["code"] == "bad_request" and error["id"] is None and "already open" in error["message"]
        # A malformed synthesize reusing the open id is refused without ending the open stream.
        await client.send({"type": "synthesize", "id": "a", "text": "again", "speed": "fast"})
        error = await next_error(client)
        assert error["code"] == "bad_request" and error["id"] is None and "speed" in error["message"]
        await expect_stream_error(client, "third", "too_many_streams", voice="en")
        for rid in ("a", "b"):  # the open streams were not disturbed
            await client.send({"type": "append", "id": rid, "text": "Fine."})
            await client.send({"type": "end", "id": rid})
        await asyncio.gather(a.done, b.done)
        assert a.samples > 0 and b.samples > 0
        await client.send({"type": "append", "id": "a", "text": "late"})  # a is over now
        error = await next_error(client)
        assert error["id"] == "a" and "no open stream" in error["message"]


async def test_append_to_a_final_stream_is_refused(live_en: LiveServer) -> None:
    async with TTSClient(live_en.ws_url) as client:
        result = await client.start("A fairly long final text to keep the stream open for a while, "
                                    "with a second sentence. And a third one.", id="f", voice="en", nfe_steps=8)
        await client.send({"type": "append", "id": "f", "text": "more"})
        with pytest.raises(StreamError, match="no more text"):
            await result.done
        await still_works(client)


@contextlib.asynccontextmanager
async def one_running(start_server, settings, monkeypatch) -> AsyncIterator[tuple[LiveServer, Gate, TTSClient, Any]]:  # type: ignore[no-untyped-def]
    """A server with the ``en`` voice whose model is held (``Gate``) inside one running stream."""
    live = await start_server(settings)
    await upload_voice(live)
    gate = Gate(live, monkeypatch)
    async with TTSClient(live.ws_url) as client:
        running = await client.start("Running now.", voice="en")
        await gate.wait_entered()
        yield live, gate, client, running


async def test_queue_full_keeps_the_socket_usable(start_server, test_settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    async with one_running(start_server, test_settings.replace(max_queue=1), monkeypatch) as (live, gate, client,
                                                                                                running):
        queued = await client.start("Queued next.", voice="en")
        await wait_until(lambda: live.metric("tts_queue_depth") >= 1)
        error = await expect_stream_error(client, "No room.", "queue_full", voice="en")
        assert error.retry_after_ms is not None and error.retry_after_ms > 0
        assert live.metric("tts_rejected_total", reason="queue_full") == 1
        gate.event.set()
        await asyncio.gather(running.done, queued.done)
        await still_works(client)


async def test_timeout_when_not_started_in_time(start_server, test_settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    async with one_running(start_server, test_settings.replace(queue_timeout_s=0.3), monkeypatch) as (_, gate, client,
                                                                                                       running):
        await expect_stream_error(client, "Too late.", "timeout", voice="en")
        gate.event.set()
        await running.done


async def test_internal_error_is_reported_and_server_survives(live_en: LiveServer, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    engine = live_en.state.runtime.engine
    assert engine is not None
    original = engine.synthesize

    def broken(items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        if any("explode" in item.text for item in items):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return original(items)

    monkeypatch.setattr(engine, "synthesize", broken)
    model = getattr(live_en.state.runtime.batcher, "model", None)
    if isinstance(model, EngineStepModel):  # --scheduler step: the same fault in its step passes
        sampler, step = model.sampler, model.sampler.step

        def broken_step(keys: Iterable[Hashable] | None = None) -> list[Hashable]:
            held = sampler.keys()  # a method: the sampler is no mapping
            chosen = held if keys is None else [key for key in keys if key in held]
            if any("explode" in sampler.item(key).text for key in chosen):
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return step(keys)

        monkeypatch.setattr(sampler, "step", broken_step)
    async with TTSClient(live_en.ws_url) as client:
        error = await expect_stream_error(client, "Please explode.", "internal", voice="en")
        assert "illegal memory" not in str(error)  # details stay in the server log
        await still_works(client)


async def test_shutting_down_refuses_new_streams(live_en: LiveServer) -> None:
    async with TTSClient(live_en.ws_url) as client:
        live_en.state.service.draining = True
        await expect_stream_error(client, "Hello.", "shutting_down", voice="en")
        live_en.state.service.draining = False
    drainer = asyncio.create_task(drain(live_en.app))
    await drainer
    async with aiohttp.ClientSession() as session, session.ws_connect(live_en.ws_url) as ws:
        message = await ws.receive()
        assert orjson.loads(message.data)["code"] == "shutting_down"
        closing = await ws.receive()
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1013
    async with aiohttp.ClientSession() as session, session.get(live_en.url("/readyz")) as response:
        assert response.status == 503


async def test_too_many_sockets(start_server, test_settings) -> None:  # type: ignore[no-untyped-def]
    live = await start_server(test_settings.replace(max_sockets=1))
    await upload_voice(live)
    async with TTSClient(live.ws_url) as first:
        async with aiohttp.ClientSession() as session, session.ws_connect(live.ws_url) as ws:
            refusal = orjson.loads((await ws.receive()).data)
            assert refusal["code"] == "too_many_sockets"
            assert refusal["retry_after_ms"] >= 1000  # when to try again: a socket frees as a stream ends
            assert (await ws.receive()).data == 1013
        await still_works(first)


async def test_unauthorized(start_server, test_settings) -> None:  # type: ignore[no-untyped-def]
    live = await start_server(test_settings.replace(api_key="s3cret"))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(live.ws_url)
        assert info.value.status == 401
        async with session.get(live.url("/v1/voices"), headers={"Authorization": "Bearer wrong"}) as response:
            assert response.status == 401
            body = await response.json()
            assert body["error"]["code"] == "unauthorized"


async def test_oversized_message_closes_with_1009(start_server, test_settings) -> None:  # type: ignore[no-untyped-def]
    live = await start_server(test_settings.replace(max_message_bytes=4096))
    await upload_voice(live)
    async with TTSClient(live.ws_url) as client:
        assert client.ws is not None
        await client.ws.send_str(orjson.dumps({"type": "synthesize", "id": "big", "text": "x" * 5000}).decode())
        await asyncio.wait_for(client.closed.wait(), 5)
        assert client.close_code == 1009
    async with TTSClient(live.ws_url) as other:  # the server itself is fine
        await still_works(other)


# Each documented code and the test above that produces it on the wire (and asserts it). Independent of
# test order: this only checks that the table of codes and the tests agree.
CODE_TESTS = {
    "bad_request": test_malformed_messages_get_bad_request,
    "unknown_voice": test_bad_parameters,
    "text_too_long": test_text_too_long,
    "too_many_streams": test_duplicate_id_and_too_many_streams,
    "too_many_sockets": test_too_many_sockets,
    "queue_full": test_queue_full_keeps_the_socket_usable,
    "timeout": test_timeout_when_not_started_in_time,
    "unauthorized": test_unauthorized,
    "shutting_down": test_shutting_down_refuses_new_streams,
    "internal": test_internal_error_is_reported_and_server_survives,
}


def test_every_error_code_has_a_test() -> None:
    assert set(CODE_TESTS) == ERROR_CODES, sorted(set(CODE_TESTS) ^ ERROR_CODES)
    for code, test in CODE_TESTS.items():
        source = inspect.getsource(test)
        assert f'"{code}"' in source or f"'{code}'" in source or code in str(getattr(test, "pytestmark", "")), code
