"""Binds the step batcher's ``StepModel`` protocol (``batching.step_planner``) to the engine.

``StepSampler`` already is the model; this adds what the scheduler asks of an item before it joins (its
frames and step count, answered on the event loop from the engine's pure planning functions).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import numpy as np

from engine.step_sampler import StepResult, StepSampler
from engine.synthesis import Engine, SynthesisItem


class EngineStepModel:
    """``StepSampler`` over ``engine``; not thread-safe (the scheduler calls it from its worker only)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sampler = StepSampler(engine)

    def cost(self, item: SynthesisItem) -> int:
        return self.engine.cost(item)

    def steps(self, item: SynthesisItem) -> int:
        return item.nfe_steps

    def add(self, item: SynthesisItem, key: Hashable) -> int:
        return self.sampler.add(item, key)

    def remove(self, key: Hashable) -> None:
        self.sampler.remove(key)

    def step_isolating(self, keys: Iterable[Hashable] | None = None) -> StepResult:
        return self.sampler.step_isolating(keys)

    def finish(self, keys: Iterable[Hashable]) -> list[np.ndarray]:
        return self.sampler.finish(keys)

    def pass_cost(self, keys: Iterable[Hashable] | None = None) -> tuple[int, int]:
        return self.sampler.pass_cost(keys)

    @property
    def active(self) -> int:
        return self.sampler.active
