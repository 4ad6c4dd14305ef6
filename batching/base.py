"""What the two schedulers share: the queue of tickets, the one model thread, the loop task's lifecycle,
deadlines and cancellation of queued tickets, and settling every future exactly once.

``MicroBatcher`` (whole batches) and ``StepBatcher`` (items join between flow steps) differ only in how
queued tickets reach the model; each supplies its loop (``_loop``), how it fails the tickets the model
holds (``_fail_running``) and how many those are (``running``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import weakref
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from batching import policy
from batching.config import BatcherConfig
from batching.errors import BatcherClosedError, QueueFullError, QueueTimeoutError
from batching.protocol import BatchObserver, NullObserver
from batching.queue import PendingQueue, Ticket

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
OutT = TypeVar("OutT")
R = TypeVar("R")


class Entry:
    """A newcomer let past ``BatcherBase.refuse_early``: work ahead of the next newcomers until ``close``
    (its first chunk is queued, or it ends without one). An entry dropped unclosed stops counting when it
    is collected."""

    def __init__(self, entries: weakref.WeakSet[Entry], ahead_s: float = 0.0, on_time: bool = True) -> None:
        self._entries = entries
        entries.add(self)
        self.ahead_s = ahead_s
        """Predicted seconds of work ahead of this newcomer when it was let in."""
        self.on_time = on_time
        """Whether its first audio can still meet the first-audio deadline (``first_audio_s``): the work
        ahead is shorter. When it cannot, a short first chunk buys the listener nothing and costs the
        model an extra pass (with its reference) that every request behind waits for, so front ends
        cut no short first chunk then."""

    def close(self) -> None:
        """Idempotent."""
        self._entries.discard(self)


class BatcherBase(Generic[ItemT, OutT]):
    name = "batcher"
    """For the loop task and log lines."""
    thread_name = "tts-batch"

    def __init__(self, config: BatcherConfig, observer: BatchObserver | None,
                 executor: ThreadPoolExecutor | None = None, owns_executor: bool | None = None) -> None:
        """``executor``: the model's one thread, when it exists before the batcher (the server loads the
        model on it); ``owns_executor``: shut it down on ``close`` (default: only the batcher's own)."""
        self.config = config
        self.observer: BatchObserver = observer or NullObserver()
        self._queue: PendingQueue[ItemT] = PendingQueue()
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._owns_executor = executor is None if owns_executor is None else owns_executor
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.thread_name)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.promises = policy.Promises()
        """The places of newcomers that admission refused (``policy.Promises``)."""
        self._entries: weakref.WeakSet[Entry] = weakref.WeakSet()
        """Newcomers let past ``refuse_early`` whose first chunk is not queued yet (``Entry``)."""

    # -- lifecycle and figures ------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)
        self._task.add_done_callback(self._on_loop_exit)

    async def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking work. With ``drain``, finish what is queued and running first (up to ``timeout``)."""
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
        if self._owns_executor:
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
        raise NotImplementedError

    async def call_in_worker(self, fn: Callable[..., R], *args: Any) -> R:
        """Run ``fn`` on the model's one worker thread, in turn with the model's own work. Model work
        (warm-up, voice preparation) belongs on this one thread: thread-local kernel caches and handles
        (oneDNN, cuBLAS) are then warm for batches, and no second thread's OpenMP team competes for the cores."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run(self, item: ItemT, **kwargs: Any) -> OutT:
        """Submit and wait; cancelling the caller cancels the item."""
        result: OutT = await self.submit(item, **kwargs).future
        return result

    def submit(self, item: ItemT, *, first: bool = True, request_id: str | None = None,
               timeout_s: float | None = None, deadline: float | None = None) -> Ticket[ItemT]:
        raise NotImplementedError

    def backlog_seconds(self, incoming: int = 0) -> float:
        """Predicted seconds a newcomer submitted now would wait before the model starts on it (the work
        ahead of it under the deadline order, and ``incoming`` newcomers of the typical length let in
        before it), whatever the newcomer is: the retry hint of a refusal that has no item, and the cheap
        half of admission."""
        raise NotImplementedError

    @property
    def incoming(self) -> int:
        """Newcomers let past ``refuse_early`` whose first chunk is not queued yet."""
        return len(self._entries)

    def refuse_early(self) -> Entry:
        """With admission on, raise ``QueueFullError`` (retry hint: when the backlog will have drained
        enough) when the work ahead alone already puts any newcomer's first audio past the budget: front
        ends call it before they prepare a request's text, so that a refusal under overload costs almost
        nothing. The work ahead counts the newcomers let in before and still preparing their text: the
        requests of a burst are all checked before the first of them is queued. The ``Entry`` returned
        is closed when the newcomer's first chunk is queued or it ends without one, and says how much
        work was ahead of it (``Entry.on_time``). ``submit`` still decides with the item's own cost."""
        backlog = self.backlog_seconds(self.incoming)
        if self.config.admission:
            self._fairly(lambda promised: policy.within_budget(
                backlog + promised, backlog + promised, self.config.admission_ttfa_s, self.observer,
                self._admission_margin()), 0.0, final=False)
        return Entry(self._entries, backlog, on_time=backlog < self.config.first_audio_s)

    def _admission_margin(self) -> float:
        raise NotImplementedError

    def _fairly(self, decide: Callable[[float], float], seconds: float, final: bool = True) -> float:
        """Admission with the refused newcomers' places kept (``policy.Promises``): ``decide(promised)``
        raises ``QueueFullError`` or returns the prediction; a refusal promises ``seconds`` of work a
        place at its retry hint; only a ``final`` decision uses up the promise it was taken for (a front
        end's early check does not)."""
        now = asyncio.get_running_loop().time()
        try:
            return decide(self.promises.ahead(now, self.config.admission_ttfa_s, take=final))
        except QueueFullError as exc:
            self.promises.refused(now, exc.retry_after_ms / 1000, seconds)
            raise

    # -- queueing -------------------------------------------------------------------------------------

    def _refuse_if_closed(self) -> None:
        if self._closed:
            self.observer.rejected("shutting_down")
            raise BatcherClosedError("the server is shutting down")

    def _enqueue(self, item: ItemT, cost: int, key: Hashable, first: bool, request_id: str | None,
                 timeout_s: float | None, deadline: float | None) -> Ticket[ItemT]:
        """A ticket for an admitted item, queued with its cancellation hooks; a first chunk also with its
        queue timeout (a later chunk's stream is playing: it waits as long as it takes, never cut off)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        ticket: Ticket[ItemT] = Ticket(
            item=item, cost=cost, key=key, first=first, seq=next(self._seq), enqueued_at=now,
            deadline=deadline if deadline is not None else now + self.config.first_audio_s,
            expires=now + (timeout_s or self.config.queue_timeout_s) if first else None,
            future=loop.create_future(), request_id=request_id,
        )
        if ticket.expires is not None:
            ticket.timer = loop.call_at(ticket.expires, self._expire, ticket)
        ticket.release = self._forget
        ticket.future.add_done_callback(lambda _f: self._forget(ticket))
        self._queue.push(ticket)
        self._report_depth()
        self._wakeup.set()
        return ticket

    def _expire(self, ticket: Ticket[ItemT]) -> None:
        if self._queue.remove(ticket):
            self._report_depth()
            self._settle(ticket, False, QueueTimeoutError(
                f"not started within {(ticket.expires or 0.0) - ticket.enqueued_at:.1f} s (server overloaded)"))

    def _forget(self, ticket: Ticket[ItemT]) -> bool:
        """Done callback and ``Ticket.cancel``: a settled ticket leaves the queue at once. Returns whether
        it was still queued."""
        ticket.started.set()
        if ticket.timer is not None:
            ticket.timer.cancel()
        if self._queue.remove(ticket):
            self._report_depth()
            return True
        return False

    # -- the loop -------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        raise NotImplementedError

    def _on_loop_exit(self, task: asyncio.Task[None]) -> None:
        """If the loop ever dies, nobody may hang on a future: fail everything, refuse new work."""
        self._closed = True
        if not task.cancelled() and task.exception() is not None:
            log.error("%s loop died", self.name, exc_info=task.exception())
        self._fail_all(BatcherClosedError("the batcher stopped"))

    # -- settling -------------------------------------------------------------------------------------

    def _settle(self, ticket: Ticket[ItemT] | None, ok: bool, value: Any) -> None:
        if ticket is None or ticket.future.done():  # cancelled meanwhile: drop the result silently
            return
        if ok:
            ticket.future.set_result(value)
        else:
            ticket.future.set_exception(value)

    def _fail_running(self, error: BaseException) -> None:
        """Fail every ticket the model holds now."""
        raise NotImplementedError

    def _fail_all(self, error: BaseException) -> None:
        for ticket in self._queue:
            self._queue.remove(ticket)
            self._settle(ticket, False, error)
        self._fail_running(error)
        self._report_depth()

    def _report_depth(self) -> None:
        self.observer.queue_depth(len(self._queue), self._queue.frames)
