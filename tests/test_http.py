"""Health, readiness, metrics, auth and the voices API over real HTTP."""

from __future__ import annotations

import logging

import aiohttp
import numpy as np
import orjson
import pytest

from engine.voices import load_reference
from f5tts_client import TTSClient
from tests.audio import EN_TRANSCRIPT, encode, english_clip
from tests.conftest import LiveServer, upload_voice


async def get(live: LiveServer, path: str, **headers: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(live.url(path), headers=headers) as response:
        return response.status, await response.read()


async def test_health_ready_metrics(live: LiveServer) -> None:
    assert (await get(live, "/healthz"))[0] == 200
    assert (await get(live, "/readyz"))[0] == 200
    status, body = await get(live, "/metrics")
    assert status == 200
    text = body.decode()
    for name in ("tts_ready 1.0", 'tts_startup_seconds{phase="load"}', 'tts_startup_seconds{phase="total"}',
                 "tts_queue_depth", "tts_batch_size_bucket"):
        assert name in text


@pytest.mark.slow
async def test_auth_on(start_server, test_settings) -> None:  # type: ignore[no-untyped-def]
    live = await start_server(test_settings.replace(api_key="s3cret"))
    assert (await get(live, "/v1/voices"))[0] == 401
    assert (await get(live, "/v1/voices", Authorization="Bearer nope"))[0] == 401
    assert (await get(live, "/v1/voices", Authorization="Bearer s3cret"))[0] == 200
    # ?api_key= is the WebSocket handshake's (browsers cannot set its headers): an HTTP route takes the
    # header only, so keys stay out of URLs and proxy logs
    assert (await get(live, "/v1/voices?api_key=s3cret"))[0] == 401
    assert (await get(live, "/v1/audio/voices?api_key=s3cret"))[0] == 401
    for open_path in ("/healthz", "/readyz", "/metrics"):
        assert (await get(live, open_path))[0] == 200
    assert (await upload_voice(live, api_key="s3cret")).status == 201
    async with TTSClient(live.ws_url, api_key="s3cret") as client:
        result = await client.synthesize("Authorised.", voice="en")
        assert result.samples > 0
    async with aiohttp.ClientSession() as session, session.ws_connect(live.ws_url + "?api_key=s3cret") as ws:
        await ws.send_json({"type": "synthesize", "id": "q", "text": "Query key.", "voice": "en"})
        assert (await ws.receive_json())["type"] == "audio_start"


async def test_an_alias_to_a_missing_voice_is_a_warning_at_start(start_server, test_settings,  # type: ignore[no-untyped-def]
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await start_server(test_settings.replace(voice_aliases="alloy=ghost,echo=default"))
    dangling = [r for r in caplog.records if r.levelno == logging.WARNING and "voice alias" in r.getMessage()]
    assert [r.args for r in dangling] == [("alloy", "ghost", "alloy")]


async def test_auth_off_needs_no_key(live: LiveServer) -> None:
    assert (await get(live, "/v1/voices"))[0] == 200


async def test_voices_crud(live: LiveServer) -> None:
    status, body = await get(live, "/v1/voices")
    assert status == 200 and [v["id"] for v in orjson.loads(body)["voices"]] == ["default"]
    response = await upload_voice(live, "en")
    assert response.status == 201
    assert (await upload_voice(live, "en")).status == 409
    status, body = await get(live, "/v1/voices/en")
    voice = orjson.loads(body)
    stored = load_reference(encode(*english_clip(1.0))).samples.size / 24_000  # silent edges trimmed
    assert 0.5 < stored < 1.0
    assert status == 200 and voice["transcript"] == EN_TRANSCRIPT
    assert voice["seconds"] == pytest.approx(stored, abs=1e-3)
    generated = await upload_voice(live, "")  # no id: the server picks one
    assert generated.status == 201
    async with aiohttp.ClientSession() as session:
        async with session.delete(live.url("/v1/voices/en")) as r:
            assert r.status == 204
        async with session.delete(live.url("/v1/voices/en")) as r:
            assert r.status == 404
        async with session.delete(live.url("/v1/voices/default")) as r:
            assert r.status == 400
    assert (await get(live, "/v1/voices/en"))[0] == 404


@pytest.mark.parametrize(("voice_id", "audio", "transcript", "status"), [
    ("../etc", None, EN_TRANSCRIPT, 400),
    ("a/b", None, EN_TRANSCRIPT, 400),
    (".hidden", None, EN_TRANSCRIPT, 400),
    ("ok", b"garbage bytes, not audio", EN_TRANSCRIPT, 400),
    ("ok", encode(np.zeros(24_000, dtype=np.float32), 24_000), EN_TRANSCRIPT, 400),
    ("ok", None, "   ", 400),
])
async def test_bad_voice_uploads(live: LiveServer, voice_id: str, audio: bytes | None, transcript: str,
                                 status: int) -> None:
    response = await upload_voice(live, voice_id, samples=audio, transcript=transcript)
    assert response.status == status
    voices = orjson.loads((await get(live, "/v1/voices"))[1])["voices"]
    assert [v["id"] for v in voices] == ["default"]  # nothing was added


@pytest.mark.slow
async def test_voices_persist_across_restart(start_server, test_settings) -> None:  # type: ignore[no-untyped-def]
    first = await start_server(test_settings)
    assert (await upload_voice(first, "keeper")).status == 201
    async with TTSClient(first.ws_url) as client:
        before = await client.synthesize("Remember me.", voice="keeper", seed=4)
    await first.server.close()
    second = await start_server(test_settings)
    status, body = await get(second, "/v1/voices/keeper")
    assert status == 200 and orjson.loads(body)["transcript"] == EN_TRANSCRIPT
    async with TTSClient(second.ws_url) as client:
        after = await client.synthesize("Remember me.", voice="keeper", seed=4)
    assert bytes(after.pcm) == bytes(before.pcm)


async def test_broken_stored_voice_is_skipped(start_server, test_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    voices = tmp_path / "voices"
    (voices / "broken").mkdir(parents=True)
    (voices / "broken" / "audio").write_bytes(b"not audio")
    (voices / "broken" / "voice.json").write_text('{"transcript": "x"}')
    (voices / "good").mkdir()
    (voices / "good" / "audio").write_bytes(encode(*english_clip(1.0)))
    (voices / "good" / "voice.json").write_text('{"transcript": "Some call me"}')
    live = await start_server(test_settings.replace(voices_dir=str(voices)))
    assert (await get(live, "/v1/voices/good"))[0] == 200
    assert (await get(live, "/v1/voices/broken"))[0] == 404


async def test_not_multipart(live: LiveServer) -> None:
    async with aiohttp.ClientSession() as session, session.post(live.url("/v1/voices"), json={"a": 1}) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "bad_request"
