"""Sentence chunking for streaming synthesis.

A long text is cut into chunks the model can voice in one pass. The first chunk is kept short because
it alone decides time-to-first-audio; later chunks are as long as the model's context allows, which
keeps the number of chunk seams (and cross-fades) low. Lengths are counted in UTF-8 bytes, as upstream
does, so CJK text (3 bytes a character) gets proportionally shorter chunks. No character is lost or
duplicated: chunks are slices of the input, stripped of surrounding whitespace.
"""

from __future__ import annotations

import re
from collections import deque

FIRST_CHUNK_BYTES = 60
MIN_CHUNK_BYTES = 20
SHORT_TEXT_BYTES = 10  # upstream speaks texts shorter than this at 0.3x speed: avoid such first chunks

# A sentence ends at western stops followed by whitespace (or the end), at CJK stops (no space needed),
# or at a line break.
SENTENCE_END = re.compile(r"""[.!?…]+["'”’)\]]*(?=\s|$)|[。！？；]+["'”’）」』]*|\n""")
# Inside a long sentence, prefer clause boundaries, then spaces.
_CLAUSE_END = re.compile(r"""[,;:]["'”’)\]]*(?=\s)|[，、；：]""")
_SPACE = re.compile(r"\s+")


def nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _split_after(text: str, pattern: re.Pattern[str]) -> list[str]:
    """Cut ``text`` after every match of ``pattern``; pieces keep their punctuation."""
    pieces, start = [], 0
    for match in pattern.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    pieces.append(text[start:])
    return [p for p in (p.strip() for p in pieces) if p]


def _split_hard(text: str, limit: int) -> list[str]:
    pieces, current = [], ""
    for char in text:
        if current and nbytes(current + char) > limit:
            pieces.append(current)
            current = ""
        current += char
    return [*pieces, current] if current else pieces


def _finer(piece: str, limit: int) -> list[str]:
    """Split a piece that does not fit: clauses, then words, then characters."""
    for splitter in (lambda t: _split_after(t, _CLAUSE_END), lambda t: _SPACE.split(t)):
        parts = [p for p in splitter(piece) if p]
        if len(parts) > 1:
            return parts
    return _split_hard(piece, limit)


def _join(left: str, right: str) -> str:
    if not left:
        return right
    # Upstream's rule: a space after a one-byte (Latin) character, none after CJK.
    return left + (" " if len(left[-1].encode("utf-8")) == 1 else "") + right


def chunk_text(text: str, max_bytes: int, first_max_bytes: int = FIRST_CHUNK_BYTES) -> list[str]:
    """Chunks of at most ``max_bytes``, cut at sentence, then clause, then word boundaries. The first
    chunk stops at ``first_max_bytes`` where a sentence or clause boundary allows (a single longer clause
    stays whole). Whitespace between chunks is dropped; nothing else is."""
    max_bytes = max(max_bytes, MIN_CHUNK_BYTES)
    pending = deque(_split_after(text, SENTENCE_END))
    chunks: list[str] = []
    current = ""
    while pending:
        limit = min(first_max_bytes, max_bytes) if not chunks else max_bytes
        piece = pending.popleft()
        candidate = _join(current, piece)
        if nbytes(candidate) <= limit or (not chunks and 0 < nbytes(current) < SHORT_TEXT_BYTES
                                           and nbytes(candidate) <= max_bytes):
            current = candidate  # (a first chunk of a word or two would be a poor, slow start: grow it)
        elif current:
            chunks.append(current)
            current = ""
            pending.appendleft(piece)
        elif limit < max_bytes:
            # First chunk: shorten it at clause boundaries only. Cutting a sentence between words to
            # save a few characters of time-to-first-audio costs more (a seam, and one more model pass).
            clauses = _split_after(piece, _CLAUSE_END)
            if len(clauses) > 1:
                pending.extendleft(reversed(clauses))
            elif nbytes(piece) <= max_bytes:
                chunks.append(piece)
            else:
                pending.extendleft(reversed(_finer(piece, max_bytes)))
        else:
            pending.extendleft(reversed(_finer(piece, limit)))
    if current:
        chunks.append(current)
    return chunks


def max_chunk_bytes(ref_text: str, ref_seconds: float, speed: float = 1.0, total_seconds: float = 22.0) -> int:
    """Upstream's budget: reference plus chunk should stay within ~22 s of audio at the voice's pace."""
    per_second = nbytes(ref_text) / max(ref_seconds, 1e-3)
    return max(int(per_second * max(total_seconds - ref_seconds, 1.0) * speed), MIN_CHUNK_BYTES)


def take_chunk(text: str, max_bytes: int, first_max_bytes: int = FIRST_CHUNK_BYTES) -> tuple[str, str]:
    """The first chunk ``chunk_text`` would cut from ``text``, and the text after it. Chunks differ from
    their input only in whitespace (dropped between pieces, one space re-inserted), so the rest begins
    after as many non-space characters as the chunk holds."""
    chunk = chunk_text(text, max_bytes, first_max_bytes)[0]
    needed = sum(1 for c in chunk if not c.isspace())
    for index, char in enumerate(text):
        if needed == 0:
            return chunk, text[index:]
        if not char.isspace():
            needed -= 1
    return chunk, ""
