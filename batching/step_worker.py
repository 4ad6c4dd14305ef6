"""The step scheduler's worker-thread side: what one loop iteration does to the model, and the warm-up
timing of single step passes that seeds the per-step cost curve.

Every function here runs on the scheduler's one worker thread (the model is not thread-safe) and never
touches the event loop: results go back as a ``StepPass`` for the loop to settle.

One call may take several steps (each one or more passes, the planner's split by length): while nothing
finishes and nothing new arrives (``interrupted``), the scheduler has nothing to decide between steps,
and a round trip through the event loop per step costs ~1–2 ms here — a fifth of a small model's step on
this CPU.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from batching.cost import CostSample
from batching.queue import Ticket
from batching.step_planner import StepModel

ItemT = TypeVar("ItemT")
OutT = TypeVar("OutT")
RUN_S = 0.25
"""Longest one call keeps stepping without news: the loop still re-plans a few times a second (deadlines
of queued and paused items)."""
TIMED_STEPS = 2
"""Step passes timed per warm-up shape, after one untimed pass (allocator pools, first-call costs)."""


@dataclass
class StepPass:
    """What one worker call did."""

    done: dict[int, Any] = field(default_factory=dict)
    failed: dict[int, BaseException] = field(default_factory=dict)
    steps: list[CostSample] = field(default_factory=list)
    """(items, padded frames, seconds) of each clean pass taken (a step may take several)."""
    real: list[int] = field(default_factory=list)
    """Unpadded frames of each pass in ``steps``."""
    rounds: int = 0
    """Steps every stepping (not paused) item took."""
    split: bool = False
    """A pass raised and was split: its time says nothing about the cost curve."""


def work(model: StepModel[ItemT, OutT], joining: list[Ticket[ItemT]], leaving: list[int],
         passes: Sequence[Mapping[int, int]], interrupted: Callable[[], bool], stepped: Callable[[], None],
         run_s: float = RUN_S) -> StepPass:
    """Apply leaves and joins, then step: each step runs ``passes`` (key → frames; every held item in one
    of the stepping items in one of them, the planner's ``split`` by length; paused items in none), until an
    item finishes or fails, ``interrupted()`` (a submit or cancel on the loop), or ``run_s`` (at least one
    step); vocode what finished. ``stepped()`` after every step (progress the loop
    can read while the call runs)."""
    out = StepPass()
    for key in leaving:
        model.remove(key)
    for ticket in joining:
        try:
            model.add(ticket.item, ticket.seq)
        except Exception as exc:  # an item the model cannot voice fails alone, before any step
            out.failed[ticket.seq] = exc
    groups = [{key: frames for key, frames in keys.items() if key not in out.failed} for keys in passes]
    groups = [keys for keys in groups if keys]
    began = time.perf_counter()
    while groups and model.active:
        finished: list[int] = []
        for keys in groups:
            frames = model.pass_cost(keys)[1]
            started = time.perf_counter()
            result = model.step_isolating(list(keys))
            seconds = time.perf_counter() - started
            for bad, error in result.failed.items():
                model.remove(bad)
                out.failed[cast(int, bad)] = error  # our keys are ticket seqs
            out.split = out.split or bool(result.failed)
            out.steps.append(CostSample(len(keys), frames, seconds))
            out.real.append(sum(keys.values()))
            finished += [cast(int, k) for k in result.finished]
        out.rounds += 1
        stepped()
        out.done = finish(model, finished, out.failed)
        if out.done or out.failed or interrupted() or time.perf_counter() - began > run_s:
            break
    return out


def finish(model: StepModel[ItemT, OutT], keys: list[int], failed: dict[int, BaseException]) -> dict[int, Any]:
    """Vocode together; if that raises, one by one, so only the item that raises fails."""
    with contextlib.suppress(Exception):
        waves = model.finish(keys)
        if len(waves) == len(keys):
            return dict(zip(keys, waves, strict=True))
    done = {}
    for key in keys:
        try:
            done[key] = model.finish([key])[0]
        except Exception as exc:
            model.remove(key)
            failed[key] = exc
    return done


def time_steps(model: StepModel[ItemT, OutT], items: Sequence[ItemT], sizes: Sequence[int]) -> list[CostSample]:
    """Seconds of one step pass of ``size`` equal-length items, for every size and every distinct length
    among ``items`` (one short and one long item seed how a step grows with frames as well as items),
    timed on the live model as the scheduler will run it; the items are removed again. Items need more
    than ``TIMED_STEPS`` + 1 steps."""
    lengths = {model.cost(item): item for item in items}
    return [_time_pass(model, item, size) for item in lengths.values() for size in sizes]


def _time_pass(model: StepModel[ItemT, OutT], item: ItemT, size: int) -> CostSample:
    keys: list[Hashable] = [("warm-up", n) for n in range(size)]
    try:
        for key in keys:
            model.add(item, key)  # one item under several keys: equal rows, no padding
        model.step_isolating()  # untimed: the first pass of a shape pays one-off costs
        started = time.perf_counter()
        for _ in range(TIMED_STEPS):
            model.step_isolating()
        seconds = (time.perf_counter() - started) / TIMED_STEPS
        return CostSample(size, model.pass_cost()[1], seconds)
    finally:
        for key in keys:
            model.remove(key)
