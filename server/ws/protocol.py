"""WebSocket protocol messages (``docs/protocol.md`` is the reference).

Text frames carry JSON objects with a ``type``; audio travels only in binary frames whose 8-byte header
is the stream number and the frame's sequence number (both uint32 little-endian).
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import orjson

from server.core.errors import ERRORS, ServiceError
from server.core.events import ChunkMarks, StreamEnd

ENCODING = "pcm_s16le"
CHANNELS = 1
FRAME_HEADER = struct.Struct("<II")
MAX_ID_CHARS = 128

ERROR_CODES = frozenset(ERRORS)
"""The closed set of error codes, from the one table (server/core/errors.py; docs/protocol.md)."""


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
    id: str
    text: str
    voice: str = "default"
    speed: float = 1.0
    """Speaking rate multiplier, 0.25-4."""
    nfe_steps: int | None = None
    """Flow-matching steps (1-128); the server default when absent."""
    seed: int | None = None
    """Seed of the first chunk; chunk k uses seed + k. Random when absent (reported in audio_start)."""
    final: bool = True
    """False opens an incremental stream fed by append/flush/end."""
    cfg_strength: float = 2.0
    sway_sampling_coef: float = -1.0
    normalize: bool = True
    """Write numbers, dates, symbols... out as words first; false sends the text as given."""
    lang: str = "auto"
    """Language of the text for normalisation ('en', 'zh'); 'auto' detects it from the script."""
    marks: bool = False
    """Send a ``marks`` message before each stretch of audio (which text it speaks)."""


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
_CLIENT_TYPES: dict[str, type[Any]] = {cls.type: cls for cls in (Synthesize, Append, Flush, End, Cancel)}
# Expected JSON types per field; bool is checked before int because bool is an int in Python.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "text": (str,), "voice": (str,), "speed": (int, float), "nfe_steps": (int,),
    "seed": (int,), "final": (bool,), "cfg_strength": (int, float), "sway_sampling_coef": (int, float),
    "normalize": (bool,), "lang": (str,), "marks": (bool,),
}
_REQUIRED = {"id", "text"}


def parse_client_message(raw: str | bytes) -> ClientMessage:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"message is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MessageError("message must be a JSON object")
    request_id = data.get("id") if isinstance(data.get("id"), str) else None
    kind = data.get("type")
    cls = _CLIENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MessageError(f"unknown message type {kind!r}; expected one of "
                            f"{', '.join(sorted(_CLIENT_TYPES))}", request_id)
    names = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for name in names:
        if name not in data or data[name] is None:
            if name in _REQUIRED:
                raise MessageError(f"{kind} needs the field {name!r}", request_id, kind)
            continue
        value = data[name]
        expected = _FIELD_TYPES[name]
        if (isinstance(value, bool) and bool not in expected) or not isinstance(value, expected):
            type_name = " or ".join(t.__name__ for t in expected)
            raise MessageError(f"field {name!r} must be {type_name}", request_id, kind)
        values[name] = value
    unknown = set(data) - names - {"type"}
    if unknown:
        raise MessageError(f"unknown field(s) for {kind}: {', '.join(sorted(unknown))}", request_id, kind)
    if not values["id"] or len(values["id"]) > MAX_ID_CHARS:
        raise MessageError(f"id must be 1-{MAX_ID_CHARS} characters", None, kind)
    message: ClientMessage = cls(**values)
    return message


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


def audio_frame(stream: int, seq: int, pcm: bytes) -> bytes:
    return FRAME_HEADER.pack(stream, seq) + pcm
