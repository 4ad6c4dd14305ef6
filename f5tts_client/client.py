"""A small asyncio client for the ``/v1/stream`` WebSocket API (used by the CLI, load test and tests).

    async with TTSClient("ws://localhost:8000/v1/stream") as client:
        result = await client.synthesize("Hello there.", seed=7)
        soundfile.write("out.wav", result.audio(), result.sample_rate)

Several requests may run at once on one client (one socket): each gets its own id and result.
With ``marks=True`` the result collects the server's ``marks`` messages; ``srt``/``vtt`` turn them into
captions.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import orjson

HEADER = struct.Struct("<II")


class StreamError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code: str = error.get("code", "")
        self.retry_after_ms: int | None = error.get("retry_after_ms")
        self.error = error


@dataclass
class StreamResult:
    id: str
    started_at: float = field(default_factory=time.perf_counter)
    start: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    pcm: bytearray = field(default_factory=bytearray)
    marks: list[dict[str, Any]] = field(default_factory=list)
    """The ``marks`` messages received, in order (with ``marks=True``)."""
    frames: int = 0
    first_audio_at: float | None = None
    ended_at: float | None = None
    done: asyncio.Future[StreamResult] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def stream(self) -> int:
        return int(self.start["stream"]) if self.start else -1

    @property
    def sample_rate(self) -> int:
        return int(self.start["sample_rate"]) if self.start else 24_000

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2

    @property
    def ttfa_s(self) -> float | None:
        return None if self.first_audio_at is None else self.first_audio_at - self.started_at

    @property
    def latency_s(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at

    def audio(self) -> np.ndarray:
        """float32 in [-1, 1]."""
        return np.frombuffer(bytes(self.pcm), dtype="<i2").astype(np.float32) / 32767.0


class TTSClient:
    def __init__(self, url: str, api_key: str | None = None, session: aiohttp.ClientSession | None = None) -> None:
        self.url = url
        self.api_key = api_key
        self._session = session
        self._own_session = session is None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.results: dict[str, StreamResult] = {}
        self.by_stream: dict[int, StreamResult] = {}
        self.errors: list[dict[str, Any]] = []
        """Errors not tied to a running request (malformed messages, ids already finished...)."""
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self.closed = asyncio.Event()
        self.close_code: int | None = None

    async def __aenter__(self) -> TTSClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.ws = await self._session.ws_connect(self.url, headers=headers, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._own_session and self._session is not None:
            await self._session.close()

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(orjson.dumps(message).decode())

    async def start(self, text: str, *, id: str | None = None, final: bool = True, **params: Any) -> StreamResult:
        """Send ``synthesize`` and return the result object right away (await ``result.done``)."""
        rid = id or f"r{next(self._ids)}"
        result = StreamResult(rid)
        self.results[rid] = result
        await self.send({"type": "synthesize", "id": rid, "text": text, "final": final,
                         **{k: v for k, v in params.items() if v is not None}})
        return result

    async def synthesize(self, text: str, **kwargs: Any) -> StreamResult:
        """Synthesise ``text`` and wait for all of its audio; raises ``StreamError`` on an error message."""
        result = await self.start(text, **kwargs)
        return await result.done

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._on_text(orjson.loads(message.data))
                elif message.type == aiohttp.WSMsgType.BINARY:
                    self._on_audio(message.data)
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            for result in self.results.values():
                if not result.done.done():
                    result.done.set_exception(ConnectionError(f"socket closed ({self.close_code})"))

    def _on_text(self, data: dict[str, Any]) -> None:
        result = self.results.get(data.get("id") or "")
        kind = data.get("type")
        if kind == "error" and (result is None or result.done.done()):
            self.errors.append(data)
        elif result is None:
            return
        elif kind == "audio_start":
            result.start = data
            self.by_stream[int(data["stream"])] = result
        elif kind == "marks":
            result.marks.append(data)
        elif kind == "audio_end":
            result.end = data
            result.ended_at = time.perf_counter()
            if not result.done.done():
                result.done.set_result(result)
        elif kind == "error" and not result.done.done():
            result.ended_at = time.perf_counter()
            result.done.set_exception(StreamError(data))

    def _on_audio(self, data: bytes) -> None:
        stream, seq = HEADER.unpack_from(data)
        result = self.by_stream[stream]
        if seq != result.frames:
            raise AssertionError(f"stream {stream}: frame {seq} arrived, expected {result.frames}")
        if result.first_audio_at is None:
            result.first_audio_at = time.perf_counter()
        result.frames += 1
        result.pcm.extend(data[HEADER.size:])


# -- captions ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cue:
    start: float
    """Seconds from the start of the audio."""
    end: float
    text: str


def cues(marks: list[dict[str, Any]], sample_rate: int = 24_000) -> list[Cue]:
    """One caption per chunk of text as given. A chunk whose text is empty continues the one before (its
    stretch extends that cue); breaks are silence and get no cue."""
    out: list[Cue] = []
    for mark in marks:
        if mark.get("break"):
            continue
        start, end = mark["start_sample"] / sample_rate, mark["end_sample"] / sample_rate
        text = " ".join(str(mark["text"]).split())
        if not text and out:
            out[-1] = Cue(out[-1].start, end, out[-1].text)
        elif text:
            out.append(Cue(start, end, text))
    return out


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{separator}{rest % 1000:03d}"


def srt(marks: list[dict[str, Any]], sample_rate: int = 24_000) -> str:
    """SubRip captions: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``."""
    return "".join(f"{i}\n{_timestamp(c.start, ',')} --> {_timestamp(c.end, ',')}\n{c.text}\n\n"
                   for i, c in enumerate(cues(marks, sample_rate), 1))


def vtt(marks: list[dict[str, Any]], sample_rate: int = 24_000) -> str:
    """WebVTT captions."""
    body = "".join(f"{_timestamp(c.start, '.')} --> {_timestamp(c.end, '.')}\n{c.text}\n\n"
                   for c in cues(marks, sample_rate))
    return "WEBVTT\n\n" + body
