"""Word times inside a chunk, estimated the way F5-TTS sizes its output: proportionally to UTF-8 bytes.

F5-TTS decides a chunk's duration from its byte count (reference frames per reference byte, times the
chunk's bytes) and has no alignment to report, so where a word lies inside the chunk's audio is an
estimate: each byte of the chunk's spoken text gets an equal share of its samples, and a word spans its
bytes' shares. Chunk boundaries themselves are exact (the front end counts the samples it sends); only
the times inside a chunk are estimates, and every ``WordTime`` says so (``estimate=True``).

Words are runs of letters and digits with their attached apostrophes and hyphens; each Han character,
kana or hangul syllable is a word of its own (no spaces to split on, and highlighting per character is
what readers of those scripts expect).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["WordTime", "estimate_word_times"]

_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
                   r"|[^\W_]+(?:['’\-][^\W_]+)*")


@dataclass(frozen=True)
class WordTime:
    word: str
    char_start: int  # offset of the word in the text it was found in (characters, half-open)
    char_end: int
    start: int  # first sample of the word in the stream (24 kHz mono for F5-TTS)
    end: int  # one past its last sample
    estimate: bool = True  # byte-proportional, not aligned

    def to_json(self) -> dict[str, object]:
        return {"word": self.word, "char_start": self.char_start, "char_end": self.char_end,
                "start": self.start, "end": self.end, "estimate": self.estimate}


def estimate_word_times(text: str, samples: int, start_sample: int = 0) -> list[WordTime]:
    """Words of ``text`` (one chunk's spoken text, or its text as given) with estimated sample spans
    inside ``samples`` samples that begin at ``start_sample`` in the stream. Spans are ordered, do not overlap, and lie
    within [start_sample, start_sample + samples]."""
    encoded_len = [len(c.encode("utf-8")) for c in text]
    offsets = [0]
    for size in encoded_len:
        offsets.append(offsets[-1] + size)
    total = offsets[-1]
    if total == 0 or samples <= 0:
        return []

    def at(char: int) -> int:
        # Integer rounding of one common scale keeps spans ordered and the last byte on the last sample.
        return start_sample + (offsets[char] * samples + total // 2) // total

    return [WordTime(m.group(), m.start(), m.end(), at(m.start()), at(m.end())) for m in _WORD.finditer(text)]
