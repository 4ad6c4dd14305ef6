"""The text front end over the real tiny server: normalisation, SSML breaks and rates, marks (WebSocket and
SSE), captions. Short texts and 2 flow steps: the model's audio is noise, but its lengths and the zeros
of a break are exact."""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest

from engine import SynthesisItem
from f5tts_client import StreamError, StreamResult, TTSClient
from f5tts_client.cli import run as run_cli
from server.core.feed import TextFeed
from server.core.pieces import MAX_BREAK_S, Chunk, PieceMaker, Silence
from server.core.settings import Settings
from server.runpod.worker import Worker
from tests.conftest import LiveServer, upload_voice
from text.errors import TextTooLongError

NFE = 2
LONG = ("Hello there. This is a longer paragraph with 12 items and several sentences, so the server "
        "cuts it into chunks. It goes on for a while, at 10:30 pm. And then it ends here.")
EXPANDING = {  # within --max-text-chars as given, many times that once read out
    "exponents": "1e999999 " * 555,
    "digits": "9" * 5000,
    "grouped digits": "12345 " * 833,
    "telephone": '<speak><say-as interpret-as="telephone">' + "5" * 4900 + "</say-as></speak>",
}
HUGE_SAY_AS = [f'<speak><say-as interpret-as="{kind}">{"9" * 4400}</say-as></speak>'
               for kind in ("cardinal", "ordinal", "date")]
BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
                            for i in range(1, 10))
                  + ']><speak>&lol9;</speak>')


def pcm(result: StreamResult) -> np.ndarray:
    return np.frombuffer(bytes(result.pcm), dtype="<i2")


def assert_tiled(marks: list[dict[str, Any]], samples: int, chunks: int) -> None:
    """Stretches start at 0, each where the one before ends, the last at the stream's end; chunk indices
    count 0..chunks-1; estimated words lie inside their stretch, in order."""
    assert marks and marks[0]["start_sample"] == 0 and marks[-1]["end_sample"] == samples
    for before, after in itertools.pairwise(marks):
        assert after["start_sample"] == before["end_sample"]
    assert [m["chunk"] for m in marks if not m.get("break")] == list(range(chunks))
    for mark in marks:
        assert mark["start_sample"] < mark["end_sample"]
        ends = [mark["start_sample"]] + [x for w in mark["words"] for x in (w["start"], w["end"])]
        assert ends == sorted(ends) and (not mark["words"] or ends[-1] <= mark["end_sample"])
        assert all(w["estimate"] is True for w in mark["words"])


async def test_numbers_normalised_by_default_and_not_when_switched_off(live_en: LiveServer) -> None:
    text = "I paid $3.50 for 2 apples."
    async with TTSClient(live_en.ws_url) as client:
        on = await client.synthesize(text, voice="en", seed=3, nfe_steps=NFE, marks=True)
        off = await client.synthesize(text, voice="en", seed=3, nfe_steps=NFE, marks=True, normalize=False)
        plain = await client.synthesize(text, voice="en", seed=3, nfe_steps=NFE)
    (mark,) = on.marks
    assert mark["text"] == text and "three dollars" in mark["spoken"] and "two apples" in mark["spoken"]
    assert [m["spoken"] for m in off.marks] == [text]
    assert plain.marks == [] and plain.end is not None and set(plain.end) == set(on.end or {})  # no opt-in: as before
    # The model was given the spoken form: the audio is exactly the engine's for that text.
    engine, voice = live_en.state.runtime.engine, live_en.state.runtime.voices.get("en")
    assert voice is not None
    wave = engine.synthesize([SynthesisItem(mark["spoken"], voice, nfe_steps=NFE, seed=3)])[0]
    assert len(pcm(on)) == len(wave) and len(pcm(on)) != len(pcm(off))


async def test_incremental_stream_is_normalised_chunk_by_chunk(live_en: LiveServer) -> None:
    async with TTSClient(live_en.ws_url) as client:
        result = await client.start("", final=False, voice="en", nfe_steps=NFE, marks=True)
        await client.send({"type": "append", "id": result.id, "text": "Meet me at 10:30 pm. "})
        await client.send({"type": "append", "id": result.id, "text": "Room 3, Dr. Who."})
        await client.send({"type": "end", "id": result.id})
        await result.done
        with pytest.raises(StreamError) as refused:
            await client.synthesize("<speak>Hi.</speak>", final=False, voice="en")
    spoken = " ".join(m["spoken"] for m in result.marks)
    assert "ten thirty" in spoken and "Doctor" in spoken and "10:30" not in spoken
    assert "".join(m["text"] for m in result.marks).replace(" ", "") == "Meetmeat10:30pm.Room3,Dr.Who."
    assert result.end is not None
    assert_tiled(result.marks, result.end["samples"], result.end["chunks"])
    assert refused.value.code == "bad_request" and "final" in str(refused.value)


async def test_break_is_exact_silence_between_chunks(live_en: LiveServer) -> None:
    ssml = '<speak>Hello there, my friend.<break time="500ms"/>See you <sub alias="tomorrow">tmrw</sub>.</speak>'
    async with TTSClient(live_en.ws_url) as client:
        result = await client.synthesize(ssml, voice="en", seed=1, nfe_steps=NFE, marks=True)
        plain = await client.synthesize("One. [pause 250ms] Two, three.", voice="en", nfe_steps=NFE, marks=True)
    assert result.end is not None and result.end["chunks"] == 2
    first, pause, second = result.marks
    assert pause["break"] is True and pause["chunk"] is None and pause["words"] == []
    assert pause["end_sample"] - pause["start_sample"] == 12_000
    audio = pcm(result)
    assert not audio[pause["start_sample"] : pause["end_sample"]].any()
    assert audio[first["start_sample"] : first["end_sample"]].any() and audio[second["start_sample"] :].any()
    assert second["text"] == "See you tmrw." and second["spoken"] == "See you tomorrow."
    assert_tiled(result.marks, result.end["samples"], 2)
    (gap,) = [m for m in plain.marks if m.get("break")]
    assert gap["end_sample"] - gap["start_sample"] == 6_000
    assert not pcm(plain)[gap["start_sample"] : gap["end_sample"]].any()


async def test_prosody_rate_scales_the_chunk(live_en: LiveServer) -> None:
    text = "Hello there my good friend."
    async with TTSClient(live_en.ws_url) as client:
        normal = await client.synthesize(f"<speak>{text}</speak>", voice="en", nfe_steps=NFE, seed=2)
        slow = await client.synthesize(f'<speak><prosody rate="50%">{text}</prosody></speak>', voice="en",
                                       nfe_steps=NFE, seed=2)
    assert 1.8 < len(pcm(slow)) / len(pcm(normal)) < 2.2  # F5 sizes a chunk by bytes / speed


async def test_ssml_errors_are_bad_request_and_billion_laughs_is_refused_fast(live_en: LiveServer) -> None:
    async with TTSClient(live_en.ws_url) as client:
        for document, says in (('<speak>Hi <break time="soon"/></speak>', "break time"),
                               ("<speak>Hi <b>there</speak>", "not well-formed"),
                               ("<speak></speak>", "empty")):
            with pytest.raises(StreamError) as error:
                await client.synthesize(document, voice="en")
            assert error.value.code == "bad_request" and says in str(error.value)
        started = time.perf_counter()
        with pytest.raises(StreamError) as error:
            await client.synthesize(BILLION_LAUGHS, voice="en")
        assert error.value.code == "bad_request" and "refused" in str(error.value)
        assert time.perf_counter() - started < 1.0
        ok = await client.synthesize("Still fine.", voice="en", nfe_steps=NFE)  # the socket is still usable
    assert ok.samples > 0


@pytest.mark.slow
async def test_marks_tile_a_multi_chunk_stream(live_en: LiveServer) -> None:
    async with TTSClient(live_en.ws_url) as client:
        result = await client.synthesize(LONG, voice="en", nfe_steps=NFE, marks=True)
    assert result.end is not None and result.end["chunks"] >= 2
    assert_tiled(result.marks, result.end["samples"], result.end["chunks"])
    assert result.end["samples"] == result.samples
    assert "twelve" in " ".join(m["spoken"] for m in result.marks)


_SRT_CUE = re.compile(r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n(.+)")


def _seconds(parts: tuple[str, ...]) -> float:
    hours, minutes, seconds, millis = (int(p) for p in parts)
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


@pytest.mark.slow
async def test_cli_writes_captions_that_parse(live_en: LiveServer, tmp_path: Path) -> None:
    args = argparse.Namespace(text=LONG.replace("12 items", "12 items [pause 300ms]"), output=str(tmp_path / "o.wav"),
                              url=live_en.ws_url, api_key=None, voice="en", seed=4, speed=None, nfe_steps=NFE,
                              lang="en", no_normalize=False, srt=str(tmp_path / "o.srt"), vtt=str(tmp_path / "o.vtt"))
    assert await run_cli(args) == 0
    blocks = (tmp_path / "o.srt").read_text().strip().split("\n\n")
    cues = [_SRT_CUE.fullmatch(block) for block in blocks]
    assert len(cues) >= 2 and all(cues)
    times = [(_seconds(m.groups()[1:5]), _seconds(m.groups()[5:9])) for m in cues if m]
    assert [int(m.group(1)) for m in cues if m] == list(range(1, len(cues) + 1))
    assert all(start < end for start, end in times) and times == sorted(times)
    assert "12 items" in (tmp_path / "o.srt").read_text()  # captions show the text as given
    vtt = (tmp_path / "o.vtt").read_text()
    assert vtt.startswith("WEBVTT\n\n") and vtt.count(" --> ") == len(cues)


async def test_sse_carries_marks(live_en: LiveServer) -> None:
    body = {"model": "tts-1", "voice": "en", "input": "It is 5 km away. Then we stop.", "response_format": "pcm",
            "stream_format": "sse", "nfe_steps": NFE, "marks": True}
    async with aiohttp.ClientSession() as session, session.post(live_en.url("/v1/audio/speech"), json=body) as r:
        assert r.status == 200
        events = [orjson.loads(line[6:]) for line in (await r.text()).split("\n\n") if line.startswith("data: ")]
    marks = [e for e in events if e["type"] == "speech.marks"]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert events[0]["type"] == "speech.marks" and events[-1]["type"] == "speech.audio.done"
    assert_tiled(marks, len(audio) // 2, len(marks))
    assert "five kilometers" in marks[0]["spoken"] or "five kilometres" in marks[0]["spoken"]
    async with aiohttp.ClientSession() as session:
        async with session.post(live_en.url("/v1/audio/speech"), json={**body, "normalize": "yes"}) as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "normalize"
        async with session.post(live_en.url("/v1/audio/speech"), json={**body, "input": "<speak>Hi <x></speak>"}) as r:
            error = (await r.json())["error"]
            assert r.status == 400 and error["code"] == "invalid_input" and "well-formed" in error["message"]


def test_breaks_of_one_stream_are_capped() -> None:
    front = PieceMaker()
    pieces = front.plain("a" + " [pause 10s] b" * 8, lambda rate: 200)
    silences = [p.seconds for p in pieces if isinstance(p, Silence)]
    assert max(silences) <= MAX_BREAK_S and sum(silences) == 60.0


def test_first_chunk_keeps_its_short_budget_after_normalising() -> None:
    """Numbers read out grow a sentence threefold; the first chunk (time to first audio) is cut again to the
    first-chunk budget, at a sentence boundary, after normalising."""
    from text.chunking import FIRST_CHUNK_BYTES

    text = "Hello there. It costs $3.50 at 10:30 on 2026-11-29."
    assert len(text.encode()) <= FIRST_CHUNK_BYTES  # as given it is one first chunk
    first = PieceMaker().plain(text, lambda _rate: 300, first=True)
    later = PieceMaker().plain(text, lambda _rate: 300)
    assert next(p.spoken for p in first if isinstance(p, Chunk)) == "Hello there."
    assert len(later) == 1 and "three dollars and fifty cents" in later[0].spoken  # type: ignore[union-attr]


def _chunk_limit(_rate: float) -> int:
    return 300


@pytest.mark.parametrize("text", EXPANDING.values(), ids=EXPANDING.keys())
def test_text_that_normalises_past_the_budget_is_refused_when_it_opens(text: str) -> None:
    settings = Settings()
    assert len(text) <= settings.max_text_chars
    front = PieceMaker(max_spoken_chars=settings.spoken_chars_limit)
    with pytest.raises(TextTooLongError, match="--max-spoken-chars") as error:
        TextFeed.open(text, True, _chunk_limit, front)
    spoken = int(re.findall(r"\d+", str(error.value))[0])  # the message names the whole spoken length
    assert spoken == front.spoken_chars > 3 * len(text)


def test_words_up_to_max_text_chars_stay_within_the_default_budget() -> None:
    settings = Settings()
    for sample in ("The quick brown fox jumps over the lazy dog. ", "Dr. Smith & Mrs. Jones, e.g. at St. Mary's, etc. ",
                   "e.g. ", "etc. "):
        text = (sample * settings.max_text_chars)[: settings.max_text_chars]
        front = PieceMaker(max_spoken_chars=settings.spoken_chars_limit)
        feed = TextFeed.open(text, True, _chunk_limit, front)
        assert front.spoken_chars >= len(text.split()) and feed.spoken


async def test_an_incremental_stream_is_held_to_the_budget_as_it_is_cut() -> None:
    front = PieceMaker(max_spoken_chars=200)
    feed = TextFeed.open("Hello there. ", False, _chunk_limit, front)
    assert isinstance(await feed.next_piece(), Chunk)
    feed.append("It is 1e999999 or 1e999999 or 1e999999. ")
    feed.end()
    with pytest.raises(TextTooLongError, match="--max-spoken-chars"):
        await feed.next_piece()


@pytest.mark.slow
async def test_expanding_text_is_refused_on_websocket_and_http(live_en: LiveServer) -> None:
    async with TTSClient(live_en.ws_url) as client:
        for text in EXPANDING.values():
            with pytest.raises(StreamError) as error:
                await client.synthesize(text, voice="en", nfe_steps=NFE)
            assert error.value.code == "text_too_long" and "--max-spoken-chars" in str(error.value)
        ok = await client.synthesize("Still fine.", voice="en", nfe_steps=NFE)
    assert ok.samples > 0
    async with aiohttp.ClientSession() as session:
        for text in [*EXPANDING.values(), *HUGE_SAY_AS]:  # a say-as of 4 400 digits was an int() crash: 500
            body = {"model": "tts-1", "voice": "en", "input": text, "nfe_steps": NFE}
            async with session.post(live_en.url("/v1/audio/speech"), json=body) as r:
                error = (await r.json())["error"]
                assert r.status == 413 and "--max-spoken-chars" in error["message"], error
    assert live_en.metric("tts_requests_total", transport="http", outcome="text_too_long") == 7
    assert live_en.metric("tts_requests_total", transport="http", outcome="internal") == 0


async def test_an_append_stream_that_normalises_past_the_budget_ends_with_text_too_long(
        start_server: Any, test_settings: Settings) -> None:
    live = await start_server(test_settings.replace(max_spoken_chars=120))
    assert (await upload_voice(live)).status == 201
    async with TTSClient(live.ws_url) as client:
        result = await client.start("", final=False, voice="en", nfe_steps=NFE)
        await client.send({"type": "append", "id": result.id, "text": "Hello there. "})
        await client.send({"type": "append", "id": result.id, "text": "It is 1e999999 or 1e999999. "})
        await client.send({"type": "end", "id": result.id})
        with pytest.raises(StreamError) as error:
            await result.done
        assert error.value.code == "text_too_long" and "limit is 120" in str(error.value)
        ok = await client.synthesize("Still fine.", voice="en", nfe_steps=NFE)
    assert ok.samples > 0


@pytest.mark.slow
def test_a_runpod_job_that_normalises_past_the_budget_is_refused(tiny_cache: Path) -> None:
    worker = Worker.boot(Settings(model="tiny", device="cpu", tiny_cache_dir=str(tiny_cache), voices_dir="",
                                  warmup=False, default_nfe_steps=NFE))

    async def run() -> list[list[dict[str, Any]]]:
        jobs = [[item async for item in worker.stream({"id": f"j{i}", "input": {"text": text}})]
                for i, text in enumerate(EXPANDING.values())]
        await worker.batcher.close()
        return jobs

    for items in asyncio.run(run()):
        assert len(items) == 1 and items[0]["error"].startswith("text_too_long: ") and "--max-spoken-chars" in \
            items[0]["error"]
