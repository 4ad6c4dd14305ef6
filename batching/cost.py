"""The cost model: predicted seconds of one model batch, learned from the batcher's own measurements.

A batch of ``size`` items, each padded to ``frames`` frames, is modelled as

    seconds = (c0 + c1 · size·frames + c2 · size·frames²) · ratio[size bucket]

c0 is the per-pass overhead (kernel launches, Python, per-step bookkeeping): what batching shares.
c1 is work linear in padded frames (projections, convolutions, the vocoder); c2 is attention, quadratic
in sequence length. A CPU is mostly c1/c2 (batching gains little); a GPU is mostly c0 until it saturates.
One straight line cannot follow a GPU that is flat up to some size and then bends, so each size bucket
keeps a shrunk observed/fitted ratio on top of the fit.

The fit is a non-negative least squares over a bounded set of recent samples, a few per (size, length)
bucket: seeded at startup from timed warm-up passes, refined from every batch. Buckets that live
traffic visits are refreshed; the others keep their warm-up samples, so a server that runs singles for
an hour still remembers what a batch of 8 costs. The warm-up samples keep their shape but follow the level
of live traffic: each live batch's seconds ÷ what the seed alone predicts for its shape, the median of
the last ``LEVEL_WINDOW``, scales every seed sample still in the fit. A seed timed while the machine was
busy (another replica warming up beside it, then kept by ``server.core.seed_cache``) or a machine that
has since slowed down is thus corrected by the first batches instead of pricing untouched sizes wrong for
the server's lifetime. A small ridge pulls c1 and c2 towards zero, so with too few distinct shapes the
model reads "flat" (batching is free), which is today's fill behaviour and lets the batcher explore.
Each batch key (step count, CFG...) has its own curve, started from the seed curve.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable
from typing import NamedTuple

import numpy as np

PER_BUCKET = 4
"""Samples kept per (size, length) bucket: recent enough to follow drift, enough to average noise."""
RIDGE = 1e-3
"""Pull of c1, c2 towards 0 (in column-normalised units): decides only when the data cannot."""
RATIO_PRIOR = 2.0
"""Pseudo-samples at ratio 1 in each size bucket's correction: one noisy batch cannot swing it far."""
RATIO_RANGE = (0.5, 2.0)
LEVEL_WINDOW = 16
"""Live batches the seed's level follows (median of their observed ÷ seed-predicted seconds)."""


class CostSample(NamedTuple):
    size: int
    frames: int
    """Padded frames per item (the batch's longest item)."""
    seconds: float


def size_bucket(size: int) -> int:
    """1, 2, 3-4, 5-8, 9-16, ...: batch shapes a GPU treats alike."""
    return max(1, size).bit_length()


def _length_bucket(frames: int) -> int:
    return int(2 * math.log2(max(frames, 1)))  # half-octaves


class CostCurve:
    """Predicted seconds per batch for one batch key."""

    def __init__(self, default_seconds: float = 0.5) -> None:
        self.default_seconds = default_seconds
        self.coef = (default_seconds, 0.0, 0.0)
        self.ratios: dict[int, float] = {}
        self._buckets: dict[tuple[int, int], deque[tuple[CostSample, bool]]] = {}
        """Recent samples per (size, length) bucket, each with whether it is a seed sample."""
        self._seed_fit: tuple[tuple[float, float, float], dict[int, float]] | None = None
        """The fit of the seed samples alone (``freeze_seed``): what the level is measured against."""
        self._levels: deque[float] = deque(maxlen=LEVEL_WINDOW)
        self.level = 1.0
        """Live seconds ÷ seed-predicted seconds (median of recent batches): the seed samples' scale."""

    @property
    def samples(self) -> list[CostSample]:
        """The samples the fit uses, seed samples at the live level."""
        return [CostSample(s.size, s.frames, s.seconds * self.level) if seed else s
                for bucket in self._buckets.values() for s, seed in bucket]

    def copy(self) -> CostCurve:
        clone = CostCurve(self.default_seconds)
        clone.coef, clone.ratios = self.coef, dict(self.ratios)
        clone._buckets = {k: deque(v, maxlen=PER_BUCKET) for k, v in self._buckets.items()}
        clone._seed_fit, clone.level = self._seed_fit, self.level
        clone._levels = deque(self._levels, maxlen=LEVEL_WINDOW)
        return clone

    def observe(self, sample: CostSample, refit: bool = True, seed: bool = False) -> None:
        """A timed batch (``seed``: a warm-up timing, whose level live batches correct)."""
        if sample.size < 1 or sample.frames < 1 or not sample.seconds > 0:
            return  # a failed or empty batch says nothing about cost
        if not seed and self._seed_fit is not None:
            expected = _evaluate(*self._seed_fit, sample.size, sample.frames)
            if expected > 0:
                self._levels.append(sample.seconds / expected)
                self.level = sorted(self._levels)[len(self._levels) // 2]
        key = (size_bucket(sample.size), _length_bucket(sample.frames))
        self._buckets.setdefault(key, deque(maxlen=PER_BUCKET)).append((sample, seed))
        if refit:
            self.fit()

    def freeze_seed(self) -> None:
        """Fit the (seed) samples held now and measure every later live batch against that fit."""
        self.fit()
        self._seed_fit = (self.coef, dict(self.ratios))
        self._levels.clear()
        self.level = 1.0

    def predict(self, size: int, frames: int) -> float:
        # A batch never costs less than a smaller one: noisy timings in one size bucket (a busy machine at
        # warm-up) must not price a batch of 2 under a batch of 1, or the planner would chase the noise.
        return _evaluate(self.coef, self.ratios, size, frames)

    def fit(self) -> None:
        samples = self.samples
        if not samples:
            return
        x = np.array([[1.0, s.size * s.frames, s.size * s.frames**2] for s in samples])
        y = np.array([s.seconds for s in samples])
        self.coef = _nnls_ridge(x, y)
        self.ratios = self._bucket_ratios(samples)

    def _bucket_ratios(self, samples: list[CostSample]) -> dict[int, float]:
        c0, c1, c2 = self.coef
        sums: dict[int, list[float]] = {}
        for s in samples:
            fitted = c0 + c1 * s.size * s.frames + c2 * s.size * s.frames**2
            if fitted > 0:
                sums.setdefault(size_bucket(s.size), []).append(s.seconds / fitted)
        low, high = RATIO_RANGE
        return {b: min(high, max(low, (sum(r) + RATIO_PRIOR) / (len(r) + RATIO_PRIOR))) for b, r in sums.items()}


def _evaluate(coef: tuple[float, float, float], ratios: dict[int, float], size: int, frames: int) -> float:
    """A fit's seconds for ``size`` items of ``frames``: never under a smaller size bucket's."""
    def bucket_cost(n: int) -> float:
        c0, c1, c2 = coef
        work = n * frames
        return (c0 + c1 * work + c2 * work * frames) * ratios.get(size_bucket(n), 1.0)

    bucket = size_bucket(size)
    return max([bucket_cost(size), *(bucket_cost(1 << (b - 1)) for b in ratios if b < bucket)])


def _nnls_ridge(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least squares with all coefficients >= 0 and a ridge on the slopes. Three unknowns: trying every
    subset of free coefficients is exact, and cheaper to read than an active-set solver."""
    scale = np.maximum(np.abs(x).max(axis=0), 1e-12)
    y_scale = max(float(np.abs(y).max()), 1e-12)
    xs, ys = x / scale, y / y_scale
    ridge = np.sqrt(RIDGE * len(y)) * np.diag([0.0, 1.0, 1.0])
    xa, ya = np.vstack([xs, ridge]), np.concatenate([ys, np.zeros(3)])
    best: tuple[float, np.ndarray] | None = None
    for free in itertools.chain.from_iterable(itertools.combinations(range(3), n) for n in (1, 2, 3)):
        cols = list(free)
        solution, *_ = np.linalg.lstsq(xa[:, cols], ya, rcond=None)
        if (solution < 0).any():
            continue
        coef = np.zeros(3)
        coef[cols] = solution
        residual = float(np.sum((xa @ coef - ya) ** 2))
        if best is None or residual < best[0]:
            best = (residual, coef)
    assert best is not None  # a single column always has a non-negative solution for y >= 0
    coef = best[1] * y_scale / scale
    return float(coef[0]), float(coef[1]), float(coef[2])


class CostModel:
    """Curves per batch key. A key seen for the first time starts from the seed curve (the warm-up fit,
    already scaled by the engine to the served step count) and then learns from its own batches."""

    def __init__(self, default_seconds: float = 0.5, max_keys: int = 16) -> None:
        self.seed_curve = CostCurve(default_seconds)
        self._curves: OrderedDict[Hashable, CostCurve] = OrderedDict()
        self._max_keys = max_keys
        self.last_key: Hashable | None = None
        self.typical_frames = 0
        """Recent per-item padded frames (EWMA): the length the exported predictions are quoted at."""

    def seed(self, samples: Iterable[CostSample | tuple[int, int, float]]) -> None:
        for sample in samples:
            self.seed_curve.observe(CostSample(*sample), refit=False, seed=True)
            self._track_frames(int(sample[1]))
        self.seed_curve.freeze_seed()
        self._curves.clear()  # keys seen before the seed restart from it

    def observe(self, key: Hashable, size: int, frames: int, seconds: float) -> None:
        self.curve(key).observe(CostSample(size, frames, seconds))
        self.last_key = key
        self._track_frames(frames)

    def predict(self, key: Hashable, size: int, frames: int) -> float:
        curve = self._curves.get(key, self.seed_curve)
        return curve.predict(size, frames)

    def curve(self, key: Hashable) -> CostCurve:
        curve = self._curves.get(key)
        if curve is None:
            curve = self._curves[key] = self.seed_curve.copy()
            if len(self._curves) > self._max_keys:
                self._curves.popitem(last=False)
        self._curves.move_to_end(key)
        return curve

    def table(self, sizes: Iterable[int], frames: int | None = None) -> dict[int, float]:
        """Predicted seconds per batch size, for the most recently used key at the typical length."""
        frames = frames or self.typical_frames or 1
        curve = self._curves.get(self.last_key, self.seed_curve)
        return {size: round(curve.predict(size, frames), 4) for size in sizes}

    def _track_frames(self, frames: int) -> None:
        self.typical_frames = frames if not self.typical_frames else round(0.9 * self.typical_frames + 0.1 * frames)
