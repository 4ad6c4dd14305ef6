"""An emulated model for the scheduler benchmark (never for serving): the engine's batch and step
interfaces, answered by sleeping for a cost curve given as data.

    python -m bench.scheduler --model emulated:launch ...              # flat to 8 rows, then linear
    python -m bench.scheduler --model emulated:1=0.01,8=0.01,16=0.02   # seconds of one step by pass size

The curve is the seconds of one flow step of a pass of n items (piecewise linear between the given
points, linear beyond the last two). A whole batch of ``steps`` steps costs ``steps + 1`` steps (the
vocoder as one more). Text, voices, chunking, frame counts and audio lengths come from the real tiny
engine (pure functions), so the scheduler sees the same items as on the real model; the audio is
silence of the right length. This is how a GPU-shaped curve runs the real scheduler code in real time on a
CPU: figures from it are emulation, labelled so.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine import Engine, SynthesisItem, Voice

PRESETS = {
    # Launch-bound (a GPU below saturation): a step of up to 8 items costs what one costs, then linear.
    "launch": "1=0.010,8=0.010,16=0.020,32=0.040",
    # Compute-bound: every item costs the same again (batching shares nothing).
    "linear": "1=0.010,2=0.020,16=0.160",
}


def parse_curve(spec: str) -> list[tuple[int, float]]:
    """``launch``, ``linear`` or ``SIZE=SECONDS,...`` (at least two points, sizes increasing)."""
    points = sorted((int(size), float(seconds)) for size, seconds in
                    (part.split("=") for part in PRESETS.get(spec, spec).split(",")))
    if len(points) < 2 or any(s <= 0 for _, s in points):
        raise ValueError(f"a curve needs two or more SIZE=SECONDS points with seconds > 0, got {spec!r}")
    return points


def step_seconds(curve: Sequence[tuple[int, float]], size: int) -> float:
    """Seconds of one step of ``size`` items: the first point's below it, linear between and beyond."""
    if size <= curve[0][0]:
        return curve[0][1]
    at = min(bisect.bisect_left([s for s, _ in curve], size), len(curve) - 1)
    (n0, t0), (n1, t1) = curve[at - 1], curve[at]
    return t0 + (t1 - t0) * (size - n0) / (n1 - n0)


class EmulatedEngine:
    """``Engine`` for the benchmark: the tiny engine's planning, a sleeping model."""

    def __init__(self, engine: Engine, spec: str) -> None:
        self.real = engine
        self.spec = spec
        self.curve = parse_curve(spec)
        self.device = engine.device
        self.sample_rate = engine.sample_rate
        self.warmup_seconds = 0.0

    def __getattr__(self, name: str) -> object:  # text, voices, chunking: the real engine's
        return getattr(self.real, name)

    def silence(self, item: SynthesisItem) -> np.ndarray:
        return np.zeros(int(self.real.audio_seconds(item) * self.sample_rate), dtype=np.float32)

    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        steps = max(item.nfe_steps for item in items)
        time.sleep((steps + 1) * step_seconds(self.curve, len(items)))
        return [self.silence(item) for item in items]

    def warmup(self, batch_sizes: Sequence[int], nfe_steps: int = 2, voice: Voice | None = None,
               target_steps: int = 32) -> list[tuple[int, int, float]]:
        """The timings a warm-up would measure, without the sleeping: the curve itself."""
        voice = voice or self.real.default_voice()
        frames = self.real.cost(SynthesisItem("Warming up the model.", voice, nfe_steps=target_steps))
        return [(n, frames, (target_steps + 1) * step_seconds(self.curve, n)) for n in batch_sizes]

    def step_model(self) -> EmulatedStepModel:
        return EmulatedStepModel(self)


@dataclass
class EmulatedOutcome:
    finished: list[Hashable]
    failed: dict[Hashable, BaseException] = field(default_factory=dict)


class EmulatedStepModel:
    """``batching.StepModel`` over the emulated engine: each item counts its steps down."""

    def __init__(self, engine: EmulatedEngine) -> None:
        self.engine = engine
        self._left: dict[Hashable, int] = {}
        self._items: dict[Hashable, SynthesisItem] = {}

    def cost(self, item: SynthesisItem) -> int:
        return self.engine.real.cost(item)

    def steps(self, item: SynthesisItem) -> int:
        return item.nfe_steps

    def add(self, item: SynthesisItem, key: Hashable) -> int:
        self._left[key], self._items[key] = item.nfe_steps, item
        return self.cost(item)

    def remove(self, key: Hashable) -> None:
        self._left.pop(key, None)
        self._items.pop(key, None)

    def step_isolating(self, keys: Iterable[Hashable] | None = None) -> EmulatedOutcome:
        chosen = [k for k in (self._left if keys is None else keys) if self._left.get(k, 0) > 0]
        if chosen:
            time.sleep(step_seconds(self.engine.curve, len(chosen)))
        for key in chosen:
            self._left[key] -= 1
        return EmulatedOutcome([k for k in chosen if self._left[k] == 0])

    def finish(self, keys: Iterable[Hashable]) -> list[np.ndarray]:
        keys = list(keys)
        if keys:
            time.sleep(step_seconds(self.engine.curve, len(keys)))  # the vocoder
        waves = [self.engine.silence(self._items[k]) for k in keys]
        for key in keys:
            self.remove(key)
        return waves

    def pass_cost(self, keys: Iterable[Hashable] | None = None) -> tuple[int, int]:
        chosen = [k for k in (self._left if keys is None else keys) if self._left.get(k, 0) > 0]
        return len(chosen), max((self.cost(self._items[k]) for k in chosen), default=0)

    @property
    def active(self) -> int:
        return sum(1 for left in self._left.values() if left > 0)
