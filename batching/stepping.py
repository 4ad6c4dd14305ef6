"""The step scheduler (``--scheduler step``): queued items join the running batch between flow steps.

    while True:
        self._admit()                    # on the event loop: queued tickets take free slots
        finished = await self._step()    # in the worker thread: joins, leaves, one step, vocode the done
        self._deliver(finished)          # on the event loop: settle their futures

Same surface as ``MicroBatcher`` (submit/run/close/call_in_worker, the queue figures, observer calls), the
same queue, deadlines and ``Ticket``s, and the same cost model (``batching.cost``) priced per step pass:
a newcomer takes a free slot at the next step when ``StepPlanner.joins`` says that lowers the weighted
summed completion time, instead of waiting for a whole batch. First chunks first, the oldest never starved
(``policy.choose_anchor``: nothing overtakes the anchor while it waits for a slot).

The stepping model is not thread-safe: every model call (add, remove, step, finish) is made on the one
worker thread (``batching.step_work``). Cancellations made on the event loop are queued in ``_leaving`` and
applied by the worker before the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from batching import policy
from batching.config import BatcherConfig
from batching.cost import CostSample
from batching.errors import BatcherClosedError, BatcherError, QueueTimeoutError
from batching.protocol import BatchObserver, NullObserver
from batching.queue import PendingQueue, Ticket
from batching.step_plan import STEP_KEY, Load, StepModel, StepPlanner
from batching.step_work import StepPass, time_steps, work

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
OutT = TypeVar("OutT")
R = TypeVar("R")


class StepBatcher(Generic[ItemT, OutT]):
    def __init__(self, model: StepModel[ItemT, OutT], config: BatcherConfig | None = None,
                 observer: BatchObserver | None = None, seed_steps: int = 32) -> None:
        self.model = model
        self.config = config or BatcherConfig(scheduler="step")
        self.observer: BatchObserver = observer or NullObserver()
        self.planner = StepPlanner(self.config, self.observer, seed_steps)
        self.costs = self.planner.costs
        self._queue: PendingQueue[ItemT] = PendingQueue()
        self._active: dict[int, Ticket[ItemT]] = {}
        self._left: dict[int, int] = {}
        """Steps each active ticket has left (loop-side mirror, for predictions)."""
        self._joining: list[Ticket[ItemT]] = []
        self._leaving: list[int] = []
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._news = threading.Event()
        """Set on the loop by a submit or cancel; read by the worker between steps (``step_work.work``)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts-step")
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.steps_run = 0

    # -- lifecycle and figures ------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="step-batcher")
        self._task.add_done_callback(self._on_loop_exit)

    async def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking work. With ``drain``, finish what is queued and active first (up to ``timeout``)."""
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            if drain:
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(self._task), timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._fail_all(BatcherClosedError("the server is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def queued_frames(self) -> int:
        return self._queue.frames

    @property
    def running(self) -> int:
        return len(self._active)

    async def call_in_worker(self, fn: Callable[..., R], *args: Any) -> R:
        """Run ``fn`` on the model's one worker thread, between steps (warm-up, voice preparation)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def seed_costs(self, samples: Iterable[CostSample | tuple[int, int, float]]) -> Mapping[int, float]:
        """Fallback seed: the engine warm-up's whole-batch timings (at ``seed_steps`` steps) / steps. The
        curve then stays fixed: live single passes would not match it (see ``StepPlanner.learning``)."""
        return self.planner.seed(samples)

    async def seed_step_costs(self, items: Sequence[ItemT], sizes: Sequence[int]) -> Mapping[int, float]:
        """Seed the per-step curve by timing single step passes of each size and each length among ``items``
        on the worker (before ``start``); it then keeps learning from every live step. Logs and exports the
        predicted seconds of one step per active count."""
        samples = await self.call_in_worker(time_steps, self.model, items, sizes)
        return self.planner.seed_passes(samples)

    # -- submission -----------------------------------------------------------------------------------

    def submit(self, item: ItemT, *, first: bool = False, request_id: str | None = None,
               timeout_s: float | None = None) -> Ticket[ItemT]:
        """Queue ``item``; its result (or typed error) arrives on ``ticket.future``."""
        if self._closed:
            self.observer.rejected("shutting_down")
            raise BatcherClosedError("the server is shutting down")
        cost = int(self.model.cost(item))
        self.planner.check_capacity(self._load(), len(self._queue), self._queue.frames, cost)
        if first and self.config.admission:
            self.admit(item)
        loop = asyncio.get_running_loop()
        now = loop.time()
        ticket: Ticket[ItemT] = Ticket(
            item=item, cost=cost, key=STEP_KEY, first=first, seq=next(self._seq), enqueued_at=now,
            deadline=now + (timeout_s or self.config.queue_timeout_s), future=loop.create_future(),
            request_id=request_id,
        )
        ticket.timer = loop.call_at(ticket.deadline, self._expire, ticket)
        ticket.release = self._forget
        ticket.future.add_done_callback(lambda _f: self._forget(ticket))
        self._queue.push(ticket)
        self._report_depth()
        self._wakeup.set()
        self._news.set()
        return ticket

    async def run(self, item: ItemT, **kwargs: Any) -> OutT:
        """Submit and wait; cancelling the caller cancels the item."""
        result: OutT = await self.submit(item, **kwargs).future
        return result

    # -- admission control ----------------------------------------------------------------------------

    def predict_first_audio(self, item: ItemT) -> float:
        """Seconds until ``item``'s result were it submitted now: the wait for a slot, then its steps."""
        return self.planner.first_audio(self._load(), int(self.model.cost(item)), self.model.steps(item))[1]

    def admit(self, item: ItemT) -> float:
        """Raise ``QueueFullError`` when ``item`` as a first chunk would miss the admission budget because
        of the work ahead of it (as ``MicroBatcher.admit``); else return the prediction."""
        return self.planner.admit(self._load(), int(self.model.cost(item)), self.model.steps(item))

    def _load(self) -> Load:
        active = list(self._active.values())
        return Load([t.cost for t in active], list(self._left.values()), len(self._queue), [t.first for t in active])

    # -- the loop -------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while await self._has_work():
            try:
                self._admit()
                finished = await self._step()
                self._deliver(finished)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop the service; the items involved are failed
                log.exception("step loop error")
                self._fail_active(BatcherError("internal batching error"))
                await asyncio.sleep(0)

    async def _has_work(self) -> bool:
        while not (self._active or self._queue):
            if self._closed:
                return False
            self._wakeup.clear()
            await self._wakeup.wait()
        return True

    def _admit(self) -> None:
        """Queued tickets take free slots while the planner says joining pays: first chunks first; the
        oldest anchors once past its slack and then waits at the head (nothing overtakes it) until a slot
        it may take frees."""
        now = asyncio.get_running_loop().time()
        queue = list(self._queue)
        while queue:
            ticket = policy.choose_anchor(queue, now, self.config.later_chunk_slack_s)
            load = dataclasses.replace(self._load(), queued=len(queue) - 1)  # queued behind the newcomer
            if not (self.planner.fits(load, ticket.cost)
                    and self.planner.joins(load, ticket.cost, self.model.steps(ticket.item), ticket.first)):
                break
            queue.remove(ticket)
            self._take(ticket, now)

    def _take(self, ticket: Ticket[ItemT], now: float) -> None:
        self._queue.remove(ticket)
        if ticket.timer is not None:
            ticket.timer.cancel()
        ticket.started.set()
        self._active[ticket.seq] = ticket
        self._left[ticket.seq] = self.model.steps(ticket.item)
        self._joining.append(ticket)
        self.observer.queue_wait(now - ticket.enqueued_at)
        self._report_depth()

    async def _step(self) -> StepPass:
        joining, leaving = self._joining, self._leaving
        self._joining, self._leaving = [], []
        self._news.clear()  # on the loop, after _admit: a submit or cancel from now on stops the worker's run
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, work, self.model, joining, leaving, self._news.is_set,
                                              self._stepped)
        except asyncio.CancelledError:  # closed without drain: the thread's results will be dropped
            self._fail_active(BatcherClosedError("the server is shutting down"))
            raise

    def _stepped(self) -> None:
        self.steps_run += 1  # written by the worker only; the loop (and tests) read it

    def _deliver(self, finished: StepPass) -> None:
        real = sum(t.cost for t in self._active.values())
        for key, exc in finished.failed.items():
            self._settle(self._release(key), False, exc)
        for key, wave in finished.done.items():
            self._settle(self._release(key), True, wave)
        for key in self._left:
            self._left[key] -= len(finished.steps)
        for size, frames, seconds in [] if finished.split else finished.steps:  # a split pass: wrong cost
            # Per step: tts_batch_size is the items stepping together, tts_batch_seconds one step.
            self.observer.batch_done(size, seconds, size * frames, real)
            self.planner.observe(size, frames, seconds)

    # -- settling -------------------------------------------------------------------------------------

    def _release(self, key: int) -> Ticket[ItemT] | None:
        self._left.pop(key, None)
        return self._active.pop(key, None)

    def _settle(self, ticket: Ticket[ItemT] | None, ok: bool, value: Any) -> None:
        if ticket is None or ticket.future.done():  # cancelled meanwhile: drop the result silently
            return
        if ok:
            ticket.future.set_result(value)
        else:
            ticket.future.set_exception(value)

    def _expire(self, ticket: Ticket[ItemT]) -> None:
        if self._queue.remove(ticket):
            self._report_depth()
            self._settle(ticket, False, QueueTimeoutError(
                f"not started within {ticket.deadline - ticket.enqueued_at:.1f} s (server overloaded)"))

    def _forget(self, ticket: Ticket[ItemT]) -> None:
        """Done callback and ``Ticket.cancel``: a settled ticket leaves the queue at once; an active one
        leaves the model at the next step (the worker applies it)."""
        ticket.started.set()
        if ticket.timer is not None:
            ticket.timer.cancel()
        if self._queue.remove(ticket):
            self._report_depth()
        elif ticket.future.cancelled() and self._release(ticket.seq) is not None:
            self._leaving.append(ticket.seq)
            self._news.set()

    def _fail_active(self, error: BaseException) -> None:
        self._leaving.extend(self._active)  # the model may still hold them; removing an unknown key is harmless
        self._joining = []
        for key in list(self._active):
            self._settle(self._release(key), False, error)

    def _fail_all(self, error: BaseException) -> None:
        for ticket in self._queue:
            self._queue.remove(ticket)
            self._settle(ticket, False, error)
        self._fail_active(error)
        self._report_depth()

    def _on_loop_exit(self, task: asyncio.Task[None]) -> None:
        """If the loop ever dies, nobody may hang on a future: fail everything, refuse new work."""
        self._closed = True
        if not task.cancelled() and task.exception() is not None:
            log.error("step loop died", exc_info=task.exception())
        self._fail_all(BatcherClosedError("the batcher stopped"))

    def _report_depth(self) -> None:
        self.observer.queue_depth(len(self._queue), self._queue.frames)
