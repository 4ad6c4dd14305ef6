"""The asyncio micro-batcher: concurrent requests in, one model batch at a time out.

    while True:
        batch = await self._next_batch()   # on the event loop, while nothing else runs on the model
        await self._execute(batch)         # in the single worker thread

Items are submitted with ``submit`` (non-blocking; raises ``QueueFullError`` at once when full) and
their results awaited on the returned ticket's future. Cancelling that future (or the task awaiting it)
removes the item from the queue; an item already running has its result dropped. A failing batch is
split in halves and retried so that only the failing item fails. Every future is settled exactly once.

What runs next is the policy's choice (``batching.policy``): with the ``latency`` policy, the batch forms
around the queued item with the least slack before its deadline, and an item joins it only when the cost
model (``batching.cost``, seeded at startup and refined from every batch) predicts that this makes the
queued items finish sooner. Overload is refused at the door: only a stream's first chunk is ever refused
(queue full; with ``admission`` on, when its first audio is predicted to miss the budget) or timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from batching.base import BatcherBase
from batching.config import BatcherConfig
from batching.cost import CostSample
from batching.errors import BatcherClosedError, BatcherError, QueueFullError
from batching.protocol import BatchModel, BatchObserver
from batching.queue import Selection, Ticket
from batching.request_planner import RequestPlanner
from batching.splitting import Outcome, run_split

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
OutT = TypeVar("OutT")


class MicroBatcher(BatcherBase[ItemT, OutT]):
    name = "batcher"
    thread_name = "tts-batch"

    def __init__(self, model: BatchModel[ItemT, OutT], config: BatcherConfig | None = None,
                 observer: BatchObserver | None = None, executor: ThreadPoolExecutor | None = None,
                 owns_executor: bool | None = None) -> None:
        """``executor``: the model's one thread (the server's, or one shared by batchers on the same model
        in benchmarks: one model thread keeps one warm kernel cache); default: this batcher's own."""
        super().__init__(config or BatcherConfig(), observer, executor, owns_executor)
        self.model = model
        self._running: list[Ticket[ItemT]] = []
        self.planner = RequestPlanner(self.config, self.observer)
        self.costs = self.planner.costs

    @property
    def running(self) -> int:
        return len(self._running)

    def seed_costs(self, samples: Iterable[CostSample | tuple[int, int, float]]) -> Mapping[int, float]:
        """Start the cost model from timed passes (size, padded frames per item, seconds), e.g. the
        engine's warm-up; logs and exports (and returns) the predicted seconds per batch size."""
        return self.planner.seed(samples)

    # -- submission -----------------------------------------------------------------------------------

    def submit(self, item: ItemT, *, first: bool = True, request_id: str | None = None,
               timeout_s: float | None = None, deadline: float | None = None) -> Ticket[ItemT]:
        """Queue ``item``; its result (or typed error) arrives on ``ticket.future``. ``deadline``: loop
        time its result is needed by (default: now + the first-audio target). Only a first chunk may be
        refused (queue full, admission) or time out: a later chunk's stream is already playing."""
        self._refuse_if_closed()
        cost, key = int(self.model.cost(item)), self.model.batch_key(item)
        now = asyncio.get_running_loop().time()
        predicted = None
        if first:
            self._check_capacity(cost, key, now)
            predicted = self._admit(cost, key, now) if self.config.admission else None
        self.planner.arrived(now)
        ticket = self._enqueue(item, cost, key, first, request_id, timeout_s, deadline)
        ticket.predicted = predicted
        return ticket

    def _check_capacity(self, cost: int, key: Hashable, now: float) -> None:
        config = self.config
        if len(self._queue) >= config.max_queue:
            reason = f"queue is full ({config.max_queue} items)"
        elif self._queue.frames + cost > config.max_queue_frames and len(self._queue) > 0:
            reason = f"queue is full ({config.max_queue_frames} frames)"
        else:
            return
        self.observer.rejected("queue_full")
        backlog = self.planner.backlog(self._queue, cost, key, now)  # until the queue has drained
        raise QueueFullError(reason, retry_after_ms=max(50, int(1000 * backlog)))

    # -- admission ------------------------------------------------------------------------------------

    def predict_first_audio(self, item: ItemT) -> float:
        """Seconds from now until ``item``'s result, were it submitted now as a stream's first chunk:
        the running batch's rest, the queue drained as the policy batches it, then the item itself."""
        now = asyncio.get_running_loop().time()
        return self.planner.predict_first_audio(self._queue, int(self.model.cost(item)),
                                                  self.model.batch_key(item), now)

    def backlog_seconds(self, incoming: int = 0) -> float:
        now = asyncio.get_running_loop().time()
        return self.planner.backlog_ahead(self._queue, now, incoming)

    def _admission_margin(self) -> float:
        return self.planner.misses.margin()

    def admit(self, item: ItemT) -> float:
        """Raise ``QueueFullError`` (with a retry hint) when ``item`` as a first chunk would miss the
        admission budget; else return the prediction. ``submit(first=True)`` does this itself when
        admission is on; front ends call it to refuse before they commit to a response."""
        return self._admit(int(self.model.cost(item)), self.model.batch_key(item),
                           asyncio.get_running_loop().time())

    def _admit(self, cost: int, key: Hashable, now: float) -> float:
        return self._fairly(lambda promised: self.planner.admit(self._queue, cost, key, now, promised),
                            self.planner.costs.predict(key, 1, cost))

    # -- the loop -------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                batch = await self._next_batch()
                if batch is None:
                    return
                await self._execute(batch)
                await asyncio.sleep(0)  # the results' callbacks first: streams move their next chunks' deadlines
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop the service; the tickets involved are settled
                log.exception("batcher loop error")
                self._fail_running(BatcherError("internal batching error"))
                await asyncio.sleep(0)

    async def _next_batch(self) -> list[Ticket[ItemT]] | None:
        loop = asyncio.get_running_loop()
        while True:
            if self._closed and not self._queue:
                return None
            selection = self.planner.select(self._queue, loop.time())
            if selection.tickets:
                due = selection.tickets[0].enqueued_at + self.config.max_wait_ms / 1000
                if self._dispatch_now(selection, loop.time(), due):
                    return self._take(selection, loop.time())
                timeout: float | None = max(due - loop.time(), 0.0)
            else:
                timeout = None
            self._wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _dispatch_now(self, selection: Selection[ItemT], now: float, due: float) -> bool:
        # Idle model: a lone item goes at once; partners make a short wait (≤ max_wait) worthwhile.
        return selection.full or not selection.partners_waiting or now >= due or self._closed

    def _take(self, selection: Selection[ItemT], now: float) -> list[Ticket[ItemT]]:
        for ticket in selection.tickets:
            ticket.started.set()
            self._queue.remove(ticket)
            if ticket.timer is not None:
                ticket.timer.cancel()
            self.observer.queue_wait(now - ticket.enqueued_at)
        self._report_depth()
        return selection.tickets

    async def _execute(self, batch: list[Ticket[ItemT]]) -> None:
        live = [t for t in batch if not t.future.done()]
        if not live:
            return
        loop = asyncio.get_running_loop()
        self._running = live
        self.planner.started(live, loop.time())
        started = time.perf_counter()
        try:
            outcomes = await loop.run_in_executor(self._executor, self._compute, live)
        except asyncio.CancelledError:  # closed without drain: the thread's results will be dropped
            self._fail_running(BatcherClosedError("the server is shutting down"))
            raise
        finally:
            self._running = []
        seconds = time.perf_counter() - started
        for ticket, (ok, value) in zip(live, outcomes, strict=True):
            self._settle(ticket, ok, value)
        self.planner.misses.delivered([t for t, (ok, _) in zip(live, outcomes, strict=True) if ok], loop.time())
        self._record(live, outcomes, seconds)

    def _record(self, live: list[Ticket[ItemT]], outcomes: list[Outcome], seconds: float) -> None:
        costs = [t.cost for t in live]
        # Retried halves or skipped items would teach the cost model a batch that never ran.
        predicted = self.planner.finished(live, seconds, clean=all(ok for ok, _ in outcomes))
        self.observer.batch_done(len(live), seconds, max(costs) * len(costs), sum(costs))
        log.info("batch", extra={
            "size": len(live), "seconds": round(seconds, 4), "padded_frames": max(costs) * len(costs),
            "real_frames": sum(costs), "request_ids": sorted({t.request_id for t in live if t.request_id}),
            "failed": sum(1 for ok, _ in outcomes if not ok),
            "predicted_s": round(predicted, 4),
        })

    def _compute(self, tickets: Sequence[Ticket[ItemT]]) -> list[Outcome]:
        """Worker thread: one outcome per ticket, in order (see ``batching.splitting``)."""
        return run_split(self.model, tickets)

    # -- settling -------------------------------------------------------------------------------------

    def _fail_running(self, error: BaseException) -> None:
        for ticket in self._running:
            self._settle(ticket, False, error)
        self._running = []
