"""Which held items take the next steps, and which wait (step mode): least slack first, with pauses.

Between flow steps every held item has a deadline (``batching.playback``) and a slack: deadline − now −
its steps left × the predicted seconds of a step of everything held. Items step in order of least slack;
a later chunk (its listener has audio playing) with ample slack is **paused**: it keeps its state and
takes no step, so that the items ahead of it step in a smaller, cheaper pass. Two conditions, both priced
by the step cost curve:

- it can afford it: paused until every item stepping now is done, then stepping as slowly as a step of
  everything held costs now, it still meets its deadline with ``STALL_MARGIN`` of that work to spare;
- it buys something: stepping it along would make the others' step at least ``PAUSE_GAIN`` dearer. On a
  flat curve (a GPU below saturation) an extra row is free, and nobody is paused.

A first chunk pauses only for a later chunk that would otherwise stall: when a later chunk cannot meet
its deadline stepping with everyone, the newest first chunks wait (state kept) while it steps in a
smaller, cheaper pass; their deadline is a target, a listener's silence is a failure. Otherwise first
chunks always step: sooner is better for them, and a later chunk gains nothing from finishing before its
listener needs it. The worker is told how long it may run before the plan is made again
(``Round.run_s``): no paused item's deadline comes closer than its margin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from batching.policy import STALL_MARGIN

PAUSE_GAIN = 0.1
"""Pausing an item must make the others' step this much cheaper, or it steps along."""


@dataclass(frozen=True)
class Held:
    """A held item as the pause plan sees it."""

    key: int
    frames: int
    left: int
    """Steps it has left."""
    deadline: float
    first: bool


@dataclass(frozen=True)
class Round:
    stepping: list[int]
    """Keys that step, least slack first."""
    paused: list[int]
    run_s: float
    """Longest the worker may keep stepping ``stepping`` before the plan must be made again."""


def plan_round(held: Sequence[Held], now: float, round_seconds: Callable[[Sequence[int]], float],
               max_run_s: float) -> Round:
    """Split ``held`` into the items that step and those paused (``round_seconds``: predicted seconds of
    one step of items of these frames, the planner's price)."""
    everyone = round_seconds([h.frames for h in held])

    def order(h: Held) -> tuple[float, bool, int]:
        spare = h.deadline - now - h.left * everyone
        return (max(spare, 0.0) if h.first else spare, h.first, h.key)

    stepping: list[Held] = []
    paused: list[Held] = []
    for item in sorted(held, key=order):
        if stepping and not item.first and _may_pause(item, stepping, now, everyone, round_seconds):
            paused.append(item)
        else:
            stepping.append(item)
    # Items that stepped after a pause was decided make the pause longer: check every pause again.
    while (late := [h for h in paused if not _may_pause(h, stepping, now, everyone, round_seconds)]):
        stepping += late
        paused = [h for h in paused if h not in late]
    held_back = _rescue(stepping, now, round_seconds)
    stepping = [h for h in stepping if h not in held_back]
    latest = min([now + max_run_s] + [h.deadline - _own(h, everyone) for h in paused])
    return Round([h.key for h in stepping], [h.key for h in paused + held_back], max(0.0, latest - now))


def _rescue(stepping: Sequence[Held], now: float, round_seconds: Callable[[Sequence[int]], float]) -> list[Held]:
    """The first chunks that wait while a later chunk that would stall stepping with them steps in a
    smaller pass: the newest first, until it meets its deadline (with the margin) or pausing no longer
    makes its step cheaper. A first chunk's target is a goal; a listener's silence is a failure."""
    held_back: list[Held] = []
    for item in stepping:  # least slack first
        if item.first:
            continue
        while True:
            kept = [h for h in stepping if h not in held_back]
            step = round_seconds([h.frames for h in kept])
            if item.deadline - now - item.left * step * (1 + STALL_MARGIN) >= 0:
                break
            waiting = [h for h in kept if h.first]
            if not waiting:
                break
            newest = waiting[-1]
            cheaper = round_seconds([h.frames for h in kept if h is not newest])
            if cheaper * (1 + PAUSE_GAIN) > step:
                break
            held_back.append(newest)
    return held_back


def _own(item: Held, everyone: float) -> float:
    """The item's remaining work once resumed, at today's step of everything held, with its margin."""
    return item.left * everyone * (1 + STALL_MARGIN)


def _may_pause(item: Held, stepping: Sequence[Held], now: float, everyone: float,
               round_seconds: Callable[[Sequence[int]], float]) -> bool:
    frames = [h.frames for h in stepping]
    alone = round_seconds(frames)
    pause_s = max(h.left for h in stepping) * alone
    ample = item.deadline - now - pause_s - _own(item, everyone) >= 0
    return ample and round_seconds([*frames, item.frames]) > alone * (1 + PAUSE_GAIN)
