"""A fake model for batcher tests: records every call, can be slow, blocked, or poisoned."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from batching import StepBatcher
from engine import SynthesisItem
from engine.step_adapter import EngineStepModel
from engine.step_sampler import StepResult

if TYPE_CHECKING:
    from tests.conftest import LiveServer


@dataclass(frozen=True)
class FakeItem:
    id: int
    cost: int = 100
    key: str = "a"
    poison: bool = False


class PoisonError(RuntimeError):
    pass


@dataclass
class FakeModel:
    delay_s: float = 0.0
    per_item_s: float = 0.0
    calls: list[list[int]] = field(default_factory=list)
    gate: threading.Event | None = None
    """When set, each call blocks until the gate opens (to hold the model busy)."""
    started: threading.Event = field(default_factory=threading.Event)
    wrong_count: bool = False

    def synthesize(self, items: Sequence[FakeItem]) -> list[tuple[str, int]]:
        self.calls.append([i.id for i in items])
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.delay_s + self.per_item_s * len(items))
        if any(i.poison for i in items):
            raise PoisonError(f"poison in {[i.id for i in items]}")
        out = [("out", i.id) for i in items]
        return out[:-1] if self.wrong_count else out

    def cost(self, item: FakeItem) -> int:
        return item.cost

    def batch_key(self, item: FakeItem) -> str:
        return item.key

    def ran(self) -> list[int]:
        return [i for call in self.calls for i in call]


@dataclass
class CurveModel(FakeModel):
    """A fake model whose batch takes ``curve(size, longest item)`` seconds: a scripted cost curve."""

    curve: Callable[[int, int], float] = lambda size, frames: 0.0

    def synthesize(self, items: Sequence[FakeItem]) -> list[tuple[str, int]]:
        self.delay_s = self.curve(len(items), max(i.cost for i in items))
        return super().synthesize(items)


@dataclass
class RecordingObserver:
    depths: list[tuple[int, int]] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    batches: list[tuple[int, float, int, int]] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)
    predictions: list[dict[int, float]] = field(default_factory=list)

    def queue_depth(self, items: int, frames: int) -> None:
        self.depths.append((items, frames))

    def queue_wait(self, seconds: float) -> None:
        self.waits.append(seconds)

    def batch_done(self, size: int, seconds: float, padded_frames: int, real_frames: int) -> None:
        self.batches.append((size, seconds, padded_frames, real_frames))

    def rejected(self, reason: str) -> None:
        self.rejections.append(reason)

    def predicted_batch_seconds(self, by_size: Mapping[int, float]) -> None:
        self.predictions.append(dict(by_size))


class Gate:
    """Holds every model batch (or step pass) until opened: the fault a test needs to fill the queue or time
    items out."""

    def __init__(self, live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.event = threading.Event()
        self.entered = threading.Event()
        engine = live.state.runtime.engine
        assert engine is not None
        original = engine.synthesize

        def gated(items: Sequence[SynthesisItem]) -> list[np.ndarray]:
            self.entered.set()
            self.event.wait(20)
            return original(items)

        monkeypatch.setattr(engine, "synthesize", gated)
        model = getattr(live.state.runtime.batcher, "model", None)
        if isinstance(model, EngineStepModel):  # --scheduler step: hold every step pass instead
            step = model.step_isolating

            def gated_step(keys: Iterable[Hashable] | None = None) -> StepResult:
                self.entered.set()
                self.event.wait(20)
                return step(keys)

            monkeypatch.setattr(model, "step_isolating", gated_step)

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 10)


async def until_steps(batcher: StepBatcher[Any, Any], steps: int) -> None:
    """Wait until the step scheduler has taken ``steps`` steps."""
    while batcher.steps_run < steps:
        await asyncio.sleep(0.002)
