"""The pending queue and the batch selection policy (synchronous, no I/O: easy to reason about)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

ItemT = TypeVar("ItemT")


@dataclass(eq=False)
class Ticket(Generic[ItemT]):
    """One queued item and the future its result is delivered to."""

    item: ItemT
    cost: int
    """Padded length of the item (frames)."""
    key: Hashable
    first: bool
    """The first chunk of a stream: its deadline is a first-audio target (sooner is better; missing it
    is late, not a stall); it may be refused at the door and times out in the queue. A later chunk
    (``first`` false) belongs to a stream already playing: never refused, never timed out, and missing
    its deadline is a stall."""
    seq: int
    enqueued_at: float
    """Event-loop time (s) at submission."""
    deadline: float
    """Event-loop time (s) by which the item's result is needed (``batching.playback``). Its owner may
    move it while the item is queued or running (a predecessor delivered); the schedulers read it anew
    at every decision."""
    expires: float | None
    """Event-loop time (s) after which a queued first chunk fails with ``timeout``; None: never."""
    future: asyncio.Future[Any]
    request_id: str | None = None
    predicted: float | None = None
    """Admission's predicted seconds from submission to this (first) chunk's result, to learn its misses."""
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    release: Callable[[Ticket[ItemT]], object] | None = field(default=None, repr=False)
    started: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    """Set when the item is taken into a batch (or settled without running)."""
    """Set by the batcher: takes the ticket out of the queue synchronously."""

    def cancel(self) -> bool:
        """Cancel the item: removed from the queue at once, its result dropped if already running."""
        cancelled = self.future.cancel()
        if self.release is not None:  # done callbacks run a loop iteration later; free the slot now
            self.release(self)
        return cancelled


@dataclass(frozen=True)
class Selection(Generic[ItemT]):
    tickets: list[Ticket[ItemT]]
    full: bool
    """No further compatible item could be added (size or frame budget reached)."""
    partners_waiting: bool
    """Items compatible with the oldest one were queued (so waiting briefly for more can pay off)."""


class PendingQueue(Generic[ItemT]):
    """Queued tickets in arrival order, with running totals."""

    def __init__(self) -> None:
        self._tickets: dict[int, Ticket[ItemT]] = {}
        self.frames = 0

    def __len__(self) -> int:
        return len(self._tickets)

    def __iter__(self) -> Iterator[Ticket[ItemT]]:
        return iter(list(self._tickets.values()))

    def push(self, ticket: Ticket[ItemT]) -> None:
        self._tickets[ticket.seq] = ticket
        self.frames += ticket.cost

    def remove(self, ticket: Ticket[ItemT]) -> bool:
        if self._tickets.pop(ticket.seq, None) is None:
            return False
        self.frames -= ticket.cost
        return True

    def oldest(self) -> Ticket[ItemT] | None:
        return next(iter(self._tickets.values()), None)

    def select(self, max_size: int, max_frames: int) -> Selection[ItemT]:
        """The next batch: the oldest item always; then compatible items, first chunks of streams before
        later chunks, closest in length to the oldest (least padding), while size × longest fits."""
        anchor = self.oldest()
        if anchor is None:
            return Selection([], full=False, partners_waiting=False)
        candidates = [t for t in self._tickets.values() if t is not anchor and t.key == anchor.key]
        candidates.sort(key=lambda t: (not t.first, abs(t.cost - anchor.cost), t.seq))
        batch, longest, full = [anchor], anchor.cost, False
        for ticket in candidates:
            if len(batch) >= max_size:
                full = True
                break
            grown = max(longest, ticket.cost)
            if grown * (len(batch) + 1) > max_frames:
                full = True  # this one does not fit; smaller ones later in the list still may
                continue
            batch.append(ticket)
            longest = grown
        full = full or len(batch) >= max_size or longest * (len(batch) + 1) > max_frames
        return Selection(batch, full=full, partners_waiting=bool(candidates))
