"""The voice store's limits and storage: transcript and quota limits, strict ids, JSON refusals, what is
stored (the clipped reference, not the upload), crash leftovers and stored voices that fail the checks."""

from __future__ import annotations

import io
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
import soundfile as sf

from engine import SynthesisItem
from server.core.settings import Settings
from server.core.voicedir import CLAIM_TTL_S
from tests.audio import EN_TRANSCRIPT, encode, english_clip
from tests.conftest import LiveServer, upload_voice
from tests.test_untrusted_audio import constant_flac, wav_header

Start = Callable[..., Awaitable[LiveServer]]


async def post(live: LiveServer, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(
            live.url("/v1/voices"), data=body, headers={"Content-Type": content_type}) as response:
        return response.status, orjson.loads(await response.read())


async def post_form(live: LiveServer, voice_id: str | None, audio: bytes | None = None,
                    transcript: str = EN_TRANSCRIPT) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("audio", encode(*english_clip(1.0)) if audio is None else audio, filename="a.wav")
    form.add_field("transcript", transcript)
    if voice_id is not None:
        form.add_field("id", voice_id)
    async with aiohttp.ClientSession() as session, session.post(live.url("/v1/voices"), data=form) as response:
        return response.status, orjson.loads(await response.read())


def error_code(body: dict[str, Any]) -> str:
    return str(body["error"]["code"])


# -- transcripts -------------------------------------------------------------------------------------------

async def test_transcript_over_the_limit_is_refused(start_server: Start, test_settings: Settings) -> None:
    live = await start_server(test_settings.replace(max_transcript_bytes=50))
    status, body = await post_form(live, "long", transcript="é" * 26)  # 26 characters, 52 bytes
    assert status == 400 and error_code(body) == "transcript_too_long"
    assert (await upload_voice(live, "ok", transcript="é" * 25)).status == 201


async def test_megabyte_transcript_is_refused_at_upload(live: LiveServer) -> None:
    """Once accepted, such a voice failed every synthesis at the model's frame cap."""
    status, body = await post_form(live, "huge", transcript="word " * 200_000)
    assert status == 400 and error_code(body) == "transcript_too_long"


async def test_transcript_too_long_for_its_clip_is_refused(start_server: Start, test_settings: Settings) -> None:
    """Within the byte limit but ~20 000 bytes for 1 s of audio: reference + chunk would pass MAX_FRAMES."""
    live = await start_server(test_settings.replace(max_transcript_bytes=100_000))
    status, body = await post_form(live, "dense", transcript="word " * 4_000)
    assert status == 400 and error_code(body) == "transcript_too_long"
    ok = await upload_voice(live, "fine", transcript="word " * 10)
    assert ok.status == 201
    voice = live.state.runtime.voices.get("fine")
    assert voice is not None
    out = live.state.runtime.engine.synthesize([SynthesisItem("Hello there.", voice, nfe_steps=2, seed=1, speed=4.0)])
    assert np.isfinite(out[0]).all()


# -- ids ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("voice_id", ["nl\n", "default\n"])  # `$` matched before a final newline
async def test_bad_ids_are_refused(live: LiveServer, voice_id: str) -> None:
    status, body = await post_form(live, voice_id)
    assert status == 400 and error_code(body) == "bad_request"
    assert list(Path(live.state.settings.voices_dir).iterdir()) == []


# -- quotas ------------------------------------------------------------------------------------------------

async def test_voice_count_quota(start_server: Start, test_settings: Settings) -> None:
    live = await start_server(test_settings.replace(max_voices=2))
    assert (await upload_voice(live, "a")).status == 201
    assert (await upload_voice(live, "b")).status == 201
    status, body = await post_form(live, "c")
    assert status == 507 and error_code(body) == "quota_exceeded"
    async with aiohttp.ClientSession() as session, session.delete(live.url("/v1/voices/a")) as r:
        assert r.status == 204
    assert (await upload_voice(live, "c")).status == 201


async def test_voice_bytes_quota(start_server: Start, test_settings: Settings) -> None:
    live = await start_server(test_settings.replace(max_voices_bytes=40_000))
    assert (await upload_voice(live, "a")).status == 201
    stored = sum(f.stat().st_size for f in (Path(test_settings.voices_dir) / "a").iterdir())
    assert 20_000 < stored < 40_000  # a second one would not fit
    status, body = await post_form(live, "b")
    assert status == 507 and error_code(body) == "quota_exceeded"
    assert not (Path(test_settings.voices_dir) / "b").exists()


# -- what is stored ----------------------------------------------------------------------------------------

async def test_only_the_clipped_reference_is_stored(start_server: Start, test_settings: Settings) -> None:
    mono, rate = english_clip(1.0)
    long_upload = encode(np.tile(mono, 20), rate)  # 20 s of float32: ~2 MB
    live = await start_server(test_settings)
    assert (await upload_voice(live, "long", samples=long_upload)).status == 201
    folder = Path(test_settings.voices_dir) / "long"
    info = sf.info(str(folder / "audio"))
    assert (info.samplerate, info.channels, info.format) == (24_000, 1, "FLAC")
    assert 11.5 < info.duration <= 12.05  # cut at 12 s, silent edges trimmed, 50 ms appended
    assert (folder / "audio").stat().st_size < len(long_upload) / 2
    before = live.state.runtime.voices.get("long")
    again = await start_server(test_settings)  # the same dir: the stored voice comes back the same
    after = again.state.runtime.voices.get("long")
    assert before is not None and after is not None and after.clipped and after.rms == before.rms
    np.testing.assert_allclose(after.audio.numpy(), before.audio.numpy(), atol=1e-5)


async def test_crash_leftovers_are_removed_at_start(start_server: Start, test_settings: Settings) -> None:
    """Old enough that no live replica is still writing them (tests/test_shared_voices.py: fresh ones stay)."""
    voices = Path(test_settings.voices_dir)
    old = time.time() - CLAIM_TTL_S - 1
    for name in (".incoming-x-1234abcd", ".deleted-y-1234abcd", ".staging/x.1000.1234abcd", ".trash/y.1234abcd"):
        (voices / name).mkdir(parents=True)
        (voices / name / "audio").write_bytes(b"\0" * 1000)
        os.utime(voices / name, (old, old))
    await start_server(test_settings)
    assert not any(p.name.startswith((".incoming-", ".deleted-")) for p in voices.iterdir())
    assert not any((voices / ".staging").iterdir()) and not any((voices / ".trash").iterdir())


@pytest.mark.slow
async def test_stored_voices_failing_the_checks_are_skipped(start_server: Start, test_settings: Settings,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    voices = Path(test_settings.voices_dir)
    rng = np.random.default_rng(0)
    planted = {"bomb": constant_flac(6 * 3600, 48_000),  # what an old server stored: decoded whole at start
               "hostile": wav_header(1, 300, 16, 48_000) + rng.bytes(48_000),
               "good": encode(*english_clip(1.0))}
    for name, audio in planted.items():
        (voices / name).mkdir(parents=True)
        (voices / name / "audio").write_bytes(audio)
        (voices / name / "voice.json").write_bytes(orjson.dumps({"transcript": EN_TRANSCRIPT}))
    with caplog.at_level(logging.WARNING, logger="server.core.voices"):
        live = await start_server(test_settings)
    assert live.state.runtime.voices.get("good") is not None
    for name in ("bomb", "hostile"):
        assert live.state.runtime.voices.get(name) is None
        assert len([r for r in caplog.records if f"skipping stored voice {name}" in r.getMessage()]) == 1


# -- JSON refusals -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "content_type"), [
    (b"garbage without any boundary", "multipart/form-data; boundary=xyz"),
    (b"--xyz\r\nContent-Disposition: form-data; name=\"audio\"\r\n\r\nabc", "multipart/form-data; boundary=xyz"),
    (b"--xyz\r\n\r\n\r\n--xyz--\r\n", "multipart/form-data"),
    (b"--xyz\r\nContent-Type: multipart/mixed\r\n\r\nzz\r\n--xyz--\r\n", "multipart/form-data; boundary=xyz"),
])
async def test_malformed_multipart_is_a_json_400(live: LiveServer, body: bytes, content_type: str) -> None:
    status, answer = await post(live, body, content_type)
    assert status == 400 and error_code(answer) == "bad_request"


async def test_unwritable_voices_dir_is_a_json_storage_error(live: LiveServer) -> None:
    voices = Path(live.state.settings.voices_dir)
    shutil.rmtree(voices)
    voices.write_bytes(b"not a directory")  # works as root too, unlike chmod
    status, body = await post_form(live, "x")
    assert status in (500, 507) and error_code(body) == "storage_error"
    assert [v.id for v in live.state.runtime.voices.all()] == ["default"]


async def test_oversized_audio_field_is_a_json_413(start_server: Start, test_settings: Settings) -> None:
    live = await start_server(test_settings.replace(max_upload_bytes=50_000))
    mono, rate = english_clip(1.0)
    buffer = io.BytesIO()
    sf.write(buffer, np.tile(mono, 3), rate, format="WAV", subtype="FLOAT")
    status, body = await post_form(live, "big", buffer.getvalue())
    assert status == 413 and error_code(body)


async def test_shutdown_releases_the_voice_helper_threads(start_server: Start, test_settings: Settings) -> None:
    live = await start_server(test_settings)
    assert (await upload_voice(live)).status == 201  # decoding ran on the helpers
    voices = live.state.runtime.voices
    await live.server.close()  # the app's cleanup: batcher, then voices
    with pytest.raises(RuntimeError, match="shutdown"):
        await voices.prepare("late", b"", EN_TRANSCRIPT)
