"""The request-mode planner: the cost model, the batch policy and admission control, behind one small object.

The batcher owns queue, tickets and the worker thread; it asks the planner three questions: which
queued items run next (``select``), how long a newcomer would wait for its first audio
(``predict_first_audio``, ``admit``), and it reports every batch it ran (``started``, ``finished``) so the
cost model keeps learning. Synchronous and I/O-free, like the queue: easy to test with a scripted curve.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, TypeVar

from batching import policy
from batching.config import BatcherConfig
from batching.cost import CostModel, CostSample
from batching.protocol import BatchObserver, CostObserver
from batching.queue import PendingQueue, Selection, Ticket

log = logging.getLogger("batching.batcher")
ItemT = TypeVar("ItemT")


class RequestPlanner:
    def __init__(self, config: BatcherConfig, observer: BatchObserver, costs: CostModel | None = None) -> None:
        self.config = config
        self.observer = observer
        self.costs = costs or CostModel(config.default_batch_seconds)
        self.limits = policy.Limits(config.max_batch_size, config.max_batch_frames, config.max_padding)
        self._running_until: float | None = None
        """Loop time the running batch is predicted to end; None while the model is idle."""
        self._arrivals: deque[float] = deque(maxlen=64)
        """Loop times of recent submissions, for the arrival rate the policy plans with."""
        self.misses = policy.Misses()
        """How late admitted first chunks were against their prediction: admission's margin."""

    # -- the cost model -------------------------------------------------------------------------------

    def predictor(self, key: Hashable) -> policy.Predict:
        return lambda size, frames: self.costs.predict(key, size, frames)

    def seed(self, samples: Iterable[CostSample | tuple[int, int, float]]) -> dict[int, float]:
        self.costs.seed(samples)
        table = self.export()
        log.info("cost model", extra={"coef": [f"{c:.3g}" for c in self.costs.seed_curve.coef],
                                      "frames": self.costs.typical_frames, "predicted_s": table})
        return table

    def export(self) -> dict[int, float]:
        """Predicted seconds per batch size (powers of two and the largest), to the observer's gauge."""
        top = self.config.max_batch_size
        table = self.costs.table(sorted({s for s in (1, 2, 4, 8, 16, 32, 64) if s < top} | {top}))
        if isinstance(self.observer, CostObserver):
            self.observer.predicted_batch_seconds(table)
        return table

    def started(self, batch: Sequence[Ticket[Any]], now: float) -> None:
        longest = max(t.cost for t in batch)
        self._running_until = now + self.costs.predict(batch[0].key, len(batch), longest)

    def finished(self, batch: Sequence[Ticket[Any]], seconds: float, clean: bool) -> float:
        """Learn from a batch (``clean``: every item ran once, no retried halves). Returns the prediction
        it had, for the batch log line."""
        self._running_until = None
        longest = max(t.cost for t in batch)
        predicted = self.costs.predict(batch[0].key, len(batch), longest)
        if clean:
            self.costs.observe(batch[0].key, len(batch), longest, seconds)
            self.export()
        return predicted

    # -- policy ---------------------------------------------------------------------------------------

    def arrived(self, now: float) -> None:
        self._arrivals.append(now)

    def arrival_rate(self, now: float, queued: int, window_s: float = 10.0) -> float:
        """Items per second that arrived over the last ``window_s`` and have already left the queue: the
        sustained rate of work. Items still queued are planned for as they are, and a one-off burst (all
        still queued) must not read as a rate of thousands per second."""
        recent = sum(1 for t in self._arrivals if now - t <= window_s)
        return max(0, recent - queued) / window_s

    def select(self, queue: PendingQueue[ItemT], now: float) -> Selection[ItemT]:
        if self.config.policy == "fill" or not queue:
            return queue.select(self.config.max_batch_size, self.config.max_batch_frames)
        return policy.compose(list(queue), now, self.predictor, self.limits, self.arrival_rate(now, len(queue)))

    # -- admission ------------------------------------------------------------------------------------

    def predict_first_audio(self, queue: PendingQueue[Any], cost: int, key: Hashable, now: float) -> float:
        """The running batch's rest, the queued work that runs before a newcomer (``ahead``) drained as the
        policy batches it, then the item itself."""
        return self.backlog(queue, cost, key, now, ahead(queue, now, self.config.first_audio_s)) \
            + self.costs.predict(key, 1, cost)

    def admit(self, queue: PendingQueue[Any], cost: int, key: Hashable, now: float, promised: float = 0.0) -> float:
        """Refuse (``QueueFullError``) a first chunk whose first audio would miss the budget because of
        the work ahead of it (``policy.within_budget``); ``promised``: seconds of refused newcomers' work
        it waits behind (``policy.Promises``)."""
        backlog = self.backlog(queue, cost, key, now, ahead(queue, now, self.config.first_audio_s)) + promised
        return policy.within_budget(backlog, backlog + self.costs.predict(key, 1, cost),
                                    self.config.admission_ttfa_s, self.observer, self.misses.margin())

    def backlog_ahead(self, queue: PendingQueue[Any], now: float, incoming: int = 0) -> float:
        """``backlog`` for a newcomer of no particular size: the running batch's rest and the work ahead
        of it, priced by the work's own keys and lengths, with ``incoming`` newcomers not queued yet of
        the typical length (``CostModel.typical_frames``) among it."""
        tickets = ahead(queue, now, self.config.first_audio_s)
        if not tickets and not incoming:
            return self._running_rest(now)
        typical = self.costs.typical_frames or (tickets[0].cost if tickets else 1)
        key = tickets[0].key if tickets else self.costs.last_key
        return self.backlog(queue, typical, key, now, tickets, incoming)

    def _running_rest(self, now: float) -> float:
        return max(0.0, self._running_until - now) if self._running_until is not None else 0.0

    def backlog(self, queue: PendingQueue[Any], cost: int, key: Hashable, now: float,
                tickets: Sequence[Ticket[Any]] | None = None, extra: int = 0) -> float:
        """Predicted seconds until the model is free of everything running, ``tickets`` (default: all
        queued) and ``extra`` items of ``cost`` frames."""
        predict = self.predictor(key)
        running = self._running_rest(now)
        tickets = list(queue) if tickets is None else tickets
        queued = len(tickets) + extra
        frames = (sum(t.cost for t in tickets) + extra * cost) // queued if queued else cost
        return running + policy.drain_seconds(queued, frames, predict, self.limits,
                                              fill=self.config.policy == "fill")


def ahead(queue: Iterable[Ticket[Any]], now: float, first_audio_s: float) -> list[Ticket[Any]]:
    """The queued items a newcomer submitted now would wait for under the deadline order: every first
    chunk already queued (late newcomers keep arrival order) and the later chunks due before it."""
    due = now + first_audio_s
    return [t for t in queue if t.first or t.deadline <= due]
