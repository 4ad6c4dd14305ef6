"""What the step scheduler asks of a model, and how it prices a step (no torch, no I/O).

The cost model (``batching.cost``) and batch policy (``batching.policy``) of the request scheduler, priced
per flow step: one curve, T(n, frames) = seconds of one DiT pass of n items, seeded by timing single step
passes at warm-up (``seed_passes``; whole-batch timings / steps are only a fallback) and refined from every
live step.

The join decision (``joins``): a newcomer takes a free slot at the next step when that lowers the
first-audio-weighted summed completion time. Joining now costs every active item ΔT = T(n+1) − T(n) on
each step they share; not joining makes the newcomer wait until the next slot frees (the fewest steps any
active item has left, at T(n)). A compute-bound curve (ΔT ≈ T(1)) therefore keeps near one item at a time
(a FIFO: processor sharing would delay everyone and speed no one), a flat one (ΔT ≈ 0) fills every slot.
With a long queue, throughput is what everyone waits for: the request policy's batch plan over active +
queued items (``target``) may also open slots, while padding stays within ``max_padding``.

A step need not be one pass: ``split`` cuts the active items, by length, into the passes that the curve
prices cheapest (a short first chunk beside a long later chunk pads to the long one: at 1.2 load a fifth
of a single pass's frames were padding). Where a pass has a fixed cost worth sharing (a GPU's launches),
the curve keeps them in one.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from batching import policy
from batching.config import BatcherConfig
from batching.cost import CostModel, CostSample
from batching.errors import QueueFullError
from batching.protocol import BatchObserver, CostObserver

log = logging.getLogger("batching.step_batcher")

ItemT_contra = TypeVar("ItemT_contra", contravariant=True)
OutT_co = TypeVar("OutT_co", covariant=True)
STEP_KEY = "step"
"""Items of any step count, CFG or sway share a pass: one cost curve."""
REFIT_EVERY = 8
"""Steps between cost-model refits: a fit per step would cost the event loop more than it learns."""
FIRST_WEIGHT = 2.0
"""Weight of a first chunk's completion time against a later chunk's: a first chunk is what the listener
waits for; a later one has the previous chunk's audio playing ahead of it."""


class StepOutcome(Protocol):
    @property
    def finished(self) -> Sequence[Hashable]:
        """Keys that took their last step."""
        ...

    @property
    def failed(self) -> Mapping[Hashable, BaseException]:
        """Keys whose pass raised (they did not move)."""
        ...


class StepModel(Protocol[ItemT_contra, OutT_co]):
    """What the step scheduler needs from a model; ``engine.step_adapter.EngineStepModel`` satisfies it.
    ``cost`` and ``steps`` are pure and called on the event loop; every other method only on the
    scheduler's one worker thread (the model need not be thread-safe)."""

    def cost(self, item: ItemT_contra) -> int:
        """Frames the item occupies in a pass (its padded length)."""
        ...

    def steps(self, item: ItemT_contra) -> int:
        """Flow steps the item takes."""
        ...

    def add(self, item: ItemT_contra, key: Hashable) -> int:
        """Prepare the item; it takes its first step in the next pass. Raises for an item it cannot voice."""
        ...

    def remove(self, key: Hashable) -> None:
        """Drop a key (cancelled or failed); unknown keys are ignored."""
        ...

    def step_isolating(self, keys: Iterable[Hashable] | None = None) -> StepOutcome:
        """Advance every active item one step; a raising pass fails only the items that raise alone."""
        ...

    def finish(self, keys: Iterable[Hashable]) -> Sequence[OutT_co]:
        """Outputs of finished keys, in order, and release them."""
        ...

    def pass_cost(self, keys: Iterable[Hashable] | None = None) -> tuple[int, int]:
        """(rows, padded frames) of the next pass."""
        ...

    @property
    def active(self) -> int: ...


@dataclass(frozen=True)
class Load:
    """The scheduler's state as the planner sees it."""

    active: list[int]
    """Frames of each active item."""
    left: list[int]
    """Steps each active item has left."""
    queued: int
    first: list[bool] = field(default_factory=list)
    """Whether each active item is a first chunk (default: none is)."""


def weight(first: bool) -> float:
    return FIRST_WEIGHT if first else 1.0


class StepPlanner:
    def __init__(self, config: BatcherConfig, observer: BatchObserver, seed_steps: int = 32) -> None:
        self.config = config
        self.observer = observer
        self.seed_steps = seed_steps
        """Flow steps whole-batch warm-up timings are quoted at (``seed``, the fallback)."""
        self.costs = CostModel(config.default_batch_seconds / seed_steps)
        # Padding is bounded by the frame cap alone: a step's rows come and go, no length grouping.
        self.limits = policy.Limits(config.max_batch_size, config.max_batch_frames, 1.0)
        self.steps_seen = 0
        self.misses = policy.Misses()
        """How late admitted first chunks were against their prediction: admission's margin."""
        self.learning = True
        """Refine the curve from live steps. Off after ``seed`` (whole batches / steps include the vocoder
        and per-call overhead: mixed with live single passes they read as a steep curve); on after
        ``seed_passes``, whose samples are single passes like the live ones."""

    # -- the cost model -------------------------------------------------------------------------------

    def seed(self, samples: Iterable[CostSample | tuple[int, int, float]]) -> dict[int, float]:
        """Fallback: whole-batch warm-up timings at ``seed_steps`` steps, divided by the step count."""
        self._seed([CostSample(int(s[0]), int(s[1]), float(s[2]) / self.seed_steps) for s in samples])
        self.learning = False
        return self.export()

    def seed_passes(self, samples: Iterable[CostSample]) -> dict[int, float]:
        """Timed single step passes (``batching.step_worker.time_steps``): the same thing live steps measure."""
        self._seed(list(samples))
        self.learning = True
        return self.export()

    def _seed(self, samples: list[CostSample]) -> None:
        self.costs.seed(samples)
        self.costs.curve(STEP_KEY).fit()  # the live curve starts from (and keeps) the seed samples
        self.costs.last_key = STEP_KEY
        log.info("step cost model", extra={"coef": [f"{c:.3g}" for c in self.costs.seed_curve.coef],
                                           "frames": self.costs.typical_frames})

    def export(self) -> dict[int, float]:
        """Predicted seconds of one step per active count, to the observer's gauge (and the log)."""
        top = self.config.max_batch_size
        table = self.costs.table(sorted({s for s in (1, 2, 4, 8, 16, 32, 64) if s < top} | {top}))
        if isinstance(self.observer, CostObserver):
            self.observer.predicted_batch_seconds(table)
        log.info("predicted step seconds", extra={"predicted_step_s": table})
        return table

    def observe(self, size: int, frames: int, seconds: float) -> None:
        self.steps_seen += 1
        if not self.learning:
            return
        self.costs.curve(STEP_KEY).observe(CostSample(size, frames, seconds),
                                           refit=self.steps_seen % REFIT_EVERY == 0)
        self.costs.last_key = STEP_KEY
        if self.steps_seen % (64 * REFIT_EVERY) == 0:
            self.export()

    def step_seconds(self, size: int, frames: int) -> float:
        return self.costs.predict(STEP_KEY, max(1, size), frames)

    def split(self, frames: Sequence[int]) -> tuple[float, list[list[int]]]:
        """(predicted seconds, passes) of the cheapest way to step items of ``frames`` once: passes of
        consecutive lengths (indices into ``frames``, shortest first), each padded to its longest item."""
        order = sorted(range(len(frames)), key=frames.__getitem__)
        best, cut = [0.0] + [float("inf")] * len(order), [0] * (len(order) + 1)
        for end in range(1, len(order) + 1):
            longest = frames[order[end - 1]]
            for start in range(end):
                cost = best[start] + self.step_seconds(end - start, longest)
                if cost < best[end]:
                    best[end], cut[end] = cost, start
        passes, end = [], len(order)
        while end:
            passes.append(order[cut[end]:end])
            end = cut[end]
        return best[-1], passes[::-1]

    def round_seconds(self, frames: Sequence[int]) -> float:
        """Predicted seconds of one step of every item of ``frames`` (``split``'s passes)."""
        return self.split(frames)[0] if frames else 0.0

    # -- policy ---------------------------------------------------------------------------------------

    def joins(self, load: Load, frames: int, steps: int, first: bool) -> bool:
        """Whether a newcomer of ``frames`` × ``steps`` should take a free slot at the next step (caps are
        ``fits``'s job). Compares, over the ``k`` steps it would share with every active item, the
        newcomer's gain (it no longer waits ``min(left)`` steps for a slot) with the actives' loss (ΔT on
        each of those steps), each weighted by ``FIRST_WEIGHT`` for first chunks."""
        n = len(load.active)
        if n == 0 or self.config.policy == "fill":
            return True
        longest = max(load.active)
        now = self.round_seconds(load.active)
        delta = self.round_seconds([*load.active, frames]) - now
        slot = min(load.left)
        shared = min(steps, slot)
        gain = weight(first) * (slot * now - shared * delta)
        firsts = load.first or [False] * n
        loss = delta * shared * sum(weight(f) for f in firsts)
        if gain > loss:
            return True
        # Throughput for a long queue: only while padding stays bounded (the plan prices equal lengths).
        grown = max(longest, frames)
        padded = 1 - (sum(load.active) + frames) / (grown * (n + 1)) > self.config.max_padding
        return not padded and n < self.target(load, grown)

    def target(self, load: Load, frames: int) -> int:
        """The request policy's first batch over active + queued items: with a long queue, the
        concurrency that drains it soonest on average (1 on a compute-bound curve)."""
        # The first batch of a queue several batches long is already at the cap: plan no further (cheaper).
        items = min(len(load.active) + load.queued, 4 * self.config.max_batch_size)
        return policy.plan(max(1, items), frames, self.step_seconds, self.limits)[0]

    def fits(self, load: Load, frames: int) -> bool:
        """An item of ``frames`` may join: the model is idle, or the slots and frame cap leave room."""
        longest = max([*load.active, frames])
        size = len(load.active) + 1
        return not load.active or (size <= self.config.max_batch_size
                                   and longest * size <= self.config.max_batch_frames)

    # -- admission ------------------------------------------------------------------------------------

    def check_capacity(self, load: Load, queued: int, queued_frames: int, frames: int) -> None:
        """Refuse (``QueueFullError``, retry hint from the predicted backlog) when the queue is full."""
        config = self.config
        if queued >= config.max_queue:
            reason = f"queue is full ({config.max_queue} items)"
        elif queued_frames + frames > config.max_queue_frames and queued > 0:
            reason = f"queue is full ({config.max_queue_frames} frames)"
        else:
            return
        self.observer.rejected("queue_full")
        raise QueueFullError(reason, retry_after_ms=max(50, int(1000 * self.backlog(load, frames))))

    def backlog(self, load: Load, frames: int, steps: int | None = None) -> float:
        """Seconds until a newcomer (a first chunk) takes its first step: none when it would join at once;
        else until the next slot frees, plus the queue ahead drained at the planned concurrency."""
        steps = steps or self.seed_steps
        if self.joins_at_once(load, frames, steps):
            return 0.0
        longest = max([*load.active, frames])
        slot = min(load.left, default=0) * self.round_seconds(load.active)

        def per_item(size: int, padded: int) -> float:
            return steps * self.step_seconds(size, padded)

        return slot + policy.drain_seconds(load.queued, longest, per_item, self.limits)

    def joins_at_once(self, load: Load, frames: int, steps: int) -> bool:
        """A newcomer (a first chunk) takes a slot at the next step: none queued ahead of it, room for it
        (``fits``), and the join rule (``joins``) says so."""
        return load.queued == 0 and self.fits(load, frames) and self.joins(load, frames, steps, True)

    def arrived(self, load: Load, frames: int, steps: int, count: int) -> Load:
        """``load`` once ``count`` newcomers of ``frames`` × ``steps`` have arrived: each joins the active
        items where it would (``joins_at_once``), else queues."""
        for _ in range(count):
            if self.joins_at_once(load, frames, steps):
                load = Load([*load.active, frames], [*load.left, steps], 0,
                            [*(load.first or [False] * len(load.active)), True])
            else:
                load = replace(load, queued=load.queued + 1)
        return load

    def first_audio(self, load: Load, frames: int, steps: int) -> tuple[float, float]:
        """(backlog, predicted seconds to the newcomer's result)."""
        backlog = self.backlog(load, frames, steps)
        # Joining now: it steps with the active items; after a wait, with about as many as are active now.
        sharing = [*load.active, frames] if backlog == 0.0 else [*load.active[1:], frames]
        return backlog, backlog + steps * self.round_seconds(sharing)

    def admit(self, load: Load, frames: int, steps: int, promised: float = 0.0) -> float:
        """Refuse (``QueueFullError``) when the first audio would miss the budget because of the work
        ahead of it (``promised``: refused newcomers' work, ``policy.Promises``); as the request
        scheduler, an item too slow even alone is still served."""
        backlog, predicted = self.first_audio(load, frames, steps)
        return policy.within_budget(backlog + promised, predicted + promised, self.config.admission_ttfa_s,
                                    self.observer, self.misses.margin())
