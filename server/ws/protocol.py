"""WebSocket protocol messages (``docs/protocol.md`` is the reference).

Text frames carry JSON objects with a ``type``; audio travels only in binary frames whose 8-byte header
is the stream number and the frame's sequence number (both uint32 little-endian).
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import orjson

from server.core.errors import STREAM_CODES, ServiceError
from server.core.events import ChunkMarks, StreamEnd
from server.core.request import STREAM_ID, StreamRequest, parse, typed, unknown_fields, wire_names

ENCODING = "pcm_s16le"
CHANNELS = 1
FRAME_HEADER = struct.Struct("<II")

ERROR_CODES = STREAM_CODES
"""The codes an ``error`` message carries, from the one table (server/core/errors.py; docs/protocol.md)."""

SYNTHESIZE = wire_names()
"""``synthesize`` carries every request field under its own name (server/core/request.py)."""


class MessageError(ServiceError):
    """A client message refused while parsing (``bad_request``); ``message_type`` is its ``type`` where known, so a
    malformed ``synthesize`` is told apart from a malformed ``append`` to an open stream of the same id."""

    def __init__(self, message: str, request_id: str | None = None, kind: str | None = None) -> None:
        super().__init__("bad_request", message, request_id)
        self.message_type = kind


# -- client -> server ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Synthesize:
    type: ClassVar[str] = "synthesize"
    request: StreamRequest

    @property
    def id(self) -> str:
        return self.request.id


@dataclass(frozen=True)
class Append:
    type: ClassVar[str] = "append"
    id: str
    text: str


@dataclass(frozen=True)
class Flush:
    type: ClassVar[str] = "flush"
    id: str


@dataclass(frozen=True)
class End:
    type: ClassVar[str] = "end"
    id: str


@dataclass(frozen=True)
class Cancel:
    type: ClassVar[str] = "cancel"
    id: str


ClientMessage = Synthesize | Append | Flush | End | Cancel
_STREAM_MESSAGES: dict[str, type[Any]] = {cls.type: cls for cls in (Append, Flush, End, Cancel)}
_TYPES = sorted([Synthesize.type, *_STREAM_MESSAGES])


def parse_client_message(raw: str | bytes) -> ClientMessage:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"message is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MessageError("message must be a JSON object")
    given_id = data.get("id")
    request_id = given_id if isinstance(given_id, str) and STREAM_ID.fullmatch(given_id) else None
    kind = data.get("type")
    if kind != Synthesize.type and (not isinstance(kind, str) or kind not in _STREAM_MESSAGES):
        raise MessageError(f"unknown message type {kind!r}; expected one of {', '.join(_TYPES)}", request_id)
    cls = Synthesize if kind == Synthesize.type else _STREAM_MESSAGES[kind]
    names = SYNTHESIZE if cls is Synthesize else {f.name: f.name for f in fields(cls)}
    message: ClientMessage
    try:
        unknown = unknown_fields(data, names, own={"type"})
        if unknown:
            raise ServiceError("bad_request", f"unknown field(s) for {kind}: {', '.join(unknown)}")
        if cls is Synthesize:
            message = Synthesize(parse(data, SYNTHESIZE, label=_label))
        else:
            message = cls(**{name: typed(data, name, name, _label) for name in names})
    except ServiceError as exc:
        raise MessageError(str(exc), request_id, kind) from None
    if not STREAM_ID.fullmatch(message.id):
        raise MessageError("id must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
                           None, kind)
    return message


def _label(name: str) -> str:
    return f"field {name!r}"


# -- server -> client ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioStart:
    id: str
    stream: int
    """Stream number; binary frames of this request carry it in their header."""
    sample_rate: int
    seed: int
    encoding: str = ENCODING
    channels: int = CHANNELS

    def to_json(self) -> str:
        return orjson.dumps({"type": "audio_start", **asdict(self)}).decode()


@dataclass(frozen=True)
class AudioEnd:
    id: str
    stream: int
    end: StreamEnd
    """The figures: samples (= PCM bytes received / 2), chunks, frames, ttfa_ms, latency_ms, rtf."""

    def to_json(self) -> str:
        return orjson.dumps({"type": "audio_end", "id": self.id, "stream": self.stream, **self.end.figures()}).decode()


@dataclass(frozen=True)
class Marks:
    id: str
    stream: int
    marks: ChunkMarks
    """Sample offsets count from the stream's first sample; words are estimates (docs/protocol.md)."""

    def to_json(self) -> str:
        return orjson.dumps({"type": "marks", "id": self.id, "stream": self.stream, **self.marks.to_json()}).decode()


@dataclass(frozen=True)
class ErrorMessage:
    code: str
    message: str
    id: str | None = None
    retry_after_ms: int | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {"type": "error", "id": self.id, "code": self.code, "message": self.message}
        if self.retry_after_ms is not None:
            data["retry_after_ms"] = self.retry_after_ms
        return orjson.dumps(data).decode()

    @classmethod
    def from_error(cls, error: ServiceError) -> ErrorMessage:
        return cls(error.code, str(error), error.request_id, error.retry_after_ms)
