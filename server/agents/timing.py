"""Word and character timings for the agent protocols, from the stream's marks.

A stretch of audio (``ChunkMarks``) speaks one chunk of text; inside it, times are estimated the way
F5-TTS sizes its output, in proportion to UTF-8 bytes (``text.marks``). Cartesia wants words with start
and end seconds; ElevenLabs wants characters with start times and durations in milliseconds, restarting
at zero in every audio message, so that each message's characters tile exactly its own audio.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from server.core.events import ChunkMarks

_TOKEN = re.compile(r"\S+")


def words_of(marks: ChunkMarks, normalized: bool) -> str:
    """The text whose words a client is told: as given (what it sent, so it can match them) unless it
    asked for the normalised text; a continuation chunk has no text as given and uses the spoken one."""
    return marks.spoken if normalized or not marks.text else marks.text


def word_timestamps(marks: ChunkMarks, sample_rate: int, normalized: bool) -> dict[str, list[object]]:
    """Cartesia's ``word_timestamps``: ``{"words", "start", "end"}``, seconds from the context's start.
    Words are the whitespace-separated tokens of the text, punctuation attached, as Cartesia reports them
    (LiveKit matches them against the text it sent)."""
    text = words_of(marks, normalized)
    samples = marks.end_sample - marks.start_sample
    at = [*char_starts(text, samples, marks.start_sample), marks.end_sample]
    tokens = list(_TOKEN.finditer(text))
    return {"words": [t.group() for t in tokens], "start": [round(at[t.start()] / sample_rate, 4) for t in tokens],
            "end": [round(at[t.end()] / sample_rate, 4) for t in tokens]}


def char_starts(text: str, samples: int, start: int) -> list[int]:
    """Each character's first sample, shares in proportion to its UTF-8 bytes (as ``estimate_word_times``)."""
    sizes = [len(c.encode("utf-8")) for c in text]
    total = sum(sizes)
    starts, offset = [], 0
    for size in sizes:
        starts.append(start + (offset * samples + total // 2) // max(total, 1))
        offset += size
    return starts


@dataclass
class CharClock:
    """Characters announced by the marks, waiting for the audio message that starts them."""

    sample_rate: int
    normalized: bool
    _pending: deque[tuple[str, int]] | None = None
    _stretches: int = 0

    def __post_init__(self) -> None:
        self._pending = deque()

    def announce(self, marks: ChunkMarks) -> None:
        assert self._pending is not None
        text = marks.spoken if self.normalized else words_of(marks, normalized=False)
        if marks.chunk is None:
            text = " "  # a pause: a separator between the words around it
        elif self._stretches and text and not text[0].isspace():
            text = " " + text  # chunks were cut at whitespace, which the client's text had
        self._stretches += 1
        samples = marks.end_sample - marks.start_sample
        self._pending.extend(zip(text, char_starts(text, samples, marks.start_sample), strict=True))

    def message(self, first: int, end: int) -> dict[str, Any] | None:
        """The alignment of the audio message holding samples [first, end): its characters, their starts
        and durations in ms from the message's start; the last lasts to the message's end."""
        assert self._pending is not None
        chars: list[str] = []
        starts: list[int] = []
        while self._pending and self._pending[0][1] < end:
            char, start = self._pending.popleft()
            chars.append(char)
            starts.append(max(start, first))
        if not chars:
            return None
        base = self._ms(first)
        at = [self._ms(s) - base for s in starts] + [self._ms(end) - base]
        return {"chars": chars, "charStartTimesMs": at[:-1],
                "charDurationsMs": [b - a for a, b in pairwise(at)]}

    def _ms(self, sample: int) -> int:
        return round(sample * 1000 / self.sample_rate)
