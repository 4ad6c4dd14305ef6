"""The step scheduler (``--scheduler step``): queued items join the running batch between flow steps, and
held items with ample slack pause.

    while True:
        self._admit()                    # on the event loop: queued tickets take free slots
        finished = await self._step()    # in the worker thread: joins, leaves, steps of the items that
                                         # step now (each step one or more passes, split by length),
                                         # vocode the done
        self._deliver(finished)          # on the event loop: settle their futures

Same surface as ``MicroBatcher`` (submit/run/close/call_in_worker, the queue figures, observer calls), the
same queue, deadlines and ``Ticket``s, and the same cost model (``batching.cost``) priced per step pass:
a newcomer takes a free slot at the next step when ``StepPlanner.joins`` says that lowers the weighted
summed completion time, instead of waiting for a whole batch. The queue is taken least slack first
(``policy.by_urgency``: nothing overtakes its head while it waits for a slot), and between steps held
later chunks with ample slack pause so that urgent items step in a smaller pass (``batching.pausing``).
The head of the queue also takes a slot when it would step alone with every held item paused (it
preempts later chunks whose listeners have audio to spare): where an extra row costs about what the row
does, that is how a newcomer avoids waiting for a long later chunk that nobody needs yet.

The stepping model is not thread-safe: every model call (add, remove, step, finish) is made on the one
worker thread (``batching.step_worker``). Cancellations made on the event loop are queued in ``_leaving``
and applied by the worker before the next step."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from batching import policy
from batching.base import BatcherBase
from batching.config import BatcherConfig
from batching.cost import CostSample
from batching.errors import BatcherClosedError, BatcherError
from batching.pausing import Held, Round, plan_round
from batching.protocol import BatchObserver
from batching.queue import Ticket
from batching.request_planner import ahead
from batching.step_planner import STEP_KEY, Load, StepModel, StepPlanner
from batching.step_worker import RUN_S, StepPass, time_steps, work

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
OutT = TypeVar("OutT")


class StepBatcher(BatcherBase[ItemT, OutT]):
    name = "step"
    thread_name = "tts-step"

    def __init__(self, model: StepModel[ItemT, OutT], config: BatcherConfig | None = None,
                 observer: BatchObserver | None = None, seed_steps: int = 32,
                 executor: ThreadPoolExecutor | None = None, owns_executor: bool | None = None) -> None:
        super().__init__(config or BatcherConfig(scheduler="step"), observer, executor, owns_executor)
        self.model = model
        self.planner = StepPlanner(self.config, self.observer, seed_steps)
        self.costs = self.planner.costs
        self._active: dict[int, Ticket[ItemT]] = {}
        self._left: dict[int, int] = {}
        """Steps each active ticket has left (loop-side mirror, for predictions)."""
        self._joining: list[Ticket[ItemT]] = []
        self._leaving: list[int] = []
        self._news = threading.Event()
        """Set on the loop by a submit or cancel; read by the worker between steps (``step_worker.work``)."""
        self.steps_run = 0
        self.paused_steps = 0
        """Item-steps held back by pauses (``batching.pausing``), for tests and benchmarks."""
        self._stepping: list[int] = []
        """Keys the running worker call steps (the others are paused)."""

    @property
    def running(self) -> int:
        return len(self._active)

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

    def submit(self, item: ItemT, *, first: bool = True, request_id: str | None = None,
               timeout_s: float | None = None, deadline: float | None = None) -> Ticket[ItemT]:
        """Queue ``item``; its result (or typed error) arrives on ``ticket.future``. ``deadline``: loop
        time its result is needed by (default: now + the first-audio target). Only a first chunk may be
        refused (queue full, admission) or time out: a later chunk's stream is already playing."""
        self._refuse_if_closed()
        cost = int(self.model.cost(item))
        predicted = None
        if first:
            self.planner.check_capacity(self._load(), len(self._queue), self._queue.frames, cost)
            predicted = self.admit(item) if self.config.admission else None
        ticket = self._enqueue(item, cost, STEP_KEY, first, request_id, timeout_s, deadline)
        ticket.predicted = predicted
        self._news.set()
        return ticket

    # -- admission control ----------------------------------------------------------------------------

    def predict_first_audio(self, item: ItemT) -> float:
        """Seconds until ``item``'s result were it submitted now: the wait for a slot, then its steps."""
        cost, steps = int(self.model.cost(item)), self.model.steps(item)
        return self.planner.first_audio(self._ahead(cost, steps), cost, steps)[1]

    def backlog_seconds(self, incoming: int = 0) -> float:
        """(For a newcomer as long as the average of the work in hand, at the seeded step count; the
        ``incoming`` ones of the typical length join the active items where a newcomer would, else queue.)"""
        frames = [t.cost for t in self._active.values()] + [t.cost for t in self._queue]
        if not frames and not incoming:
            return 0.0
        average = sum(frames) // len(frames) if frames else 0
        typical = self.planner.costs.typical_frames or (average if frames else 1)
        cost, steps = average if frames else typical, self.planner.seed_steps
        load = self.planner.arrived(self._ahead(cost, steps), typical, steps, incoming)
        return self.planner.backlog(load, cost, steps)

    def _admission_margin(self) -> float:
        return self.planner.misses.margin()

    def admit(self, item: ItemT) -> float:
        """Raise ``QueueFullError`` when ``item`` as a first chunk would miss the admission budget because
        of the work ahead of it (as ``MicroBatcher.admit``); else return the prediction."""
        cost, steps = int(self.model.cost(item)), self.model.steps(item)
        return self._fairly(lambda promised: self.planner.admit(self._ahead(cost, steps), cost, steps, promised),
                            steps * self.planner.step_seconds(1, cost))

    def _ahead(self, cost: int, steps: int) -> Load:
        """The load a newcomer of ``cost`` frames × ``steps`` waits for under the deadline order: the held
        items it would not pause (``_preempts``) and the queued ones that run before it
        (``request_planner.ahead``)."""
        now = asyncio.get_running_loop().time()
        held, due = self._held(), now + self.config.first_audio_s
        stepping = set(self._plan(now, Held(-1, cost, steps, due, True)).stepping)
        kept = [h for h in held if h.key in stepping]
        return Load([h.frames for h in kept], [h.left for h in kept],
                    len(ahead(self._queue, now, self.config.first_audio_s)), [h.first for h in kept])

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
                if finished.done:
                    await asyncio.sleep(0)  # the results' callbacks first: streams move their deadlines
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop the service; the items involved are failed
                log.exception("step loop error")
                self._fail_running(BatcherError("internal batching error"))
                await asyncio.sleep(0)

    async def _has_work(self) -> bool:
        while not (self._active or self._queue):
            if self._closed:
                return False
            self._wakeup.clear()
            await self._wakeup.wait()
        return True

    def _admit(self) -> None:
        """Queued tickets take free slots, least slack first, while the planner says joining pays or the
        head preempts (``_preempts``); the head waits (nothing overtakes it) until a slot it may take frees."""
        now = asyncio.get_running_loop().time()
        queue = self._order(now)
        while queue:
            ticket = queue[0]
            load = dataclasses.replace(self._load(), queued=len(queue) - 1)  # queued behind the newcomer
            if not (self.planner.fits(load, ticket.cost)
                    and (self.planner.joins(load, ticket.cost, self.model.steps(ticket.item), ticket.first)
                         or self._preempts(ticket, now))):
                break
            queue.pop(0)
            self._take(ticket, now)

    def _order(self, now: float) -> list[Ticket[ItemT]]:
        """The queue least slack first; a first chunk at the head, once it holds the model, is never
        paused: a queued later chunk that could not wait for all its steps goes ahead of it."""
        queue = policy.by_urgency(self._queue, now, self._alone)
        if queue and queue[0].first:
            due = policy.due_within(queue, now, self._alone, self._alone(queue[0]))
            if due is not None:
                queue.remove(due)
                queue.insert(0, due)
        return queue

    def _held(self) -> list[Held]:
        return [Held(t.seq, t.cost, self._left[t.seq], t.deadline, t.first) for t in self._active.values()]

    def _plan(self, now: float, *newcomers: Held) -> Round:
        """Which held items (and ``newcomers``, as if held) step next and which pause (``plan_round``)."""
        return plan_round([*self._held(), *newcomers], now, self.planner.round_seconds, RUN_S)

    def _preempts(self, ticket: Ticket[ItemT], now: float) -> bool:
        """Whether ``ticket``, held, would step alone with every held item paused (``batching.pausing``:
        each has the slack to wait for all of its steps, and it makes its step dearer), or is a later chunk
        that would stall stepping with everyone, so that held first chunks wait for it. On a curve where an
        extra row costs about as much as the row itself, ``joins`` keeps one item at a time; without this
        a newcomer would wait for a later chunk whose listener has seconds of audio still to play."""
        newcomer = Held(ticket.seq, ticket.cost, self.model.steps(ticket.item), ticket.deadline, ticket.first)
        plan = self._plan(now, newcomer)
        if plan.stepping == [ticket.seq]:
            return True
        # A later chunk that would stall stepping with everyone: the first chunks wait while it steps.
        firsts = {t.seq for t in self._active.values() if t.first}
        return not ticket.first and ticket.seq in plan.stepping and bool(firsts.intersection(plan.paused))

    def _alone(self, ticket: Ticket[ItemT]) -> float:
        """Predicted seconds of the item's steps, stepping alone."""
        return self.model.steps(ticket.item) * self.planner.step_seconds(1, ticket.cost)

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
        now = asyncio.get_running_loop().time()
        plan = self._plan(now)
        self._stepping = plan.stepping
        self.paused_steps += len(plan.paused)
        frames = [self._active[key].cost for key in plan.stepping]
        passes = [{plan.stepping[n]: frames[n] for n in group} for group in self.planner.split(frames)[1]]
        self._news.clear()  # on the loop, after _admit: a submit or cancel from now on stops the worker's run
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, work, self.model, joining, leaving, passes,
                                              self._news.is_set, self._stepped, plan.run_s)
        except asyncio.CancelledError:  # closed without drain: the thread's results will be dropped
            self._fail_running(BatcherClosedError("the server is shutting down"))
            raise

    def _stepped(self) -> None:
        self.steps_run += 1  # written by the worker only; the loop (and tests) read it

    def _deliver(self, finished: StepPass) -> None:
        if finished.done or finished.failed:  # one line per call that settled something, as a batch's line
            self._log(finished)
        for key, exc in finished.failed.items():
            self._settle(self._release(key), False, exc)
        done = [(self._release(key), wave) for key, wave in finished.done.items()]
        self.planner.misses.delivered([t for t, _ in done if t is not None], asyncio.get_running_loop().time())
        for ticket, wave in done:
            self._settle(ticket, True, wave)
        for key in self._stepping:  # paused items took no step
            if key in self._left:
                self._left[key] -= finished.rounds
        clean = [] if finished.split else zip(finished.steps, finished.real, strict=True)  # a split: wrong cost
        for (size, frames, seconds), real in clean:
            # Per pass: tts_batch_size is the items stepping together, tts_batch_seconds one pass.
            self.observer.batch_done(size, seconds, size * frames, real)
            self.planner.observe(size, frames, seconds)

    def _log(self, finished: StepPass) -> None:
        """The request mode's ``batch`` line for a worker call: ``size`` is the most items that stepped
        together in one pass, ``steps`` how many steps the call took; request ids of every held item."""
        log.info("batch", extra={
            "size": max((s.size for s in finished.steps), default=0), "steps": finished.rounds,
            "passes": len(finished.steps), "seconds": round(sum(s.seconds for s in finished.steps), 4),
            "request_ids": sorted({t.request_id for t in self._active.values() if t.request_id}),
            "finished": len(finished.done), "failed": len(finished.failed),
        })

    # -- settling -------------------------------------------------------------------------------------

    def _release(self, key: int) -> Ticket[ItemT] | None:
        self._left.pop(key, None)
        return self._active.pop(key, None)

    def _forget(self, ticket: Ticket[ItemT]) -> bool:
        """As the base; besides, a cancelled active ticket leaves the model at the next step (the worker
        applies it)."""
        if super()._forget(ticket):
            return True
        if ticket.future.cancelled() and self._release(ticket.seq) is not None:
            self._leaving.append(ticket.seq)
            self._news.set()
        return False

    def _fail_running(self, error: BaseException) -> None:
        """The active tickets; the model may still hold them, and removing an unknown key is harmless."""
        self._leaving.extend(self._active)
        self._joining = []
        for key in list(self._active):
            self._settle(self._release(key), False, error)
