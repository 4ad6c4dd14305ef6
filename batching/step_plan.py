"""What the step scheduler asks of a model, and how it prices a step (no torch, no I/O).

The cost model (``batching.cost``) and batch policy (``batching.policy``) of the request scheduler, priced
per flow step: one curve, seconds of one step as a function of (items stepping together, padded frames),
seeded from the warm-up's whole-batch timings divided by their step count and refined from every step.

How many items should step together is the policy's first batch size for the items in the system (active
and queued): the plan that minimises their summed completion time, so a compute-bound curve keeps near
one item at a time (a first-in-first-out queue, no processor sharing that delays everyone), a flat one
fills every slot, and in between the concurrency grows with the queue.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from batching import policy
from batching.config import BatcherConfig
from batching.cost import CostModel, CostSample
from batching.errors import QueueFullError
from batching.protocol import BatchObserver, CostObserver

log = logging.getLogger("batching.stepping")

ItemT_contra = TypeVar("ItemT_contra", contravariant=True)
OutT_co = TypeVar("OutT_co", covariant=True)
STEP_KEY = "step"
"""Items of any step count, CFG or sway share a pass: one cost curve."""
REFIT_EVERY = 8
"""Steps between cost-model refits: a fit per step would cost the event loop more than it learns."""


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
    """What the step scheduler needs from a model; ``engine.step_model.EngineStepModel`` satisfies it.
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


class StepPlanner:
    def __init__(self, config: BatcherConfig, observer: BatchObserver, seed_steps: int = 32) -> None:
        self.config = config
        self.observer = observer
        self.seed_steps = seed_steps
        """Flow steps the warm-up timings are quoted at."""
        self.costs = CostModel(config.default_batch_seconds / seed_steps)
        # Padding is bounded by the frame cap alone: a step's rows come and go, no length grouping.
        self.limits = policy.Limits(config.max_batch_size, config.max_batch_frames, 1.0)
        self.steps_seen = 0
        self.learning = True
        """Refine the curve from live steps. Off once seeded: warm-up timings are whole batches / steps
        (vocoder and per-call overhead included), a live step is one DiT pass; mixed in one fit, the
        cheap live size-1 steps beside seeded larger sizes read as a steep curve and pin singles."""

    # -- the cost model -------------------------------------------------------------------------------

    def seed(self, samples: Iterable[CostSample | tuple[int, int, float]]) -> dict[int, float]:
        self.costs.seed(CostSample(int(s[0]), int(s[1]), float(s[2]) / self.seed_steps) for s in samples)
        self.costs.last_key = STEP_KEY
        self.learning = False
        table = self.export()
        log.info("step cost model", extra={"coef": [f"{c:.3g}" for c in self.costs.seed_curve.coef],
                                           "frames": self.costs.typical_frames, "predicted_step_s": table})
        return table

    def export(self) -> dict[int, float]:
        """Predicted seconds of one step per active count, to the observer's gauge."""
        top = self.config.max_batch_size
        table = self.costs.table(sorted({s for s in (1, 2, 4, 8, 16, 32, 64) if s < top} | {top}))
        if isinstance(self.observer, CostObserver):
            self.observer.predicted_batch_seconds(table)
        return table

    def observe(self, size: int, frames: int, seconds: float) -> None:
        self.steps_seen += 1
        if not self.learning:
            return
        self.costs.curve(STEP_KEY).observe(CostSample(size, frames, seconds),
                                           refit=self.steps_seen % REFIT_EVERY == 0)
        self.costs.last_key = STEP_KEY
        if self.steps_seen % (16 * REFIT_EVERY) == 0:
            self.export()

    def step_seconds(self, size: int, frames: int) -> float:
        return self.costs.predict(STEP_KEY, max(1, size), frames)

    # -- policy ---------------------------------------------------------------------------------------

    def target(self, load: Load, frames: int) -> int:
        """How many items should step together now: the policy's first batch over active + queued."""
        if self.config.policy == "fill":
            return self.config.max_batch_size
        items = len(load.active) + load.queued
        return policy.plan(max(1, items), frames, self.step_seconds, self.limits)[0]

    def fits(self, load: Load, frames: int) -> bool:
        """An item of ``frames`` may join: the model is idle, or items × longest stays within the cap."""
        longest = max([*load.active, frames])
        return not load.active or longest * (len(load.active) + 1) <= self.config.max_batch_frames

    # -- admission ------------------------------------------------------------------------------------

    def backlog(self, load: Load, frames: int) -> float:
        """Seconds until a newcomer of ``frames`` takes its first step: when no slot is free, until the
        first active item finishes, plus the queue ahead drained at the planned concurrency."""
        with_it = Load(load.active, load.left, load.queued + 1)
        if len(load.active) + load.queued < self.target(with_it, frames):
            return 0.0
        longest = max([*load.active, frames])
        steps = max(load.left, default=self.seed_steps)
        slot = min(load.left, default=0) * self.step_seconds(len(load.active), longest)

        def per_item(size: int, padded: int) -> float:
            return steps * self.step_seconds(size, padded)

        return slot + policy.drain_seconds(load.queued, longest, per_item, self.limits)

    def first_audio(self, load: Load, frames: int, steps: int) -> tuple[float, float]:
        """(backlog, predicted seconds to the newcomer's result)."""
        with_it = Load(load.active, load.left, load.queued + 1)
        backlog = self.backlog(load, frames)
        concurrency = min(self.target(with_it, frames), len(load.active) + load.queued + 1)
        return backlog, backlog + steps * self.step_seconds(concurrency, max([*load.active, frames]))

    def admit(self, load: Load, frames: int, steps: int) -> float:
        """Refuse (``QueueFullError``) when the first audio would miss the budget because of the work
        ahead of it; as the request scheduler, an item too slow even alone is still served."""
        backlog, predicted = self.first_audio(load, frames, steps)
        over = min(predicted - self.config.admission_ttfa_s, backlog)
        if over > 0:
            self.observer.rejected("over_budget")
            raise QueueFullError(f"first audio predicted in {predicted:.1f} s, over the "
                                 f"{self.config.admission_ttfa_s:.1f} s budget",
                                 retry_after_ms=max(50, int(1000 * over)))
        return predicted
