"""Running a batch on the model so that only a failing item fails (worker thread; no asyncio here)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from batching.errors import BatcherError
from batching.protocol import BatchModel
from batching.queue import Ticket

log = logging.getLogger("batching.batcher")

ItemT = TypeVar("ItemT")
Outcome = tuple[bool, Any]
"""(ok, output or exception)"""


def run_split(model: BatchModel[ItemT, Any], tickets: Sequence[Ticket[ItemT]]) -> list[Outcome]:
    """One outcome per ticket, in order. Tickets cancelled since selection are skipped (their outcome is
    never delivered, and the model never sees them)."""
    live = [t for t in tickets if not t.future.done()]
    results = dict(zip(map(id, live), _attempt(model, live), strict=True))
    skipped: Outcome = (False, BatcherError("cancelled before it ran"))
    return [results.get(id(t), skipped) for t in tickets]


def _attempt(model: BatchModel[ItemT, Any], tickets: Sequence[Ticket[ItemT]]) -> list[Outcome]:
    """On failure, split and retry halves: a poison item fails alone after at most 2n-1 model calls, and
    a batch too big for memory still completes in smaller pieces."""
    if not tickets:
        return []
    try:
        outputs = model.synthesize([t.item for t in tickets])
        if len(outputs) != len(tickets):
            raise BatcherError(f"model returned {len(outputs)} outputs for {len(tickets)} items")
        return [(True, out) for out in outputs]
    except Exception as exc:
        if len(tickets) == 1:
            return [(False, exc)]
        log.warning("batch of %d failed (%s); retrying halves", len(tickets), exc)
        mid = len(tickets) // 2
        return _attempt(model, tickets[:mid]) + _attempt(model, tickets[mid:])
