"""The clients people already use, each against a server with no uploaded voice, and a
conformance run of schemathesis against a vendored excerpt of OpenAI's OpenAPI spec.

The official ``openai`` SDK is used for real. pipecat (pipecat-ai 1.14: its pins conflict with ours,
protobuf<7) and LiveKit (livekit-plugins-openai 1.8.9: ~400 MB of native wheels) are not installed; both
call the same SDK method, and their exact calls are reproduced from their source:
``pipecat/services/openai/tts.py`` (OpenAITTSService.run_tts) and ``livekit/plugins/openai/tts.py``
(ChunkedStream._run). Open WebUI's and Home Assistant's requests are reproduced from theirs.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from pathlib import Path
from typing import Any

import aiohttp
import av
import openai
import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.conftest import LiveServer, upload_voice

SPEC = Path(__file__).parent / "openapi" / "openai-audio-models.yaml"
FAST = {"nfe_steps": 2}


def sdk(live: LiveServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=live.url("/v1"), api_key="sk-anything", max_retries=0)


def decodable(data: bytes) -> int:
    """Samples in an encoded file (mp3, aac, ...), decoded by FFmpeg."""
    with av.open(io.BytesIO(data)) as container:
        return sum(frame.samples for frame in container.decode(audio=0))


@pytest.mark.slow
async def test_openai_sdk_with_openai_voice_names(live: LiveServer) -> None:
    async with sdk(live) as client:
        assert (await client.models.retrieve("tts-1")).id == "tts-1"
        for fmt in ("mp3", "aac"):
            audio = await client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there.",
                                                     response_format=fmt, extra_body=FAST)
            assert decodable(audio.content) > 1000


@pytest.mark.slow
async def test_pipecat_openai_tts_service(live: LiveServer) -> None:
    """pipecat's OpenAITTSService: only OpenAI voice names, default alloy and gpt-4o-mini-tts, raw PCM."""
    async with sdk(live) as client, client.audio.speech.with_streaming_response.create(
            input="Hello from pipecat.", model="gpt-4o-mini-tts", voice="alloy", response_format="pcm",
            extra_body=FAST) as response:
        assert response.status_code == 200
        pcm = b"".join([chunk async for chunk in response.iter_bytes(4800)])
    assert len(pcm) > 2000 and len(pcm) % 2 == 0


@pytest.mark.parametrize(("model", "stream_format"), [("gpt-4o-mini-tts", "sse"), ("tts-1", "audio")])
async def test_livekit_openai_plugin(live: LiveServer, model: str, stream_format: str) -> None:
    """LiveKit's plugin: voice ash, mp3, speed 1.0, SSE for gpt-4o-mini-tts; parsed by Content-Type."""
    async with sdk(live) as client, client.audio.speech.with_streaming_response.create(
            input="Hello from LiveKit.", model=model, voice="ash", response_format="mp3", speed=1.0,
            stream_format=stream_format, extra_body=FAST) as response:  # type: ignore[arg-type]
        media_type = response.headers["content-type"].split(";")[0]
        if media_type == "text/event-stream":
            mp3 = b""
            async for line in response.iter_lines():
                if line.startswith("data: ") and (event := orjson.loads(line[6:]))["type"] == "speech.audio.delta":
                    mp3 += base64.b64decode(event["audio"])
        else:
            assert media_type == "audio/mpeg"
            mp3 = b"".join([chunk async for chunk in response.iter_bytes()])
    assert media_type == ("text/event-stream" if stream_format == "sse" else "audio/mpeg")
    assert decodable(mp3) > 1000


async def test_open_webui_discovery_and_speech(live: LiveServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(live.url("/v1/audio/models")) as r:
            assert "tts-1" in [m["id"] for m in (await r.json())["models"]]
        async with session.get(live.url("/v1/audio/voices")) as r:
            voices = (await r.json())["voices"]
        assert voices[0] == {"id": "default", "name": "default"}
        assert {"id": "nova", "name": "nova (default)"} in voices and all(v["name"] for v in voices)
        async with session.post(live.url("/v1/audio/speech"), json={
                "input": "Hello from Open WebUI.", "model": "tts-1", "voice": voices[-1]["id"], **FAST}) as r:
            assert r.status == 200 and r.content_type == "audio/mpeg" and decodable(await r.read()) > 1000


async def test_home_assistant_with_extra_payload(live: LiveServer) -> None:
    async with aiohttp.ClientSession() as session, session.post(live.url("/v1/audio/speech"), json={
            "model": "gpt-4o-mini-tts", "voice": "coral", "input": "The kitchen light is on.",
            "instructions": "Speak cheerfully.", "speed": 1.0, "response_format": "mp3", "lang_code": "a",
            **FAST}) as r:
        assert r.status == 200 and r.headers["X-Ignored-Params"] == "lang_code"
        assert decodable(await r.read()) > 1000


async def test_aliases_from_flag_and_file_and_real_voices_win(start_server, test_settings) -> None:  # type: ignore[no-untyped-def]
    voices_dir = Path(test_settings.voices_dir)
    voices_dir.mkdir(parents=True)
    (voices_dir / "aliases.json").write_bytes(orjson.dumps({"echo": "en", "narrator": "en", "ash": "ghost"}))
    live = await start_server(test_settings.replace(voice_aliases="alloy=en"))
    assert (await upload_voice(live, "en")).status == 201
    assert (await upload_voice(live, "nova")).status == 201  # a real voice named like an alias wins
    async with aiohttp.ClientSession() as session:
        async with session.get(live.url("/v1/voices")) as r:
            listing = await r.json()
        aliases = {a["id"]: a["voice"] for a in listing["aliases"]}
        assert aliases["alloy"] == "en" and aliases["echo"] == "en" and aliases["shimmer"] == "default"
        assert all(v["name"] == v["id"] for v in listing["voices"])
        async with session.get(live.url("/v1/audio/voices")) as r:
            ids = [v["id"] for v in (await r.json())["voices"]]
        assert ids.count("nova") == 1 and "narrator" in ids
    service = live.state.service
    assert service._voice("alloy").id == "en" and service._voice("narrator").id == "en"
    assert service._voice("nova").id == "nova" and service._voice("fable").id == "default"
    async with sdk(live) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.audio.speech.create(model="tts-1", voice="ash", input="Hi.")
    assert "alias of 'ghost'" in str(info.value)


async def test_unknown_routes_and_methods_are_openai_json(live: LiveServer) -> None:
    async with aiohttp.ClientSession() as session:
        for method, path, status in (("GET", "/v1/nothing", 404), ("GET", "/v1/audio/speech", 405),
                                     ("GET", "/v1/models/whisper-1", 404)):
            async with session.request(method, live.url(path)) as r:
                body = await r.json()
            assert r.status == status and body["error"]["code"] and body["error"]["message"], (path, body)


async def test_cors(start_server, test_settings) -> None:  # type: ignore[no-untyped-def]
    live = await start_server(test_settings.replace(cors_origins="https://app.example", api_key="k"))
    origin = {"Origin": "https://app.example"}
    async with aiohttp.ClientSession() as session:
        async with session.options(live.url("/v1/audio/speech"), headers={
                **origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"}) as r:
            assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
        async with session.post(live.url("/v1/audio/speech"), headers={**origin, "Authorization": "Bearer k"},
                                json={"model": "tts-1", "voice": "alloy", "input": "Hi there.", **FAST}) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert "X-Seed" in r.headers["Access-Control-Expose-Headers"]
        async with session.get(live.url("/v1/models"), headers=origin) as r:  # errors carry CORS too
            assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        async with session.get(live.url("/v1/models"), headers={"Origin": "https://evil.example"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers


async def test_nul_byte_in_a_header_is_one_warning(live: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    reader, writer = await asyncio.open_connection(live.server.host, live.server.port)
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n")
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert b" 400 " in status_line
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records and all(r.levelno == logging.WARNING and r.exc_info is None for r in records)
    assert "refused with 400" in records[0].getMessage()


def _conformance(base_url: str) -> list[str]:
    """Runs in a thread (requests is blocking) while the test's loop serves. Returns the failures."""
    schema = schemathesis.openapi.from_path(str(SPEC))
    failures: list[str] = []
    session = requests.Session()

    def check(case: Any, mode: GenerationMode) -> None:
        response = case.call(base_url=base_url, session=session, timeout=30)
        where = f"{case.method} {case.formatted_path} {mode.value} {str(case.body)[:120]!r}: {response.status_code}"
        if response.status_code >= 500:
            failures.append(f"{where} server error")
        elif response.status_code >= 400:
            is_json = response.headers.get("content-type", [""])[0].startswith("application/json")
            error = response.json().get("error") if is_json else None
            if not (isinstance(error, dict) and error.get("code") and error.get("message") and error.get("type")):
                failures.append(f"{where} not an OpenAI error: {response.text[:200]}")
        elif case.path != "/audio/speech":
            case.validate_response(response, checks=[schemathesis.checks.response_schema_conformance])
        if mode is GenerationMode.POSITIVE and case.path == "/audio/speech" and response.status_code != 200:
            failures.append(f"{where} spec-valid request refused: {response.text[:200]}")

    both = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    for path, method, examples, modes in (("/audio/speech", "POST", 25, both), ("/models/{model}", "GET", 6, both[:1]),
                                          ("/models", "GET", 1, both[:1])):  # any path string is valid: no negatives
        for mode in modes:
            _run(schema[path][method].as_strategy(generation_mode=mode), examples, lambda c, m=mode: check(c, m))
    return failures


def _run(strategy: Any, examples: int, check: Any) -> None:
    @settings(max_examples=examples, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        check(case)

    run()


@pytest.mark.slow
async def test_schemathesis_conformance_with_openai_spec(live: LiveServer) -> None:
    failures = await asyncio.to_thread(_conformance, live.url("/v1"))
    assert not failures, "\n".join(failures)
