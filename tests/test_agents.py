"""The Cartesia- and ElevenLabs-compatible endpoints on a real server with the tiny model, spoken to in
their wire protocols with a plain WebSocket client (the real client libraries: tests/test_agents_clients.py)."""

from __future__ import annotations

import base64
import warnings
from typing import Any

import aiohttp
import numpy as np
import pytest
import soxr

from tests.conftest import LiveServer

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the reference G.711 decoder

VOICE = {"mode": "id", "id": "en"}
PCM24 = {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000}


async def cartesia_exchange(ws: aiohttp.ClientWebSocketResponse, *messages: dict[str, Any],
                            until: str = "done") -> list[dict[str, Any]]:
    for message in messages:
        await ws.send_json(message)
    received: list[dict[str, Any]] = []
    while True:
        data = await ws.receive_json(timeout=60)
        received.append(data)
        if data["type"] in (until, "error"):
            return received


def cartesia_message(context_id: str, transcript: str, cont: bool, **extra: Any) -> dict[str, Any]:
    return {"context_id": context_id, "transcript": transcript, "continue": cont, "model_id": "sonic-2",
            "voice": VOICE, "output_format": PCM24, "add_timestamps": True, **extra}


@pytest.mark.slow
async def test_cartesia_incremental_context_streams_words_that_tile_the_audio(live_en: LiveServer) -> None:
    url = live_en.url("/tts/websocket?cartesia_version=2025-04-16", ws=True)
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        received = await cartesia_exchange(
            ws, cartesia_message("c1", "Hello there, this is", True),
            cartesia_message("c1", " the first sentence.", True), cartesia_message("c1", " And a second one.", True),
            cartesia_message("c1", "", False))
    assert received[-1] == {"type": "done", "context_id": "c1", "status_code": 200, "done": True}
    audio = b"".join(base64.b64decode(m["data"]) for m in received if m["type"] == "chunk")
    words = [w for m in received if m["type"] == "timestamps" for w in m["word_timestamps"]["words"]]
    starts = [s for m in received if m["type"] == "timestamps" for s in m["word_timestamps"]["start"]]
    ends = [e for m in received if m["type"] == "timestamps" for e in m["word_timestamps"]["end"]]
    assert " ".join(words) == "Hello there, this is the first sentence. And a second one."
    assert starts == sorted(starts) and all(a <= b for a, b in zip(starts, ends, strict=True))
    assert 0 <= starts[0] < 0.5 and abs(ends[-1] - len(audio) / 2 / 24000) < 0.25
    assert live_en.metric("tts_requests_total", transport="cartesia", outcome="ok") == 1


@pytest.mark.slow
async def test_cartesia_cancel_stops_a_context_and_the_socket_goes_on(live_en: LiveServer) -> None:
    url = live_en.url("/tts/websocket", ws=True)
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        first = await cartesia_exchange(ws, cartesia_message("a", "A long sentence that goes on and on. " * 4, True),
                                        until="chunk")
        await ws.send_json({"context_id": "a", "cancel": True})
        after = await cartesia_exchange(ws, cartesia_message("b", "Next one.", False))
    assert first[-1]["type"] == "chunk"
    assert after[-1]["type"] == "done" and after[-1]["context_id"] == "b"
    assert not any(m["context_id"] == "a" and m["type"] in ("timestamps", "done") for m in after)
    # Cancelled within one frame: no audio past the first text chunk's stretch but the frame in flight.
    first_stretch_end = next(m for m in first if m["type"] == "timestamps")["word_timestamps"]["end"][-1]
    audio_a = sum(len(base64.b64decode(m["data"])) // 2 for m in first + after
                  if m["context_id"] == "a" and m["type"] == "chunk")
    assert audio_a <= first_stretch_end * 24000 + 12000 + 2400


@pytest.mark.slow
async def test_cartesia_refusals_in_its_shape(live_en: LiveServer) -> None:
    url = live_en.url("/tts/websocket", ws=True)
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        unknown = await cartesia_exchange(ws, {**cartesia_message("x", "Hi.", False), "voice": {"mode": "id",
                                                                                               "id": "nobody"}})
        bad_rate = await cartesia_exchange(ws, {**cartesia_message("y", "Hi.", False), "output_format": {
            "container": "raw", "encoding": "pcm_s16le", "sample_rate": 12345}})
        fine = await cartesia_exchange(ws, cartesia_message("z", "Still here.", False))
    assert unknown[-1]["type"] == "error" and unknown[-1]["error_code"] == "unknown_voice"
    assert unknown[-1]["context_id"] == "x" and unknown[-1]["status_code"] == 400
    assert bad_rate[-1]["error_code"] == "bad_request" and "sample_rate" in bad_rate[-1]["message"]
    assert fine[-1]["type"] == "done"


@pytest.mark.slow
async def test_elevenlabs_multi_stream_alignment_tiles_each_message(live_en: LiveServer) -> None:
    url = live_en.url("/v1/text-to-speech/en/multi-stream-input?model_id=eleven_flash_v2_5&output_format=pcm_16000",
                      ws=True)
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_json({"text": " ", "context_id": "k", "voice_settings": {"speed": 1.0}})
        await ws.send_json({"text": "Hello there. ", "context_id": "k"})
        await ws.send_json({"text": "How are you today?", "context_id": "k", "flush": True})
        await ws.send_json({"context_id": "k", "close_context": True})
        messages = []
        while not (message := await ws.receive_json(timeout=60)).get("isFinal"):
            messages.append(message)
    assert message == {"isFinal": True, "contextId": "k"}
    audio = b"".join(base64.b64decode(m["audio"]) for m in messages)
    chars = "".join(c for m in messages if m["alignment"] for c in m["alignment"]["chars"])
    assert chars == "Hello there. How are you today?"
    spans = [m["alignment"]["charStartTimesMs"][-1] + m["alignment"]["charDurationsMs"][-1]
             for m in messages if m["alignment"]]
    assert abs(sum(spans) - len(audio) / 2 / 16) <= 2  # ms: each message's characters tile its own audio


@pytest.mark.slow
async def test_ulaw_8k_is_the_24k_pcm_resampled(live_en: LiveServer) -> None:
    """Same request and seed, two formats: μ-law 8 kHz decodes to our 24 kHz PCM resampled to 8 kHz."""
    async def speech(fmt: str) -> bytes:
        url = live_en.url(f"/v1/text-to-speech/en?output_format={fmt}")
        async with aiohttp.ClientSession() as session, session.post(url, json={
                "text": "Telephone audio, eight kilohertz.", "model_id": "eleven_flash_v2_5", "seed": 7}) as r:
            assert r.status == 200
            return await r.read()

    pcm = np.frombuffer(await speech("pcm_24000"), dtype="<i2").astype(np.float32) / 32768
    decoded = np.frombuffer(audioop.ulaw2lin(await speech("ulaw_8000"), 2), dtype="<i2").astype(np.float64)
    reference = soxr.resample(pcm, 24000, 8000) * 32768
    assert len(decoded) == len(reference) > 0
    snr = 10 * np.log10(np.sum(reference ** 2) / np.sum((reference - decoded) ** 2))
    assert snr >= 30


async def test_elevenlabs_refusals_in_its_shape(live_en: LiveServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(live_en.url("/v1/text-to-speech/en?output_format=wav_11025"),
                                json={"text": "Hi."}) as response:
            body = await response.json()
        assert response.status == 400 and body["detail"]["code"] == "bad_request"
        async with session.post(live_en.url("/v1/text-to-speech/nobody"), json={"text": "Hi."}) as response:
            body = await response.json()
        assert response.status == 400 and body["detail"]["code"] == "unknown_voice"
