"""The agent endpoints with the real client libraries: the official Cartesia and ElevenLabs SDKs, Pipecat's
Cartesia and ElevenLabs services, LiveKit Agents' Cartesia and ElevenLabs plugins. Each runs as a small
script in its own pinned environment (.venv-clients, from tests/clients/constraints.txt: `make clients`)
against a real server with the tiny model."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from server.core.settings import Settings
from tests.conftest import LiveServer, upload_voice

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / "tests" / "clients"
PYTHON = ROOT / ".venv-clients" / "bin" / "python"
KEY = "secret"
SENT = "Hello there, this is the first sentence. And the second one."


@pytest.fixture
async def agent_server(start_server, test_settings: Settings) -> LiveServer:  # type: ignore[no-untyped-def]
    if not PYTHON.exists():
        pytest.skip("the client libraries' environment is missing: run `make clients`")
    live: LiveServer = await start_server(dataclasses.replace(test_settings, api_key=KEY, default_nfe_steps=2))
    assert (await upload_voice(live, api_key=KEY)).status == 201
    return live


async def run_client(live: LiveServer, script: str, *args: str, timeout: float = 240) -> dict[str, Any]:
    base = str(live.server.make_url("")).rstrip("/")
    process = await asyncio.create_subprocess_exec(
        str(PYTHON), str(CLIENTS / script), base, *args, cwd=str(CLIENTS), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    lines = [line for line in out.decode().splitlines() if line.startswith("RESULT ")]
    assert process.returncode == 0 and lines, f"{script} failed:\n{err.decode()[-4000:]}"
    return dict(json.loads(lines[-1][len("RESULT "):]))


def assert_tiles(starts: list[float], ends: list[float], audio_s: float) -> None:
    """Word times ordered, inside the audio, covering it up to the last word."""
    assert starts and starts == sorted(starts) and all(s <= e for s, e in zip(starts, ends, strict=True))
    assert 0 <= starts[0] < 0.5 and ends[-1] <= audio_s + 0.05 and ends[-1] > audio_s - 0.6


async def test_cartesia_sdk(agent_server: LiveServer) -> None:
    result = await run_client(agent_server, "cartesia_sdk.py")
    audio_s = result["audio_bytes"] / 2 / result["sample_rate"]
    assert audio_s > 0.5 and result["types"][-1] == "done"
    assert " ".join(result["words"]) == "Hello there, this is the first sentence. And the second."
    assert_tiles(result["starts"], result["ends"], audio_s)
    assert result["after_types"][-1] == "done"  # the socket goes on after a cancelled context
    assert result["mulaw_bytes"] > 0
    assert agent_server.metric("tts_requests_total", transport="cartesia", outcome="cancelled") == 1


@pytest.mark.parametrize("plugin", ["cartesia", "elevenlabs"])
async def test_livekit_plugin(agent_server: LiveServer, plugin: str) -> None:
    result = await run_client(agent_server, "livekit_tts.py", plugin)
    audio_s = result["samples"] / result["sample_rate"]
    assert result["sample_rate"] == 24000 and audio_s > 0.5
    words = result["words"]
    assert "".join(w[0] for w in words).split() == SENT.split()
    assert all(0 <= t <= audio_s + 0.05 for w in words for t in w[1:])
    if plugin == "cartesia":
        assert_tiles([w[1] for w in words], [w[2] for w in words], audio_s)
    # ElevenLabs restarts character times at zero in every audio message (Pipecat adds them up); LiveKit's
    # plugin reads them as times from the context's start, so its word times restart with each message.
    assert agent_server.metric("tts_requests_total", transport=plugin, outcome="ok") >= 1


@pytest.mark.parametrize("service", ["cartesia", "elevenlabs"])
async def test_pipecat_service(agent_server: LiveServer, service: str) -> None:
    result = await run_client(agent_server, "pipecat_tts.py", service)
    rate = result["sample_rate"]
    assert result["contexts"] == 3 and result["first_samples"] / rate > 0.5
    words = result["first_words"]
    assert " ".join(w for w, _ in words).split() == SENT.split()
    times = [t for _, t in words]
    assert times == sorted(times) and times[-1] - times[0] < result["first_samples"] / rate
    # The interrupted reply had audio, then none of it reached the pipeline after the interruption
    # (pipecat drops the context's queue at once; the server stops sending it).
    assert result["cut_samples"] > 0 and result["cut_late_samples"] == 0
    assert result["after_samples"] / rate > 0.3 and [w for w, _ in result["after_words"]]
    # Pipecat cancels a Cartesia context; on the ElevenLabs wire it can only close it (close_context ends
    # its input, so the server finishes it and pipecat drops that audio).
    outcome = "cancelled" if service == "cartesia" else "ok"
    assert agent_server.metric("tts_requests_total", transport=service, outcome=outcome) >= 1


async def test_elevenlabs_sdk_http(agent_server: LiveServer) -> None:
    result = await run_client(agent_server, "elevenlabs_sdk.py")
    sizes = result["sizes"]
    for method in ("convert", "stream"):
        pcm, ulaw = sizes[f"{method}_pcm_16000"], sizes[f"{method}_ulaw_8000"]
        assert pcm / 2 / 16000 > 0.5 and pcm % 2 == 0
        assert abs(ulaw / 8000 - pcm / 2 / 16000) < 0.01  # one byte a sample, the same duration
    status, body = result["refusal"]
    assert status == 400 and body["detail"]["status"] == "unknown_voice"  # the SDK's ApiError, with our code
    status, body = result["unauthorized"]
    assert status == 401 and body["detail"]["status"] == "unauthorized"
    assert agent_server.metric("tts_requests_total", transport="elevenlabs", outcome="ok") == 4
