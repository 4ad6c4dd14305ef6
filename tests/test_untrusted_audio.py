"""Untrusted reference audio costs bounded time and memory: decompression bombs, gcd-hostile sample
rates, absurd headers and random bytes get a quick 201 (clipped) or 4xx, never a 5xx, and the decoding
never runs on the model's worker thread."""

from __future__ import annotations

import asyncio
import io
import os
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import server.core.voices as store_module
from engine.voices import END_SILENCE_SECONDS, SAMPLE_RATE, load_reference, trim_silent_edges
from server.core.settings import Settings
from tests.audio import EN_TRANSCRIPT, english_clip
from tests.conftest import LiveServer, upload_voice

SECONDS_BUDGET = 2.0
RSS_BUDGET = 200 * 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- a FLAC decompression bomb, written frame by frame (libFLAC would take minutes to encode hours) --------

def _crc(data: bytes, poly: int, bits: int) -> int:
    top, mask, crc = 1 << (bits - 1), (1 << bits) - 1, 0
    for byte in data:
        crc ^= byte << (bits - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
    return crc


def constant_flac(seconds: float, rate: int, value: int = 16_384, block: int = 65_535) -> bytes:
    """A valid 16-bit mono FLAC whose every frame is one CONSTANT subframe: ~15 bytes per 65 535 samples,
    so six hours at 48 kHz take 235 KB and decode to 4 GB of float32."""
    total = int(seconds * rate) // block * block
    info = struct.pack(">HH", block, block) + b"\0" * 6  # block sizes; frame sizes unknown
    info += ((rate << 44) | (15 << 36) | total).to_bytes(8, "big") + b"\0" * 16  # mono, 16 bit; no MD5
    out = bytearray(b"fLaC\x80" + len(info).to_bytes(3, "big") + info)
    for number in range(total // block):
        # sync + fixed blocking, 16-bit block size at the end, rate from STREAMINFO, mono, 16 bit
        head = b"\xff\xf8\x70\x08" + chr(number).encode("utf-8", "surrogatepass") + struct.pack(">H", block - 1)
        frame = head + bytes([_crc(head, 0x07, 8), 0x00]) + struct.pack(">h", value)
        out += frame + struct.pack(">H", _crc(frame, 0x8005, 16))
    return bytes(out)


def wav_header(rate: int, channels: int, bits: int, data_bytes: int, fmt: int = 1) -> bytes:
    """A canonical 44-byte header; every field wraps to its width, so any value makes a (lying) header."""
    block_align = channels * bits // 8 & 0xFFFF
    byte_rate = rate * block_align & 0xFFFFFFFF
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes & 0xFFFFFFFF) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, fmt, channels, rate, byte_rate, block_align, bits) +
            b"data" + struct.pack("<I", data_bytes))


# -- measuring ---------------------------------------------------------------------------------------------

def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


@contextmanager
def peak_rss_growth() -> Iterator[Callable[[], int]]:
    """Samples this process's RSS every 2 ms (the server runs in it) and yields a getter for the peak
    growth over the baseline. A sampler thread, because the peak of a bomb is transient."""
    baseline, peak, done = _rss(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            peak[0] = max(peak[0], _rss())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield lambda: max(peak[0], _rss()) - baseline
    finally:
        done.set()
        thread.join()


async def _timed_upload(live: LiveServer, data: bytes, voice_id: str) -> tuple[int, float, int]:
    with peak_rss_growth() as growth:
        started = time.perf_counter()
        response = await upload_voice(live, voice_id, samples=data)
        elapsed = time.perf_counter() - started
        return response.status, elapsed, growth()


# -- tests -------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("hours", [0.5, 6.0])
async def test_flac_bomb_is_cheap(live: LiveServer, hours: float) -> None:
    bomb = constant_flac(hours * 3600, 48_000)
    assert len(bomb) < 300_000  # decodes to 0.35 GB (0.5 h) / 4 GB (6 h) of float32
    status, seconds, growth = await _timed_upload(live, bomb, "bomb")
    assert status == 201 or 400 <= status < 500
    assert seconds < SECONDS_BUDGET and growth < RSS_BUDGET, (seconds, growth / 2**20)
    if status == 201:
        voice = live.state.runtime.voices.get("bomb")
        # 12 s decoded (a constant: no silent edge to trim), then upstream's 50 ms of silence appended
        assert voice is not None and voice.clipped and voice.seconds == pytest.approx(12.05, abs=0.01)


@pytest.mark.parametrize("rate", [23_999, 47_999])
async def test_gcd_hostile_rates_are_cheap(live: LiveServer, rate: int) -> None:
    mono, _ = english_clip(1.0)
    buffer = io.BytesIO()
    sf.write(buffer, mono, rate, format="WAV", subtype="PCM_16")  # ~48 KB / 1-2 s as in the report
    status, seconds, growth = await _timed_upload(live, buffer.getvalue(), f"r{rate}")
    assert status == 201 or 400 <= status < 500
    assert seconds < SECONDS_BUDGET and growth < RSS_BUDGET, (seconds, growth / 2**20)


@pytest.mark.parametrize("rate", [23_999, 47_999, 191_999, 11_025, 44_100])
def test_resampling_keeps_the_duration(rate: int) -> None:
    tone = (0.3 * np.sin(np.arange(rate) * 2 * np.pi * 440 / rate)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, tone, rate, format="WAV", subtype="FLOAT")
    reference = load_reference(buffer.getvalue())
    padded = 1 + END_SILENCE_SECONDS  # nothing to trim; upstream's 50 ms of silence appended
    assert abs(reference.samples.shape[0] - padded * SAMPLE_RATE) <= 2
    assert reference.rms == pytest.approx(0.3 / np.sqrt(2) / np.sqrt(padded), rel=1e-3)


@pytest.mark.parametrize(("header", "code"), [
    (wav_header(1, 1, 16, 48_000), "bad_audio"),             # 1 Hz
    (wav_header(24_000, 300, 16, 48_000 * 150), "bad_audio"),  # 300 channels
    (wav_header(2_000_000, 1, 16, 48_000), "bad_audio"),     # 2 MHz
])
async def test_absurd_headers_are_refused(live: LiveServer, header: bytes, code: str) -> None:
    data = header + np.random.default_rng(0).integers(-2**15, 2**15, 24_000, dtype=np.int16).tobytes()
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("audio", data, filename="x.wav")
        form.add_field("transcript", EN_TRANSCRIPT)
        async with session.post(live.url("/v1/voices"), data=form) as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == code


async def test_decoding_runs_off_the_model_thread(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    model_thread = await live.state.runtime.batcher.call_in_worker(threading.get_ident)
    decoded_on: list[int] = []

    def spy(data: bytes) -> object:
        decoded_on.append(threading.get_ident())
        return load_reference(data)

    monkeypatch.setattr(store_module, "load_reference", spy)
    assert (await upload_voice(live, "spy")).status == 201
    assert decoded_on and model_thread not in decoded_on
    assert threading.get_ident() not in decoded_on  # nor on the event loop


# -- fuzzing: a server in its own thread, so hypothesis drives plain blocking requests ---------------------

@pytest.fixture(scope="module")
def fuzz_server(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from aiohttp import web

    from server.app import create_app
    # Quotas out of the way: a refused-for-quota 507 is not what this test looks for.
    fuzz_settings = Settings(model="tiny", device="cpu", tiny_cache_dir=str(tiny_cache), warmup=False,
                             voices_dir=str(tmp_path_factory.mktemp("fuzz-voices")), host="127.0.0.1",
                             heartbeat_s=0, max_voices=10_000, max_voices_bytes=2**40)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(fuzz_settings))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1/voices"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _post(url: str, audio: bytes) -> int:
    boundary = "fuzzboundary7d"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"transcript\"\r\n\r\n{EN_TRANSCRIPT}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a\"\r\n\r\n").encode()
    body += audio + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


_headers = st.builds(wav_header, rate=st.one_of(st.sampled_from([23_999, 47_999, 8_000, 0, 1]),
                                                 st.integers(0, 2**32 - 1)),
                     channels=st.integers(0, 64), bits=st.sampled_from([0, 8, 16, 24, 32, 7]),
                     data_bytes=st.integers(0, 2**32 - 1), fmt=st.sampled_from([1, 3, 0, 0xFFFE, 2]))
_payloads = st.one_of(st.binary(max_size=4096),
                      st.tuples(_headers, st.binary(max_size=64_000)).map(lambda t: t[0] + t[1]))


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_payloads)
def test_fuzzed_uploads_never_fail_the_server(fuzz_server: str, payload: bytes) -> None:
    started = time.perf_counter()
    status = _post(fuzz_server, payload)
    assert status == 201 or 400 <= status < 500, status
    assert time.perf_counter() - started < SECONDS_BUDGET


# -- silent edges: trimmed as upstream's remove_silence_edges does ------------------------------------------

def _with_silent_edges(rate: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    speech = (0.3 * np.sin(np.arange(rate) * 2 * np.pi * 220 / rate)).astype(np.float32)
    hiss = lambda seconds: (0.002 * rng.standard_normal(int(seconds * rate))).astype(np.float32)  # noqa: E731  -54 dBFS
    return np.concatenate([hiss(0.4), speech, hiss(0.7)])


@pytest.mark.parametrize("rate", [24_000, 44_100])
def test_silent_edges_are_trimmed_as_upstream_does(rate: int) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        from f5_tts.infer.utils_infer import remove_silence_edges
        from pydub import AudioSegment

    samples = _with_silent_edges(rate)
    pcm = np.round(samples * 32767).astype(np.int16)
    segment = AudioSegment(pcm.tobytes(), frame_rate=rate, sample_width=2, channels=1)
    theirs = remove_silence_edges(segment) + AudioSegment.silent(duration=50, frame_rate=rate)
    ours = trim_silent_edges(pcm.astype(np.float32) / 32767, rate)
    # pydub slices in whole milliseconds; the chunk grid is the same
    assert abs(ours.size - int(theirs.frame_count())) <= rate // 1000
    assert abs(ours.size / rate - (1.0 + END_SILENCE_SECONDS)) < 0.02
    assert np.all(ours[-int(END_SILENCE_SECONDS * rate):] == 0)


def test_a_quiet_recording_is_not_trimmed_away() -> None:
    """Below -42 dBFS throughout: trimming would leave nothing, so the recording is kept (and boosted)."""
    quiet = (0.003 * np.sin(np.arange(24_000) * 2 * np.pi * 220 / 24_000)).astype(np.float32)
    assert trim_silent_edges(quiet, 24_000) is quiet
    buffer = io.BytesIO()
    sf.write(buffer, quiet, 24_000, format="WAV", subtype="FLOAT")
    assert load_reference(buffer.getvalue()).samples.size == 24_000
