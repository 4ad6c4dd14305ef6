"""The OpenAI-compatible speech API, driven by the official ``openai`` package against the live server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging

import aiohttp
import av
import numpy as np
import openai
import orjson
import pytest
import soundfile as sf
from aiohttp import web
from aiohttp.client_exceptions import ClientConnectionResetError

from f5tts_client import TTSClient
from server.http import openai as openai_routes
from tests.conftest import LiveServer, upload_voice, wait_until
from tests.fakes import Gate

TEXT = "Hello from the OpenAI compatible endpoint."


def client_for(live: LiveServer, api_key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=live.url("/v1"), api_key=api_key, max_retries=0)


def decode(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    if fmt == "pcm":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767, 24_000
    if fmt == "aac":  # libsndfile has no AAC reader
        with av.open(io.BytesIO(data)) as container:
            frames = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
        return np.concatenate(frames), 24_000
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return samples, rate


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["wav", "pcm", "flac", "mp3", "opus", "aac"])
async def test_non_streaming_each_format(live_en: LiveServer, fmt: str) -> None:
    async with client_for(live_en) as client:
        response = await client.audio.speech.create(model="tts-1", voice="en", input=TEXT,
                                                    response_format=fmt,  # type: ignore[arg-type]
                                                    extra_body={"seed": 3, "nfe_steps": 4})
        data = response.content
    samples, rate = decode(data, fmt)
    assert rate == 24_000 and len(samples) / rate > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["wav", "pcm", "mp3", "opus", "flac", "aac"])
async def test_streaming_each_format(live_en: LiveServer, fmt: str) -> None:
    async with client_for(live_en) as client, client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="en", input=TEXT + " And a second sentence to make two chunks.",
            response_format=fmt, extra_body={"seed": 4, "nfe_steps": 4}) as response:  # type: ignore[arg-type]
        assert response.headers["content-type"].startswith("audio/")
        parts = [part async for part in response.iter_bytes()]
    samples, rate = decode(b"".join(parts), fmt)
    assert rate == 24_000 and len(samples) / rate > 0.5


@pytest.mark.slow
async def test_wav_and_pcm_equal_the_websocket_audio(live_en: LiveServer) -> None:
    async with TTSClient(live_en.ws_url) as ws:
        reference = await ws.synthesize(TEXT, voice="en", seed=9, nfe_steps=4)
    async with client_for(live_en) as client:
        pcm = (await client.audio.speech.create(model="tts-1", voice="en", input=TEXT, response_format="pcm",
                                                extra_body={"seed": 9, "nfe_steps": 4})).content
        wav = (await client.audio.speech.create(model="tts-1", voice="en", input=TEXT, response_format="wav",
                                                extra_body={"seed": 9, "nfe_steps": 4})).content
    assert pcm == bytes(reference.pcm)
    assert sf.read(io.BytesIO(wav), dtype="int16")[0].tobytes() == pcm


async def test_sse_stream(live_en: LiveServer) -> None:
    async with aiohttp.ClientSession() as session, session.post(live_en.url("/v1/audio/speech"), json={
            "model": "tts-1", "voice": "en", "input": TEXT, "response_format": "pcm", "stream_format": "sse",
            "seed": 9, "nfe_steps": 4}) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
        events = [orjson.loads(line[6:]) for line in (await response.text()).split("\n\n") if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["output_tokens"] > 0
    deltas = events[:-1]
    assert deltas and all(e["type"] == "speech.audio.delta" for e in deltas)
    audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert len(audio) // 2 == events[-1]["usage"]["output_tokens"]


async def test_sse_through_the_sdk(live_en: LiveServer) -> None:
    async with client_for(live_en) as client, client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="en", input=TEXT, response_format="pcm", stream_format="sse",
            extra_body={"nfe_steps": 4}) as response:
        text = await response.text()
    assert "speech.audio.delta" in text and "speech.audio.done" in text


async def test_models_listing(live_en: LiveServer) -> None:
    async with client_for(live_en) as client:
        models = [m.id async for m in client.models.list()]
    assert models[0] == "tiny" and "tts-1" in models


@pytest.mark.parametrize(("kwargs", "status", "code"), [
    ({"voice": "nobody"}, 400, "voice_not_found"),
    ({"response_format": "ogg"}, 400, "invalid_response_format"),
    ({"speed": 5.0}, 400, "invalid_speed"),
    ({"speed": 0.1}, 400, "invalid_speed"),
    ({"input": ""}, 400, "invalid_input"),
    ({"input": "☃☃☃"}, 400, "invalid_input"),
    ({"model": "whisper-1"}, 400, "model_not_found"),
    ({"input": "x" * 5001}, 413, "input_too_long"),
])
async def test_errors_have_openai_shape(live_en: LiveServer, kwargs: dict, status: int, code: str) -> None:  # type: ignore[type-arg]
    args = {"model": "tts-1", "voice": "en", "input": "Hello.", **kwargs}
    async with client_for(live_en) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.audio.speech.create(**args)
    assert info.value.status_code == status
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == code and body["message"] and body["type"]
    outcome = {"voice_not_found": "unknown_voice", "input_too_long": "text_too_long"}.get(code, "bad_request")
    assert live_en.metric("tts_requests_total", transport="http", outcome=outcome) == 1


async def test_unknown_parameters_are_ignored_and_named(live_en: LiveServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(live_en.url("/v1/audio/speech"), data=b"{nope") as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_json"
        async with session.post(live_en.url("/v1/audio/speech"), json={
                "model": "tts-1", "input": "Hi.", "colour": "red", "lang_code": "a", "response_format": "pcm"}) as r:
            assert r.status == 200 and len(await r.read()) > 0
            assert r.headers["X-Ignored-Params"] == "colour, lang_code"
    assert live_en.metric("tts_requests_total", transport="http", outcome="bad_request") == 1


async def test_strict_params_refuses_unknown_fields(start_server, test_settings) -> None:  # type: ignore[no-untyped-def]
    live = await start_server(test_settings.replace(strict_params=True))
    async with aiohttp.ClientSession() as session, session.post(live.url("/v1/audio/speech"), json={
            "model": "tts-1", "input": "Hi.", "colour": "red"}) as r:
        body = await r.json()
    assert r.status == 400 and body["error"]["code"] == "unknown_parameter" and body["error"]["param"] == "colour"


@pytest.mark.parametrize("model", ["tts-1-1106", "tts-1-hd-1106", "gpt-4o-mini-tts-2025-12-15", "tiny"])
async def test_dated_snapshots_and_voice_objects(live_en: LiveServer, model: str) -> None:
    async with client_for(live_en) as client:
        response = await client.audio.speech.create(model=model, voice={"id": "en"}, input="Snapshot.",  # type: ignore[arg-type]
                                                    response_format="pcm", extra_body={"nfe_steps": 2})
        assert len(response.content) > 0
        assert (await client.models.retrieve(model)).id == model
        with pytest.raises(openai.NotFoundError) as info:
            await client.models.retrieve("whisper-1")
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "model_not_found"


@pytest.mark.slow
async def test_auth(start_server, test_settings) -> None:  # type: ignore[no-untyped-def]
    live = await start_server(test_settings.replace(api_key="s3cret"))
    await upload_voice(live, api_key="s3cret")
    async with client_for(live, api_key="wrong") as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.audio.speech.create(model="tts-1", voice="en", input="Hi.")
        assert info.value.status_code == 401
    async with client_for(live, api_key="s3cret") as client:
        data = (await client.audio.speech.create(model="tts-1", voice="en", input="Authorised speech.",
                                                 response_format="wav", extra_body={"nfe_steps": 2})).content
        assert data[:4] == b"RIFF"
        models = [m.id async for m in client.models.list()]
        assert models[0] == "tiny"


@pytest.mark.slow
async def test_queue_full_is_429_with_retry_after(start_server, test_settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    live = await start_server(test_settings.replace(max_queue=1))
    await upload_voice(live)
    gate = Gate(live, monkeypatch)
    async with client_for(live) as client:
        first = asyncio.create_task(client.audio.speech.create(model="tts-1", voice="en", input="One.",
                                                               response_format="pcm"))
        await gate.wait_entered()
        second = asyncio.create_task(client.audio.speech.create(model="tts-1", voice="en", input="Two.",
                                                                response_format="pcm"))
        await wait_until(lambda: live.metric("tts_queue_depth") >= 1)
        with pytest.raises(openai.RateLimitError) as info:
            await client.audio.speech.create(model="tts-1", voice="en", input="Three.")
        assert int(info.value.response.headers["Retry-After"]) >= 1
        gate.event.set()
        assert len((await first).content) > 0 and len((await second).content) > 0


@pytest.mark.slow
async def test_http_and_ws_requests_share_batches(live_en: LiveServer, caplog: pytest.LogCaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="batching")  # batching.batcher or batching.step_batcher
    gate = Gate(live_en, monkeypatch)
    async with client_for(live_en) as client, TTSClient(live_en.ws_url) as ws:
        blocker = await ws.start("Keeps the model busy.", id="blocker", voice="en")
        await gate.wait_entered()
        http = asyncio.create_task(client.audio.speech.create(model="tts-1", voice="en", input="From HTTP.",
                                                              response_format="pcm"))
        socket = await ws.start("From the socket.", id="ws-side", voice="en")
        while live_en.metric("tts_queue_depth") < 2:
            await asyncio.sleep(0.01)
        gate.event.set()
        await asyncio.gather(http, socket.done, blocker.done)
    mixed = [r for r in caplog.records if r.getMessage() == "batch"
             and any(i.startswith("http-") for i in r.request_ids)  # type: ignore[attr-defined]
             and "ws-side" in r.request_ids]  # type: ignore[attr-defined]
    assert mixed, "no batch carried both an HTTP and a WebSocket request"
    assert live_en.metric("tts_requests_total", transport="http", outcome="ok") == 1


async def test_client_disconnect_cancels_queued_chunks(live_en: LiveServer) -> None:
    long_text = "This request will be abandoned by its client long before it could finish. " * 8
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.post(live_en.url("/v1/audio/speech"), json={
            "model": "tts-1", "voice": "en", "input": long_text, "response_format": "pcm", "nfe_steps": 16}))
        for _ in range(250):
            if live_en.state.service.active:
                break
            await asyncio.sleep(0.02)
        assert live_en.state.service.active == 1
        request.cancel()
    for _ in range(200):
        if live_en.state.service.active == 0 and live_en.metric("tts_queue_depth") == 0:
            break
        await asyncio.sleep(0.02)
    assert live_en.state.service.active == 0 and live_en.metric("tts_queue_depth") == 0
    assert live_en.metric("tts_inflight_requests", transport="http") == 0
    assert live_en.metric("tts_requests_total", transport="http", outcome="cancelled") == 1


async def test_a_client_leaving_mid_body_is_a_cancelled_request_not_an_error(
        live_en: LiveServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection closes under a write before aiohttp has cancelled the handler (a race that a burst
    of 200 clients hits): the request ends ``cancelled``, with no error and no traceback in the log."""
    real = openai_routes._write
    writes = 0

    async def closing(response: web.StreamResponse, data: bytes, sse: bool) -> None:
        nonlocal writes
        writes += 1
        if writes > 1:
            raise ClientConnectionResetError("Cannot write to closing transport")
        await real(response, data, sse)

    monkeypatch.setattr(openai_routes, "_write", closing)
    text = "The listener hangs up as soon as the first words arrive. " * 6
    async with aiohttp.ClientSession() as session, session.post(live_en.url("/v1/audio/speech"), json={
            "model": "tts-1", "voice": "en", "input": text, "response_format": "pcm", "nfe_steps": 4}) as response:
        assert response.status == 200
        with contextlib.suppress(aiohttp.ClientPayloadError):
            await response.read()
    await wait_until(lambda: live_en.state.service.active == 0)
    assert writes == 2
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert live_en.metric("tts_requests_total", transport="http", outcome="cancelled") == 1
