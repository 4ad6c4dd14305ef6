"""The WebSocket streaming API against a real server on a free port, with the real tiny model."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from engine import SynthesisItem
from f5tts_client import StreamError, TTSClient
from server.core.audio import CROSS_FADE_S, CrossFader, to_pcm16
from server.core.feed import TextFeed
from server.core.settings import Settings
from tests.conftest import LiveServer, upload_voice, wait_until

LONG_TEXT = ("Hello there. This is a longer paragraph for the streaming test, with several sentences. "
             "It goes on for a while so that the server must cut it into chunks. And then it ends here.")


async def expected_audio(live: LiveServer, text: str, voice_id: str, seed: int, nfe: int = 4) -> np.ndarray:
    """What the server must send: the engine's chunks for the same seeds, cross-faded, as int16."""
    engine, voices = live.state.runtime.engine, live.state.runtime.voices
    voice = voices.get(voice_id)
    assert voice is not None
    feed = TextFeed.complete(text, engine.chunk_limit(voice))
    chunks = []
    while (chunk := await feed.next()) is not None:
        chunks.append(chunk)
    waves = [engine.synthesize([SynthesisItem(c, voice, nfe_steps=nfe, seed=seed + k)])[0]
             for k, c in enumerate(chunks)]
    fader = CrossFader(int(CROSS_FADE_S * engine.sample_rate))
    joined = np.concatenate([*(fader.push(w) for w in waves), fader.finish()])
    return np.frombuffer(to_pcm16(joined), dtype="<i2")


def received(result) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.frombuffer(bytes(result.pcm), dtype="<i2")


def assert_same_audio(got: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to batch-invariance noise (rel. L2 <= 1e-3, the engine's own bound): chunks may have been
    batched with other requests' chunks here but not in the solo reference."""
    assert len(got) == len(expected)
    diff = got.astype(np.float64) - expected.astype(np.float64)
    assert np.linalg.norm(diff) / np.linalg.norm(expected.astype(np.float64)) <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["request", "step"])
async def test_each_scheduler_streams_what_the_engine_makes(start_server, test_settings: Settings,  # type: ignore[no-untyped-def]
                                                             scheduler: str) -> None:
    """Alone, ``--scheduler request`` runs the engine's own batch call (bit for bit) and step passes
    reproduce it to ~1e-6; two streams at once share passes and keep their own audio."""
    live: LiveServer = await start_server(dataclasses.replace(test_settings, scheduler=scheduler))
    assert type(live.state.runtime.batcher).__name__ == {"request": "MicroBatcher", "step": "StepBatcher"}[scheduler]
    assert (await upload_voice(live)).status == 201
    text = "Hello there, this is the first sentence. And this is the second one, a little longer."
    async with TTSClient(live.ws_url) as client:
        alone = await client.synthesize(text, voice="en", seed=5)
        first, second = await asyncio.gather(client.synthesize(text, voice="en", seed=3),
                                             client.synthesize("Another stream at once.", voice="en", seed=9))
    assert alone.end is not None and alone.end["chunks"] == 2
    expected = await expected_audio(live, text, "en", 5)
    if scheduler == "request":
        assert np.array_equal(received(alone), expected)
    else:
        assert_same_audio(received(alone), expected)
    assert first.end is not None and second.end is not None
    assert_same_audio(received(first), await expected_audio(live, text, "en", 3))
    assert_same_audio(received(second), await expected_audio(live, "Another stream at once.", "en", 9))


@pytest.mark.slow
async def test_round_trip_single_chunk_equals_engine(live_en: LiveServer) -> None:
    async with TTSClient(live_en.ws_url) as client:
        result = await client.synthesize("Hello there, how are you?", voice="en", seed=11)
    assert result.start is not None and result.start["sample_rate"] == 24_000
    assert result.start["encoding"] == "pcm_s16le" and result.start["seed"] == 11
    assert result.end is not None
    assert result.end["samples"] == len(result.pcm) // 2 > 0
    assert result.end["chunks"] == 1 and result.end["frames"] == result.frames
    assert result.end["ttfa_ms"] <= result.end["latency_ms"] and result.end["rtf"] > 0
    expected = await expected_audio(live_en, "Hello there, how are you?", "en", 11)
    if live_en.state.settings.scheduler == "request":  # the same batch call: bit for bit
        assert np.array_equal(received(result), expected)
    else:  # step passes reproduce it to ~1e-6 (tests/test_step_sampler.py)
        assert_same_audio(received(result), expected)


@pytest.mark.slow
async def test_round_trip_multi_chunk_is_cross_faded_engine_audio(live_en: LiveServer) -> None:
    async with TTSClient(live_en.ws_url) as client:
        result = await client.synthesize(LONG_TEXT, voice="en", seed=5)
    assert result.end is not None and result.end["chunks"] >= 2
    assert result.end["samples"] == len(result.pcm) // 2
    assert_same_audio(received(result), await expected_audio(live_en, LONG_TEXT, "en", 5))


@pytest.mark.slow
async def test_two_ids_interleaved_on_one_socket(live_en: LiveServer) -> None:
    async with TTSClient(live_en.ws_url) as client:
        first = await client.start(LONG_TEXT, id="a", voice="en", seed=1)
        second = await client.start("Short and sweet. Then one more sentence to be sure.", id="b", voice="en",
                                    seed=2)
        await asyncio.gather(first.done, second.done)
    assert first.stream != second.stream
    for result, text, seed in ((first, LONG_TEXT, 1), (second, "Short and sweet. Then one more sentence to be "
                                                                "sure.", 2)):
        assert_same_audio(received(result), await expected_audio(live_en, text, "en", seed))
    # The client asserts per-stream frame order as frames arrive; both finished with all their audio.
    assert first.end and second.end and first.end["samples"] == first.samples


async def test_incremental_text_produces_audio_before_end(live_en: LiveServer) -> None:
    async with TTSClient(live_en.ws_url) as client:
        result = await client.start("", id="llm", final=False, voice="en", seed=3)
        for token in ["Hello", " there", ".", " How", " are"]:
            await client.send({"type": "append", "id": "llm", "text": token})
        for _ in range(200):  # the first sentence is complete: audio must come before any end/flush
            if result.frames:
                break
            await asyncio.sleep(0.02)
        assert result.frames > 0 and result.end is None
        await client.send({"type": "append", "id": "llm", "text": " you today"})
        await client.send({"type": "flush", "id": "llm"})
        await client.send({"type": "append", "id": "llm", "text": " Goodbye."})
        await client.send({"type": "end", "id": "llm"})
        await result.done
    assert result.end is not None and result.end["chunks"] >= 2  # text ready together is merged
    assert result.end["samples"] == result.samples


async def test_incremental_stream_with_no_text_ends_cleanly(live_en: LiveServer) -> None:
    async with TTSClient(live_en.ws_url) as client:
        result = await client.start("", id="empty", final=False, voice="en")
        await client.send({"type": "end", "id": "empty"})
        await result.done
    assert result.end is not None and result.end["samples"] == 0 and result.end["chunks"] == 0


async def wait_idle(live: LiveServer) -> None:
    for _ in range(200):
        if live.metric("tts_queue_depth") == 0 and live.metric("tts_inflight_requests", transport="ws") == 0 \
                and live.state.runtime.batcher.running == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("server did not become idle")


@pytest.mark.slow
async def test_cancel_stops_the_stream_and_leaves_nothing_queued(live_en: LiveServer) -> None:
    async with TTSClient(live_en.ws_url) as client:
        result = await client.start(LONG_TEXT * 3, id="c", voice="en", nfe_steps=16)
        while result.start is None:
            await asyncio.sleep(0.01)
        await client.send({"type": "cancel", "id": "c"})
        frames_at_cancel = result.frames
        await wait_idle(live_en)
        await asyncio.sleep(0.3)
        assert result.end is None and not result.done.done()
        assert result.frames <= frames_at_cancel + 1  # at most a frame already in flight
        # The socket stays usable, and the id can be reused.
        again = await client.synthesize("Still here.", id="c", voice="en")
        assert again.end is not None
    assert live_en.metric("tts_requests_total", transport="ws", outcome="cancelled") == 1


async def test_disconnect_cancels_queued_chunks(live_en: LiveServer) -> None:
    client = TTSClient(live_en.ws_url)
    await client.connect()
    results = [await client.start(LONG_TEXT * 2, voice="en", nfe_steps=16) for _ in range(4)]
    while results[0].start is None:
        await asyncio.sleep(0.01)
    await client.close()
    await wait_idle(live_en)
    assert live_en.state.service.active == 0
    assert live_en.metric("tts_requests_total", transport="ws", outcome="cancelled") == 4


async def test_seed_defaults_to_random_and_is_reported(live_en: LiveServer) -> None:
    async with TTSClient(live_en.ws_url) as client:
        a = await client.synthesize("Same text.", voice="en")
        b = await client.synthesize("Same text.", voice="en")
    assert a.start and b.start and a.start["seed"] != b.start["seed"]
    assert not np.array_equal(received(a), received(b))


async def test_metrics_count_requests_and_audio(live_en: LiveServer) -> None:
    async with TTSClient(live_en.ws_url) as client:
        result = await client.synthesize("Counting this one.", voice="en")
        with pytest.raises(StreamError):
            await client.synthesize("x", voice="missing")
    assert live_en.metric("tts_requests_total", transport="ws", outcome="ok") == 1
    assert live_en.metric("tts_audio_seconds_total", transport="ws") == pytest.approx(result.samples / 24_000)
    assert live_en.metric("tts_request_latency_seconds_count", transport="ws") == 1
    assert live_en.metric("tts_time_to_first_audio_seconds_count", transport="ws") == 1
    assert live_en.metric("tts_batch_size_count") >= 1


async def test_idle_socket_is_closed(start_server, test_settings) -> None:  # type: ignore[no-untyped-def]
    live = await start_server(test_settings.replace(idle_timeout_s=0.3))
    async with TTSClient(live.ws_url) as client:
        await asyncio.wait_for(client.closed.wait(), 5)
        assert client.close_code == 1000
    assert live.state.connections == set()


async def test_unspeakable_chunk_inside_a_stream_is_skipped(live_en: LiveServer) -> None:
    """A chunk of only symbols (here flushed on its own) is not voiced and does not fail the stream."""
    async with TTSClient(live_en.ws_url) as client:
        result = await client.start("", id="sym", final=False, voice="en", seed=2)
        await client.send({"type": "append", "id": "sym", "text": "Hello there. "})
        while result.frames == 0:
            await asyncio.sleep(0.01)
        await client.send({"type": "append", "id": "sym", "text": "☃☃☃"})
        await client.send({"type": "flush", "id": "sym"})
        stream = next(iter(live_en.state.connections)).streams["sym"]  # type: ignore[attr-defined]
        await wait_until(lambda: stream.feed.chunks_given >= 2)  # the flushed symbols became a chunk of their own
        await client.send({"type": "append", "id": "sym", "text": " Goodbye now."})
        await client.send({"type": "end", "id": "sym"})
        await result.done
    assert result.end is not None and result.end["chunks"] == 2 and result.samples > 0
