"""What a stream voices, made from text: a ``Chunk`` of speech for one model pass, or a ``Silence``.

A ``PieceMaker`` holds one request's text rules (normalisation switch, language, break caps) and turns
text as given into pieces: normalised (``text.normalize``), SSML and pause markers honoured
(``text.ssml``), cut to what the model takes in one pass. It also keeps the request's budgets: the
silence all its breaks may add, and the spoken characters all its chunks may hold. Normalisation
multiplies text (a long number read out is a word a digit), so the size a request was admitted
at does not bound what it costs; the spoken budget does.

Only text and silence leave this module: the batcher never sees markup, and silence never reaches it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from engine.params import SPEED_RANGE
from text.chunking import FIRST_CHUNK_BYTES, chunk_text, nbytes
from text.errors import TextTooLongError
from text.normalize import NormalizeOptions, normalize
from text.ssml import Break, Segment, Speech, is_ssml, parse_plain, parse_ssml_document

log = logging.getLogger(__name__)

MAX_BREAK_S = 10.0
"""One break (consecutive ones merged) is capped here: a pause, not a way to stream silence."""
MAX_SILENCE_S = 60.0
"""All breaks of one stream together: without it a text of many '[pause 10s]x' would be hours of zeros."""
_MARKER = re.compile(r"\[pause|<break", re.IGNORECASE)  # cheap test before the real parse

ChunkLimit = Callable[[float], int]
"""Longest chunk in UTF-8 bytes at a given rate (prosody rate multiplies the request's speed)."""


@dataclass(frozen=True)
class Chunk:
    spoken: str
    """What the model is given: normalised, markup removed."""
    text: str
    """The same stretch as the client gave it. Empty: it continues the previous chunk's text (one
    stretch of given text spoken as several chunks: a long SSML segment, or an over-long normalised one)."""
    rate: float = 1.0
    """Multiplies the request's speed (SSML prosody rate)."""


@dataclass(frozen=True)
class Silence:
    seconds: float
    """Exact silence: zeros in the PCM stream, no model pass."""


Piece = Chunk | Silence


def chunk_speed(speed: float, rate: float) -> float:
    """The speed of a chunk: the request's speed times its rate, kept within what the engine accepts."""
    return min(max(speed * rate, SPEED_RANGE[0]), SPEED_RANGE[1])


@dataclass
class PieceMaker:
    """One request's text rules and budgets; turns its text into pieces."""

    normalize: bool = True
    lang: str = "auto"
    max_break_s: float = MAX_BREAK_S
    silence_left_s: float = MAX_SILENCE_S
    max_spoken_chars: int | None = None
    """Characters all chunks of the request may hold once normalised; None: no limit."""
    first_chunk_bytes: int | None = FIRST_CHUNK_BYTES
    """The short first chunk's budget (time to first audio grows with it); None: the first chunk is as
    long as any other (a stream whose first audio is late anyway, ``batching.Entry.on_time``)."""
    spoken_chars: int = 0
    """Characters in the chunks made so far."""

    @property
    def options(self) -> NormalizeOptions:
        return NormalizeOptions() if self.normalize else NormalizeOptions.disabled()

    def plain(self, text: str, limit: ChunkLimit, first: bool = False, check: bool = True) -> list[Piece]:
        """One chunk of plain text, cut from the request as given: normalised, pause markers honoured.
        Cutting before normalising keeps each chunk's text as given exact, and rules see whole sentences.
        ``first``: the stream's first chunk, held to the first-chunk budget again after normalising
        ("$3.50 at 10:30" grows threefold), since time to first audio grows with it. ``check=False``
        leaves the spoken budget to a later ``check_budget`` (to name the whole text's length)."""
        if not _MARKER.search(text):
            spoken = normalize(text, self.lang, self.options) if self.normalize else text
            pieces = self._split(Speech(spoken, text), limit, self.first_chunk_bytes if first else None)
        else:
            parsed = parse_plain(text, self.max_break_s, self.lang, self.options)
            self._warn(parsed.warnings)
            pieces = self._pieces(parsed.segments, limit)
        if check:
            self.check_budget()
        return pieces

    def document(self, text: str, limit: ChunkLimit) -> list[Piece]:
        """A whole SSML document (raises ``SSMLError``, a bad_request); its speech cut into chunks."""
        parsed = parse_ssml_document(text, self.max_break_s, self.lang, self.options)
        self._warn(parsed.warnings)
        pieces = self._pieces(parsed.segments, limit, first_bytes=self.first_chunk_bytes)
        self.check_budget()
        return pieces

    def check_budget(self) -> None:
        """Raise ``TextTooLongError`` (text_too_long) once the chunks made hold more spoken characters
        than the request may."""
        if self.max_spoken_chars is not None and self.spoken_chars > self.max_spoken_chars:
            raise TextTooLongError(
                f"text is {self.spoken_chars} characters once numbers, dates and symbols are written out; "
                f"the limit is {self.max_spoken_chars} (--max-spoken-chars)")

    def _pieces(self, segments: list[Segment], limit: ChunkLimit, first_bytes: int | None = None) -> list[Piece]:
        pieces: list[Piece] = []
        for segment in segments:
            if isinstance(segment, Break):
                pieces.extend(self._silence(segment.seconds))
            else:
                first = first_bytes if not any(isinstance(p, Chunk) for p in pieces) else None
                pieces.extend(self._split(segment, limit, first))
        return pieces

    def _split(self, speech: Speech, limit: ChunkLimit, first_bytes: int | None = None) -> list[Piece]:
        """A speech segment as chunks the model can take; only the first carries the text as given."""
        max_bytes = limit(speech.rate)
        if not speech.spoken.strip():
            return []
        if nbytes(speech.spoken) <= min(max_bytes, first_bytes or max_bytes):
            parts = [speech.spoken]
        else:
            parts = chunk_text(speech.spoken, max_bytes, first_max_bytes=first_bytes or max_bytes)
        self.spoken_chars += sum(len(part) for part in parts)
        return [Chunk(part, speech.text if i == 0 else "", speech.rate) for i, part in enumerate(parts)]

    def _silence(self, seconds: float) -> list[Piece]:
        allowed = min(seconds, self.silence_left_s)
        if allowed < seconds:
            log.warning("text front: breaks over %g s in one stream are cut", MAX_SILENCE_S)
        self.silence_left_s -= allowed
        return [Silence(allowed)] if allowed > 0 else []

    @staticmethod
    def _warn(warnings: list[str]) -> None:
        for warning in warnings:
            log.warning("ssml: %s", warning)


__all__ = ["Chunk", "ChunkLimit", "Piece", "PieceMaker", "Silence", "chunk_speed", "is_ssml"]
