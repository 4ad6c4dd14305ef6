"""The text of one stream as it arrives, handed out as pieces (``server.core.pieces``) to voice.

A complete request (``final: true``) has all its text at once: it is cut into chunks and made into
pieces when the stream opens, so a text that normalises past the spoken budget, or an SSML document
that does not parse, is refused before any audio. An incremental one grows with ``append``; text
becomes available at each sentence boundary, on ``flush``, and on ``end``, and is cut and made into
pieces when the synthesiser asks for the next one, from everything complete by then: a fast text source
gets few long chunks and a slow one gets audio after its first sentence. Its spoken budget is checked
as each piece is made, so going over it ends the stream with text_too_long.

``next`` hands out chunks of text as given; ``next_piece`` what the stream voices.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from server.core.pieces import Chunk, ChunkLimit, Piece, PieceMaker, Silence, is_ssml
from text.chunking import SENTENCE_END, take_chunk


class TextFeed:
    def __init__(self, max_chunk_bytes: int, front: PieceMaker | None = None,
                 limit: ChunkLimit | None = None) -> None:
        self.max_chunk_bytes = max_chunk_bytes
        self.front = front or PieceMaker()
        self.limit: ChunkLimit = limit or (lambda rate: max_chunk_bytes)
        self._pieces: deque[Piece] = deque()
        self.total_chars = 0
        self.chunks_given = 0
        self._ready = ""  # text up to the last sentence boundary (or flush)
        self._partial = ""  # text after it
        self._ended = False
        self._changed = asyncio.Event()
        self.first_text_at: float | None = None
        """perf_counter() when the first non-blank text arrived."""

    @classmethod
    def complete(cls, text: str, max_chunk_bytes: int) -> TextFeed:
        feed = cls(max_chunk_bytes)
        feed.append(text)
        feed.end()
        return feed

    @classmethod
    def open(cls, text: str, final: bool, limit: ChunkLimit, front: PieceMaker) -> TextFeed:
        """The feed of a request. Complete: all its pieces made now (``SSMLError`` on a bad document,
        ``TextTooLongError`` past the spoken budget). Incremental: its text so far, made into pieces
        chunk by chunk as the stream asks."""
        feed = cls(limit(1.0), front=front, limit=limit)
        if final and is_ssml(text):
            feed._pieces.extend(front.document(text, limit))
            feed.end()
            return feed
        if text:
            feed.append(text)
        if final:
            feed.end()
            while (chunk := feed._cut()) is not None:  # the same chunks ``next_piece`` would cut, at once
                feed._pieces.extend(front.plain(chunk, limit, first=feed.chunks_given == 1, check=False))
            front.check_budget()  # after all of them: the message names the whole text's spoken length
        return feed

    @property
    def spoken(self) -> str:
        """What a complete request says, to refuse one with nothing to say before it starts."""
        if self._pieces:
            return " ".join(p.spoken for p in self._pieces if isinstance(p, Chunk))
        return self._ready

    @property
    def has_silence(self) -> bool:
        return any(isinstance(p, Silence) for p in self._pieces)

    @property
    def ended(self) -> bool:
        return self._ended

    def append(self, text: str) -> None:
        if self._ended:
            raise RuntimeError("append after end")
        self.total_chars += len(text)
        if self.first_text_at is None and text.strip():
            self.first_text_at = time.perf_counter()
        pending = self._partial + text
        cut = 0
        for match in SENTENCE_END.finditer(pending):
            if match.end() < len(pending) or match.group().endswith("\n") or not match.group()[-1].isascii():
                cut = match.end()  # a western stop at the very end may still be "3." of "3.5": wait
        self._ready += pending[:cut]
        self._partial = pending[cut:]
        self._changed.set()

    def flush(self) -> None:
        self._ready += self._partial
        self._partial = ""
        self._changed.set()

    def end(self) -> None:
        self.flush()
        self._ended = True

    async def next(self) -> str | None:
        """The next chunk, waiting for text if needed; ``None`` once ended and exhausted."""
        while True:
            if (chunk := self._cut()) is not None:
                return chunk
            if self._ended:
                return None
            self._changed.clear()
            await self._changed.wait()

    async def next_piece(self) -> Piece | None:
        """The next thing to voice (a chunk of speech or a silence); ``None`` once ended and exhausted."""
        while not self._pieces:
            text = await self.next()
            if text is None:
                return None
            self._pieces.extend(self.front.plain(text, self.limit, first=self.chunks_given == 1))
        return self._pieces.popleft()

    def _cut(self) -> str | None:
        if not self._ready.strip():
            return None
        first = self.front.first_chunk_bytes if self.chunks_given == 0 else None  # the front's budget for it
        limit = first or self.max_chunk_bytes
        chunk, self._ready = take_chunk(self._ready, self.max_chunk_bytes, first_max_bytes=limit)
        self.chunks_given += 1
        return chunk
