"""The step scheduler (``--scheduler step``) on the real tiny engine: joins mid-run, exactness
against solo runs, cancellation, deadlines, fault isolation, refusal, steps split by length; and the join
rule and split on scripted step cost curves. The server tests run both schedulers side by side
(tests/test_ws_stream.py)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Hashable, Iterable

import numpy as np
import pytest

from batching import BatcherConfig, NullObserver, QueueFullError, QueueTimeoutError, StepBatcher
from batching.step_planner import Load, StepPlanner
from engine import Engine, SynthesisItem, Voice
from engine.step_adapter import EngineStepModel
from engine.step_sampler import StepSampler
from tests.fakes import until_steps

TOLERANCE = 1e-3
LONG = "This one is a rather long sentence, so that it takes many flow steps to finish."
CONFIG = BatcherConfig(scheduler="step", queue_timeout_s=20.0)


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


class RecordingModel(EngineStepModel):
    """The real model, remembering which items it was given (to prove an expired one never was)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.added: list[str] = []

    def add(self, item: SynthesisItem, key: Hashable) -> int:
        self.added.append(item.text)
        return super().add(item, key)


class PoisonSampler(StepSampler):
    """Any pass holding an item whose text starts with "Poison" raises (a model fault on one input)."""

    def step(self, keys: Iterable[Hashable] | None = None) -> list[Hashable]:
        chosen = list(self._flows) if keys is None else list(keys)
        if any(self._flows[k].item.text.startswith("Poison") for k in chosen if k in self._flows):
            raise RuntimeError("poisoned pass")
        return super().step(chosen)


async def started_batcher(model: EngineStepModel, config: BatcherConfig = CONFIG) -> StepBatcher[SynthesisItem,
                                                                                                  np.ndarray]:
    batcher: StepBatcher[SynthesisItem, np.ndarray] = StepBatcher(model, config)
    await batcher.start()
    return batcher


@pytest.mark.slow
async def test_staggered_items_equal_solo_and_join_mid_run(engine: Engine, voice_en: Voice, voice_zh: Voice) -> None:
    items = [
        SynthesisItem(LONG, voice_en, nfe_steps=8, seed=1),
        SynthesisItem("Hi there.", voice_zh, nfe_steps=4, cfg_strength=1.5, seed=2),
        SynthesisItem("Short one here.", voice_en, nfe_steps=5, cfg_strength=0.0, seed=3),
        SynthesisItem("Mid length text, with words.", voice_zh, nfe_steps=6, sway_sampling_coef=0.5, seed=4),
    ]
    solo = [engine.synthesize([item])[0] for item in items]
    batcher = await started_batcher(EngineStepModel(engine))
    try:
        tickets = [batcher.submit(items[0], first=True)]
        for at, item in zip((2, 3, 4), items[1:], strict=True):  # each joins after the long one's n-th step
            await until_steps(batcher, at)
            tickets.append(batcher.submit(item, first=True))
        await tickets[1].started.wait()
        assert not tickets[0].future.done()  # the late arrival started while the long item was running
        await tickets[1].future
        assert not tickets[0].future.done()  # ... and finished before it: it joined mid-run
        waves = await asyncio.gather(*(t.future for t in tickets))
    finally:
        await batcher.close()
    errors = [rel_l2(w, ref) for w, ref in zip(waves, solo, strict=True)]
    assert max(errors) <= TOLERANCE, errors
    assert batcher.running == 0 and batcher.queued == 0


@pytest.mark.slow
async def test_cancel_mid_run_leaves_at_next_step(engine: Engine, voice_en: Voice) -> None:
    model = EngineStepModel(engine)
    other = SynthesisItem("Hello there.", voice_en, nfe_steps=4, seed=5)
    batcher = await started_batcher(model)
    try:
        doomed = batcher.submit(SynthesisItem(LONG, voice_en, nfe_steps=8, seed=6))
        await until_steps(batcher, 2)
        assert doomed.cancel() and batcher.running == 0
        wave = await batcher.run(other)
        assert await batcher.call_in_worker(lambda: model.sampler.keys()) == []  # removed from the model
    finally:
        await batcher.close()
    assert rel_l2(wave, engine.synthesize([other])[0]) <= TOLERANCE


@pytest.mark.slow
async def test_deadline_expires_in_queue_without_reaching_model(engine: Engine, voice_en: Voice) -> None:
    model = RecordingModel(engine)
    batcher = await started_batcher(model, dataclasses.replace(CONFIG, max_batch_size=1))
    try:
        running = batcher.submit(SynthesisItem(LONG, voice_en, nfe_steps=8, seed=7))
        late = batcher.submit(SynthesisItem("Too late.", voice_en, nfe_steps=4, seed=8), timeout_s=0.05)
        with pytest.raises(QueueTimeoutError):
            await late.future
        await running.future
    finally:
        await batcher.close()
    assert model.added == [LONG]


@pytest.mark.slow
async def test_poison_item_fails_alone(engine: Engine, voice_en: Voice) -> None:
    model = EngineStepModel(engine)
    model.sampler = PoisonSampler(engine)
    good = [SynthesisItem(f"Good item number {n}.", voice_en, nfe_steps=4, seed=n) for n in range(2)]
    batcher = await started_batcher(model)
    try:
        tickets = [batcher.submit(good[0]), batcher.submit(SynthesisItem("Poison here.", voice_en, nfe_steps=4)),
                   batcher.submit(good[1])]
        results = await asyncio.gather(*(t.future for t in tickets), return_exceptions=True)
    finally:
        await batcher.close()
    assert isinstance(results[1], RuntimeError)
    for item, wave in zip(good, (results[0], results[2]), strict=True):
        assert isinstance(wave, np.ndarray) and rel_l2(wave, engine.synthesize([item])[0]) <= TOLERANCE


async def test_queue_full_refuses_at_once(engine: Engine, voice_en: Voice) -> None:
    batcher: StepBatcher[SynthesisItem, np.ndarray] = StepBatcher(
        EngineStepModel(engine), dataclasses.replace(CONFIG, max_queue=1))  # not started: the queue stays
    item = SynthesisItem("Hello.", voice_en, nfe_steps=4)
    batcher.submit(item, first=True)
    with pytest.raises(QueueFullError) as refused:
        batcher.submit(item, first=True)
    assert refused.value.retry_after_ms > 0 and batcher.queued == 1
    await batcher.close(drain=False)


def planner_with(curve: Callable[[int], float], max_batch_size: int = 8) -> StepPlanner:
    """A planner whose step cost is the scripted ``curve(n)`` (seconds of one pass of n items)."""
    planner = StepPlanner(BatcherConfig(scheduler="step", max_batch_size=max_batch_size), NullObserver(), 16)
    planner.step_seconds = lambda size, frames: curve(max(1, size))  # type: ignore[method-assign]
    return planner


def test_join_rule_follows_the_step_cost_curve() -> None:
    running = Load(active=[300], left=[10], queued=0)
    assert planner_with(lambda n: 0.01).joins(running, 300, 16, first=False)  # free: join at once
    linear = planner_with(lambda n: 0.01 * n)  # compute-bound: sharing slows the runner, speeds no one
    assert not linear.joins(running, 300, 16, first=False)
    assert not linear.joins(running, 300, 16, first=True)
    assert linear.joins(running, 300, 4, first=False)  # ... unless it is short: it need not wait 10 steps
    assert linear.joins(Load([], [], 0), 300, 16, first=False)  # an idle model takes anyone


def test_join_rule_weighs_first_chunks_and_keeps_caps() -> None:
    between = planner_with(lambda n: 0.01 + 0.007 * (n - 1))  # batching pays a little
    three_later = Load(active=[300] * 3, left=[10, 12, 14], queued=0, first=[False] * 3)
    assert between.joins(three_later, 300, 16, first=True)  # a first chunk joins later chunks
    assert not between.joins(Load([300] * 3, [10, 12, 14], 0, [True] * 3), 300, 16, first=False)
    full = Load(active=[300] * 8, left=[10] * 8, queued=0)
    assert between.fits(Load([300], [10], 0), 300) and not between.fits(full, 300)  # max_batch_size
    assert not planner_with(lambda n: 0.01).fits(Load([30_000], [10], 0), 30_000)  # max_batch_frames


@pytest.mark.slow
async def test_seed_times_single_step_passes_per_size_and_length(engine: Engine, voice_en: Voice) -> None:
    model = EngineStepModel(engine)
    batcher: StepBatcher[SynthesisItem, np.ndarray] = StepBatcher(model, CONFIG)
    items = [SynthesisItem("Hi.", voice_en, nfe_steps=4), SynthesisItem(LONG, voice_en, nfe_steps=4)]
    table = await batcher.seed_step_costs(items, [1, 2])
    samples = batcher.costs.seed_curve.samples
    assert sorted((s.size, s.frames) for s in samples) == sorted(
        (size, engine.cost(item)) for item in items for size in (1, 2))
    assert all(s.seconds > 0 for s in samples) and table[1] > 0 and batcher.planner.learning
    assert await batcher.call_in_worker(lambda: model.sampler.keys()) == []  # the timing items are gone
    await batcher.close(drain=False)


def test_split_cuts_a_step_by_length_where_the_curve_says_so() -> None:
    frames = [100, 400, 110, 390]
    cpu = planner_with(lambda n: 0.0)  # a small fixed cost per pass, the rest grows with padded frames
    cpu.step_seconds = lambda size, frames: 1e-3 + 1e-5 * size * frames  # type: ignore[method-assign]
    seconds, passes = cpu.split(frames)
    assert passes == [[0, 2], [3, 1]] and seconds == pytest.approx(2e-3 + 1e-5 * (2 * 110 + 2 * 400))
    launch_bound = planner_with(lambda n: 0.0)  # a GPU: the pass's fixed cost dwarfs the padding
    launch_bound.step_seconds = lambda size, frames: 0.01 + 1e-7 * size * frames  # type: ignore[method-assign]
    assert launch_bound.split(frames)[1] == [[0, 2, 3, 1]]
    assert cpu.split([]) == (0.0, [])


class PassSizes(NullObserver):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def batch_done(self, size: int, seconds: float, padded_frames: int, real_frames: int) -> None:
        self.sizes.append(size)


@pytest.mark.slow
async def test_a_step_split_by_length_keeps_every_item_exact(engine: Engine, voice_en: Voice) -> None:
    items = [SynthesisItem("Hi there.", voice_en, nfe_steps=6, seed=21),
             SynthesisItem(LONG + " " + LONG, voice_en, nfe_steps=6, seed=22),
             SynthesisItem("Hello you.", voice_en, nfe_steps=6, seed=23)]
    solo = [engine.synthesize([item])[0] for item in items]
    sizes = PassSizes()
    batcher: StepBatcher[SynthesisItem, np.ndarray] = StepBatcher(
        EngineStepModel(engine), dataclasses.replace(CONFIG, policy="fill"), sizes)  # fill: all join at once
    batcher.planner.step_seconds = lambda size, frames: 5e-4 + 1e-6 * size * frames  # type: ignore[method-assign]
    await batcher.start()
    try:
        waves = await asyncio.gather(*(batcher.run(item) for item in items))
    finally:
        await batcher.close()
    assert 2 in sizes.sizes and 1 in sizes.sizes and 3 not in sizes.sizes  # the short pair, the long one alone
    errors = [rel_l2(w, ref) for w, ref in zip(waves, solo, strict=True)]
    assert max(errors) <= TOLERANCE, errors
