"""A listener's clock: when each chunk of a stream is needed, and the silence heard when one is late.

A listener plays a stream from its first audio on, in real time. The audio delivered so far runs out at
``first audio + seconds delivered``; the next chunk is needed then. A chunk submitted before its
predecessor is delivered is needed once the predecessor's audio has played too, and a chunk's duration
is known before it runs (the engine sizes its output from the text), so every queued chunk has a
deadline on the event loop's clock:

- a stream's first chunk: its submission + the first-audio target (a goal, not a promise: ``first``);
- a later chunk: the moment the listener runs out of audio (missing it is a stall the listener hears);
- a later chunk submitted after the listener already ran dry (an incremental stream that waited for its
  text): as a first chunk. The gap was the client's; nothing is owed.

Plain arithmetic, no I/O: the stream front end and the benchmark's streams keep one each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STALL_TOLERANCE_S = 0.02
"""Silence shorter than this is not counted: players buffer a few tens of milliseconds anyway."""


@dataclass
class Playback:
    first_audio_s: float
    """Target from a first chunk's submission to its audio (seconds)."""
    runs_out: float | None = None
    """Loop time at which the audio delivered so far has played out; None before the first audio."""
    _pending: dict[int, float] = field(default_factory=dict)
    """Predicted seconds of each submitted, undelivered chunk, by index, in order."""
    _due: dict[int, float] = field(default_factory=dict)
    """Deadline of each undelivered chunk submitted while the listener had nothing to play."""
    _ready: dict[int, float] = field(default_factory=dict)
    """Loop time at which each undelivered chunk's result came in, where it has (``ready``)."""
    _count: int = 0
    stalls: int = 0
    silence_s: float = 0.0

    def submit(self, now: float, seconds: float) -> tuple[int, float]:
        """A chunk of ``seconds`` of audio submitted at ``now``: (its index, its deadline)."""
        index, self._count = self._count, self._count + 1
        dry = not self._pending and (self.runs_out is None or self.runs_out < now)
        if dry:  # nothing playing and nothing coming: a first chunk, or a resumed stream
            self._due[index] = now + self.first_audio_s
        self._pending[index] = seconds
        return index, self.deadline(index, now)

    def deadline(self, index: int, now: float) -> float:
        """When chunk ``index`` (submitted, undelivered) is needed, as known at ``now``."""
        due = self._due.get(index)
        if due is not None:
            return due
        base = self.runs_out
        for earlier in sorted(self._pending):
            if earlier >= index:
                break
            if base is None:  # the stream's first chunk is not out yet: it plays once ready, not before now
                base = self._ready.get(earlier, max(now, self._due.get(earlier, now)))
            base += self._pending[earlier]
        return now if base is None else base

    def ready(self, index: int, now: float) -> None:
        """Chunk ``index``'s result came in at ``now`` and is on its way to the listener: until it is
        ``delivered``, the deadlines behind it count from now (were it the first, it would otherwise be
        assumed to play at its target)."""
        if index in self._pending:
            self._ready[index] = now

    def delivered(self, index: int, now: float, seconds: float) -> float:
        """Chunk ``index`` reached the listener at ``now`` with ``seconds`` of audio (its actual
        length, silences included). Returns the silence the listener heard before it (counted as a stall
        when it was owed, i.e. the chunk was not a resumption)."""
        self._pending.pop(index, None)
        self._ready.pop(index, None)
        owed = self._due.pop(index, None) is None
        silence = 0.0 if self.runs_out is None else max(0.0, now - self.runs_out)
        start = now if self.runs_out is None else max(now, self.runs_out)
        self.runs_out = start + seconds
        if not owed or silence < STALL_TOLERANCE_S:
            return 0.0
        self.stalls += 1
        self.silence_s += silence
        return silence
