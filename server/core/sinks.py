"""A Stream sink that turns protocol messages into events for non-WebSocket front ends (HTTP, RunPod)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

from server.ws.protocol import FRAME_HEADER


@dataclass(frozen=True)
class AudioEvent:
    seq: int
    pcm: bytes
    """PCM s16le mono."""


@dataclass(frozen=True)
class EndEvent:
    info: dict[str, Any]
    """The audio_end fields: samples, chunks, frames, ttfa_ms, latency_ms, rtf."""


@dataclass(frozen=True)
class ErrorEvent:
    code: str
    message: str
    retry_after_ms: int | None = None


Event = AudioEvent | EndEvent | ErrorEvent


class EventSink:
    """Collects a Stream's output as events; the front end awaits ``next()`` until End or Error."""

    def __init__(self) -> None:
        self._events: asyncio.Queue[Event] = asyncio.Queue()

    async def send_bytes(self, data: bytes) -> None:
        _, seq = FRAME_HEADER.unpack_from(data)
        await self._events.put(AudioEvent(seq, data[FRAME_HEADER.size:]))

    async def send_text(self, data: str) -> None:
        message = orjson.loads(data)
        if message["type"] == "audio_end":
            await self._events.put(EndEvent({k: v for k, v in message.items() if k not in ("type", "id", "stream")}))
        elif message["type"] == "error":
            await self._events.put(ErrorEvent(message["code"], message["message"], message.get("retry_after_ms")))

    async def next(self) -> Event:
        return await self._events.get()
