"""Which items run next, and how long a newcomer would wait: the latency-aware batch policy.

Batching pays only where the model has idle compute. With Q items queued, the policy picks the batch
sizes that minimise the summed completion time of all of them, by the cost model T(size, frames):

    best(q) = min over n of  q · T(n) + best(q - n)      (every one of the q items waits for this batch)

a small dynamic programme (Q × max size predictions). A flat curve fills batches; a compute-bound one
runs singles until the queue is long enough that throughput is what everyone waits for; in between the
batch grows to the optimum, and it grows with the queue. The items are then chosen like the old policy:
the anchor, first chunks of streams, then the closest lengths, with padding capped (``max_padding``) so
that the equal-length plan stays honest.

Who anchors the batch is decided by deadlines (``batching.playback``): least slack first, slack =
deadline − now − the item's predicted cost alone. A first chunk's deadline is a target: once late, its
slack counts as zero, so late newcomers run in arrival order and a later chunk due now goes before them.
The model runs a batch to its end, so a newcomer's batch goes first only if no later chunk would miss its
deadline behind it and behind the later chunks due before it (``STALL_MARGIN`` of that work to spare); a
batch grows only where no later chunk, in it or queued, would then miss a deadline that it meets
otherwise, nor wait longer for one it misses anyway unless the newcomer rides almost free (``FREE_ROW``);
a later chunk that can wait joins only where it rides along almost free.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from batching.errors import QueueFullError
from batching.protocol import BatchObserver
from batching.queue import Selection, Ticket

ItemT = TypeVar("ItemT")
Predict = Callable[[int, int], float]
"""(batch size, padded frames per item) -> predicted seconds, for one batch key."""


@dataclass(frozen=True)
class Limits:
    max_size: int
    max_frames: int
    """size × longest item."""
    max_padding: float
    """Largest share of a batch's frames that may be padding."""


STALL_MARGIN = 0.25
"""Share of a later chunk's predicted cost kept in hand against its deadline: a prediction off by this
much still does not make its listener wait."""


FREE_ROW = 0.1
"""A later chunk that can wait joins a batch only if it makes the batch at most this much dearer: on a
flat curve (a GPU below saturation) it rides along for free; on a compute-bound one it would only slow
the newcomers beside it, and finishing before its listener needs it gains nothing."""


def slack(ticket: Ticket[Any], now: float, alone: float) -> float:
    """Seconds ``ticket`` may still wait: its deadline − now − ``alone`` (its predicted cost)."""
    return ticket.deadline - now - alone


def urgency(ticket: Ticket[Any], now: float, alone: float) -> float:
    """Order key: the slack, a first chunk's never below zero (its deadline is a target: late newcomers
    keep arrival order, and a later chunk due now goes first)."""
    left = slack(ticket, now, alone)
    return max(left, 0.0) if ticket.first else left


def by_urgency(tickets: Iterable[Ticket[ItemT]], now: float,
               alone: Callable[[Ticket[Any]], float]) -> list[Ticket[ItemT]]:
    """Least slack first; at equal slack later chunks (a stall if late) before first chunks, then age."""
    return sorted(tickets, key=lambda t: (urgency(t, now, alone(t)), t.first, t.seq))


def due_within(order: Sequence[Ticket[ItemT]], now: float, alone: Callable[[Ticket[Any]], float],
               busy: float, work: Callable[[Sequence[Ticket[Any]]], float] | None = None) -> Ticket[ItemT] | None:
    """The most urgent later chunk when some later chunk would miss its deadline (with ``STALL_MARGIN`` of
    the work before it to spare) were the model busy for ``busy`` seconds first; None when every one can
    wait that long. Cumulative, in deadline order: the k-th later chunk waits for ``busy`` and for the
    k − 1 due before it, all run as ``work`` prices them (default: one after another); three later chunks
    due at once may each afford one newcomer's batch, but not three."""
    later = sorted((t for t in order if not t.first), key=lambda t: (t.deadline, t.seq))
    price = work or (lambda tickets: sum(alone(t) for t in tickets))
    for k, ticket in enumerate(later, 1):
        needed = price(later[:k])
        if ticket.deadline - now - (busy + needed) * (1 + STALL_MARGIN) < 0:
            return next(t for t in order if not t.first)
    return None


PLAN_HORIZON = 128
"""Items planned exactly; a longer queue is extrapolated (its first batch is already at the size cap)."""


def plan(queued: int, frames: int, predict: Predict, limits: Limits, fill: bool = False) -> list[int]:
    """Batch sizes, in order, that run ``queued`` items of ``frames`` each soonest on average (``fill``:
    as full as the limits allow, the old policy)."""
    cap = max(1, min(limits.max_size, limits.max_frames // max(frames, 1)))
    if fill:
        return [min(cap, queued - done) for done in range(0, queued, cap)]
    horizon = min(queued, PLAN_HORIZON)
    cost = [predict(n, frames) for n in range(cap + 1)]
    best, first = [0.0] * (horizon + 1), [0] * (horizon + 1)
    for left in range(1, horizon + 1):
        best[left], first[left] = min((left * cost[n] + best[left - n], n) for n in range(1, min(left, cap) + 1))
    sizes, left = [], horizon
    while left > 0:
        sizes.append(first[left])
        left -= first[left]
    return sizes


def expected_queue(queued: int, frames: int, predict: Predict, limits: Limits, arrival_rate: float) -> int:
    """The queue the next batch decides for: what is queued now, plus what will arrive while it drains.
    Planning for the queued items alone is myopic under sustained load (closed-loop clients resubmit as
    soon as they are served): it runs singles that each finish soonest, while the backlog behind them grows.
    One fixed-point step: arrivals during the drain of the queue as it stands, capped at four full batches."""
    if arrival_rate <= 0 or queued == 0:
        return queued
    drain = drain_seconds(queued, frames, predict, limits)
    return queued + min(int(arrival_rate * drain), 4 * limits.max_size)


def compose(tickets: Sequence[Ticket[ItemT]], now: float, predictor: Callable[[Hashable], Predict],
            limits: Limits, arrival_rate: float = 0.0) -> Selection[ItemT]:
    """The next batch from ``tickets`` (queued; all keys), priced by ``predictor(key)``, formed around
    the least-slack item; ``arrival_rate`` (items/s) lets the plan count the work that joins meanwhile."""
    def alone(ticket: Ticket[Any]) -> float:
        return predictor(ticket.key)(1, ticket.cost)

    def work(later: Sequence[Ticket[Any]]) -> float:  # the later chunks as the policy would batch them
        return drain_seconds(len(later), max(t.cost for t in later), predictor(later[0].key), limits)

    order = by_urgency(tickets, now, alone)
    anchor, target = order[0], _target(order[0], len(tickets), predictor, limits, arrival_rate)
    if anchor.first:  # a newcomer's batch runs to its end: first the later chunks that cannot wait that long
        due = due_within(order, now, alone, predictor(anchor.key)(target, anchor.cost), work)
        if due is not None:
            anchor, target = due, _target(due, len(tickets), predictor, limits, arrival_rate)
    predict = predictor(anchor.key)
    busy = predict(target, anchor.cost)
    candidates = [t for t in order if t is not anchor and t.key == anchor.key]
    # Those that cannot wait for the next batch first, then first chunks (sooner is better for them; a
    # later chunk with slack gains nothing), then the closest lengths (least padding).
    candidates.sort(key=lambda t: (urgency(t, now, alone(t)) >= busy, not t.first, abs(t.cost - anchor.cost),
                                   urgency(t, now, alone(t)), t.seq))
    batch, longest, real = [anchor], anchor.cost, anchor.cost
    for ticket in candidates:
        if len(batch) >= target:
            break
        grown, size = max(longest, ticket.cost), len(batch) + 1
        if grown * size > limits.max_frames or 1 - (real + ticket.cost) / (grown * size) > limits.max_padding:
            continue  # does not fit; a closer length further down the list still may
        before, after = predict(size - 1, longest), predict(size, grown)
        if _makes_late([*batch, ticket], now, before, after):
            continue
        rest = [t for t in order if t is not ticket and t not in batch]
        if due_within(rest, now, alone, after, work) is not None and (
                after > before * (1 + FREE_ROW) or due_within(rest, now, alone, before, work) is None):
            continue  # longer than the queued later chunks were promised, or later still for ones already short
        if not ticket.first and after > before * (1 + FREE_ROW) \
                and slack(ticket, now, alone(ticket)) - STALL_MARGIN * alone(ticket) >= after:
            continue  # it can wait for this batch, and it would make it dearer for everyone in it
        batch.append(ticket)
        longest, real = grown, real + ticket.cost
    # Full: the plan wants no more, or a candidate was left out: waiting for arrivals cannot help now.
    full = len(batch) >= target or len(batch) < len(candidates) + 1
    return Selection(batch, full=full, partners_waiting=bool(candidates))


def _target(anchor: Ticket[Any], queued: int, predictor: Callable[[Hashable], Predict], limits: Limits,
            arrival_rate: float) -> int:
    predict = predictor(anchor.key)
    planned = expected_queue(queued, anchor.cost, predict, limits, arrival_rate)
    return plan(planned, anchor.cost, predict, limits)[0]


def _makes_late(batch: Sequence[Ticket[Any]], now: float, before: float, after: float) -> bool:
    """A later chunk in ``batch`` meets its deadline in a batch of ``before`` seconds, not in ``after`` (each
    with ``STALL_MARGIN`` to spare); or misses it anyway and ``after`` is more than a free row dearer (its
    listener's silence would grow)."""
    dearer = after > before * (1 + FREE_ROW)
    return any(not t.first and t.deadline - now < after * (1 + STALL_MARGIN)
               and (dearer or before * (1 + STALL_MARGIN) <= t.deadline - now) for t in batch)


class Misses:
    """How much later than predicted admitted first chunks got their result (actual − predicted, s). The
    prediction prices the queue as it stands; what it cannot see (later chunks of running streams that
    overtake once their slack is spent, padding, a slower minute of the machine) makes it late under
    load. Admission adds a high quantile of the recent misses, so that fewer of the requests it accepts
    miss the budget: a margin learned, like the cost model, from the scheduler's own measurements."""

    def __init__(self, window: int = 64, quantile: float = 0.9, min_samples: int = 8) -> None:
        self._misses: deque[float] = deque(maxlen=window)
        self.quantile = quantile
        self.min_samples = min_samples

    def observe(self, predicted: float, actual: float) -> None:
        self._misses.append(actual - predicted)

    def delivered(self, tickets: Iterable[Ticket[Any]], now: float) -> None:
        """Tickets whose result is out at loop time ``now``: each admitted first chunk's miss."""
        for ticket in tickets:
            if ticket.first and ticket.predicted is not None:
                self.observe(ticket.predicted, now - ticket.enqueued_at)

    def margin(self) -> float:
        """Seconds to add to a prediction before comparing it with the budget (0 until enough samples)."""
        if len(self._misses) < self.min_samples:
            return 0.0
        ordered = sorted(self._misses)
        return max(0.0, ordered[min(len(ordered) - 1, int(self.quantile * len(ordered)))])


PROMISE_GRACE_S = 1.0
"""How long after its retry hint a refused newcomer's place is kept (an HTTP client rounds the hint up to
whole seconds in ``Retry-After``)."""


class Promises:
    """The places of refused newcomers: admission is stateless, so without them a client refused with
    a retry hint comes back to find its slot taken by one that arrived meanwhile (in a closed loop, a
    client that has just been served and asks again at once), and is refused again: served last, or
    never. Each refusal promises its work a place at the hint's time. A newcomer that arrives while no
    promise is due waits behind every promise still to fall due (its predicted first audio counts their
    work, and its own hint falls after theirs); one that arrives when a promise is due is taken for the
    client it was made to (no identity crosses a refusal), waits behind none, and keeps that place.
    Only promises falling due within the admission budget count: refused clients that may never come
    back (a burst that fails over elsewhere) hold the model idle for at most that long. A promise nobody
    comes back for lapses ``PROMISE_GRACE_S`` after it fell due."""

    def __init__(self) -> None:
        self._promised: deque[tuple[float, float]] = deque()
        """(due, seconds of work), in the order of the refusals."""

    def __len__(self) -> int:
        return len(self._promised)

    def ahead(self, now: float, horizon: float, take: bool = True) -> float:
        """Seconds of promised work a newcomer arriving at ``now`` waits behind: the promises falling due
        within ``horizon`` seconds; none if one is due now, and then (``take``) that promise is the
        newcomer's and is used up, admitted or refused again (a refusal makes it a new one)."""
        self._promised = deque(p for p in self._promised if p[0] + PROMISE_GRACE_S >= now)
        due = [p for p in self._promised if p[0] <= now]
        if due:
            if take:
                self._promised.remove(min(due))
            return 0.0
        return sum(seconds for when, seconds in self._promised if when <= now + horizon)

    def refused(self, now: float, retry_after_s: float, seconds: float) -> None:
        self._promised.append((now + retry_after_s, seconds))


def within_budget(backlog: float, predicted: float, budget_s: float, observer: BatchObserver,
                  margin: float = 0.0) -> float:
    """Admission: raise ``QueueFullError`` when the first audio (``predicted`` seconds away, plus the
    learned ``margin`` of late predictions; ``backlog`` of them waiting for work ahead) would miss the
    budget because of that work; an item too slow for the budget on an idle model is still served, since
    refusing it cannot make it sooner. The retry hint is when the backlog will have drained enough.
    Returns the prediction (without the margin)."""
    over = min(predicted + margin - budget_s, backlog)
    if over > 0:
        observer.rejected("over_budget")
        raise QueueFullError(f"first audio predicted in {predicted + margin:.1f} s, over the {budget_s:.1f} s "
                             "budget", retry_after_ms=max(50, int(1000 * over)))
    return predicted


def drain_seconds(queued: int, frames: int, predict: Predict, limits: Limits, fill: bool = False) -> float:
    """Predicted time to run ``queued`` items of about ``frames`` each, batched as the policy would."""
    sizes = plan(queued, frames, predict, limits, fill)
    seconds = sum(predict(n, frames) for n in sizes)
    return seconds * queued / max(1, sum(sizes))  # beyond the horizon: at the planned rate
