"""Step-level batching: an item's audio must not depend on who joins or leaves its batch between steps."""

from __future__ import annotations

import random
from collections.abc import Hashable
from typing import Any

import numpy as np
import pytest
import torch

from engine import Engine, InvalidTextError, SynthesisItem, Voice
from engine.step_sampler import StepSampler

TOLERANCE = 1e-3


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def mixed_items(en: Voice, zh: Voice) -> list[SynthesisItem]:
    """Mixed lengths, voices, step counts, CFG (incl. none) and sway: no batch key would group them."""
    return [
        SynthesisItem("Hi.", en, nfe_steps=4, seed=1),
        SynthesisItem("A somewhat longer sentence to pad the batch.", zh, nfe_steps=6, cfg_strength=1.5, seed=2),
        SynthesisItem("Short one here.", en, nfe_steps=5, cfg_strength=0.0, seed=3),
        SynthesisItem("Mid length text, with words.", zh, nfe_steps=8, sway_sampling_coef=0.5, seed=4),
        SynthesisItem("Numbers one two three.", en, nfe_steps=6, seed=5),
        SynthesisItem("Seven words make up this sentence.", en, nfe_steps=4, cfg_strength=3.0, seed=6),
    ]


def run_alone(stepper: StepSampler, item: SynthesisItem) -> np.ndarray:
    stepper.add(item, "solo")
    while not stepper.step():
        pass
    return stepper.finish(["solo"])[0]


@pytest.fixture(scope="module")
def items(voice_en: Voice, voice_zh: Voice) -> list[SynthesisItem]:
    return mixed_items(voice_en, voice_zh)


@pytest.fixture(scope="module")
def solo(engine: Engine, items: list[SynthesisItem]) -> list[np.ndarray]:
    return [engine.synthesize([item])[0] for item in items]


@pytest.mark.slow
def test_alone_equals_synthesize(engine: Engine, items: list[SynthesisItem], solo: list[np.ndarray]) -> None:
    stepper = StepSampler(engine)
    errors = [rel_l2(run_alone(stepper, item), ref) for item, ref in zip(items, solo, strict=True)]
    print("stepper alone vs synthesize, rel L2:", errors)
    assert max(errors) <= TOLERANCE, errors
    assert stepper.active == 0 and stepper.keys() == []


def run_schedule(stepper: StepSampler, items: list[SynthesisItem], seed: int,
                 cancel: frozenset[int] = frozenset()) -> dict[Hashable, np.ndarray]:
    """Items join at random steps (several per step at times); ``cancel`` leave at a random step."""
    rng = random.Random(seed)
    joins = {i: rng.randrange(6) for i in range(len(items))}
    leaves = {i: rng.randrange(1, 4) for i in cancel}
    done: dict[Hashable, np.ndarray] = {}
    step, crowd = 0, 0
    while len(done) + len(cancel) < len(items):
        for i, at in joins.items():
            if at == step:
                stepper.add(items[i], i)
        for i, after in leaves.items():
            if after == step - joins[i]:
                stepper.remove(i)
        crowd = max(crowd, stepper.active)
        finished = stepper.step()
        done.update(zip(finished, stepper.finish(finished), strict=True))
        step += 1
    assert stepper.keys() == []
    assert crowd >= 3, "the schedule never shared a pass: the test would prove nothing"
    return done


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12])
def test_joins_and_leaves_do_not_change_audio(engine: Engine, items: list[SynthesisItem], solo: list[np.ndarray],
                                              seed: int) -> None:
    done = run_schedule(StepSampler(engine), items, seed)
    errors = [rel_l2(done[i], solo[i]) for i in range(len(items))]
    print(f"joins at random steps (seed {seed}), rel L2:", errors)
    assert max(errors) <= TOLERANCE, errors


@pytest.mark.slow
@pytest.mark.parametrize("seed", [21, 22])
def test_paused_items_split_passes_and_kept_passes_do_not_change_audio(
        engine: Engine, items: list[SynthesisItem], solo: list[np.ndarray], seed: int) -> None:
    """Every item held from the start; each run of 1–3 steps moves a random subset (the rest paused), cut
    in one or two passes, so kept passes are reused across steps, and rebuilt whenever the cut changes."""
    rng = random.Random(seed)
    stepper = StepSampler(engine)
    for i, item in enumerate(items):
        stepper.add(item, i)
    done: dict[Hashable, np.ndarray] = {}
    reused = split = 0
    while len(done) < len(items):
        held = stepper.keys()  # a method: the stepper is no mapping
        moving = [k for k in held if stepper.remaining(k) > 0 and rng.random() < 0.7]
        cut = rng.randrange(1, len(moving)) if len(moving) > 1 and rng.random() < 0.5 else len(moving)
        passes = [p for p in (moving[:cut], moving[cut:]) if p]
        split += len(passes) > 1
        for run in range(rng.randrange(1, 4)):
            finished = [key for keys in passes for key in stepper.step(keys)]
            reused += run > 0 and bool(moving)
            done.update(zip(finished, stepper.finish(finished), strict=True))
            if finished:
                break
    assert reused >= 3 and split >= 2, "no pass kept across steps, or none split: the test would prove nothing"
    errors = [rel_l2(done[i], solo[i]) for i in range(len(items))]
    print(f"random pauses and splits (seed {seed}), rel L2:", errors)
    assert max(errors) <= TOLERANCE, errors


@pytest.mark.slow
def test_removed_item_does_not_disturb_others(engine: Engine, items: list[SynthesisItem],
                                              solo: list[np.ndarray]) -> None:
    cancel = frozenset({1, 3})
    done = run_schedule(StepSampler(engine), items, seed=13, cancel=cancel)
    assert set(done) == set(range(len(items))) - cancel
    errors = [rel_l2(done[i], solo[i]) for i in range(len(items)) if i not in cancel]
    assert max(errors) <= TOLERANCE, errors


@pytest.mark.slow
def test_different_inputs_give_different_audio(engine: Engine, voice_en: Voice) -> None:
    """Non-vacuity: the parity above would hold trivially if the model ignored its inputs."""
    stepper = StepSampler(engine)
    a = run_alone(stepper, SynthesisItem("The quick brown fox jumps.", voice_en, nfe_steps=4, seed=7))
    b = run_alone(stepper, SynthesisItem("The quick brown fox jumps.", voice_en, nfe_steps=4, seed=8))
    c = run_alone(stepper, SynthesisItem("A lazy dog sleeps all day.", voice_en, nfe_steps=4, seed=7))
    assert a.shape == b.shape
    n = min(len(a), len(c))
    print("seed 7 vs 8:", rel_l2(a, b), "text a vs c:", rel_l2(a[:n], c[:n]))
    assert rel_l2(a, b) > 0.05
    assert rel_l2(a[:n], c[:n]) > 0.02  # same seed, so only the text differs (as test_non_vacuity)


@pytest.mark.slow
def test_poison_item_is_isolated(engine: Engine, items: list[SynthesisItem], solo: list[np.ndarray],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    stepper = StepSampler(engine)
    for i, item in enumerate(items[:5]):
        stepper.add(item, i)
    poison = items[2]
    velocity = stepper._velocity

    def faulty(batch: Any, time: torch.Tensor) -> torch.Tensor:
        # A fault that follows one item into every pass that carries it.
        if any(flow.item is poison for flow in batch.flows):
            raise RuntimeError("poison")
        return velocity(batch, time)

    monkeypatch.setattr(stepper, "_velocity", faulty)
    with pytest.raises(RuntimeError, match="poison"):
        stepper.step()
    assert all(stepper.remaining(i) == items[i].nfe_steps for i in range(5))  # a raising pass moved nobody
    result = stepper.step_isolating()
    assert list(result.failed) == [2]
    assert [stepper.remaining(i) for i in (0, 1, 3, 4)] == [items[i].nfe_steps - 1 for i in (0, 1, 3, 4)]
    stepper.remove(2)
    done: dict[Hashable, np.ndarray] = {}
    while stepper.keys():
        done.update(zip(result.finished, stepper.finish(result.finished), strict=True))
        result = stepper.step_isolating()
        assert not result.failed
    assert set(done) == {0, 1, 3, 4}
    errors = [rel_l2(done[i], solo[i]) for i in (0, 1, 3, 4)]
    assert max(errors) <= TOLERANCE, errors


def test_add_rejects_bad_items(engine: Engine, voice_en: Voice) -> None:
    stepper = StepSampler(engine)
    with pytest.raises(InvalidTextError):
        stepper.add(SynthesisItem("   ", voice_en), "bad")
    stepper.add(SynthesisItem("Fine.", voice_en, nfe_steps=2, seed=1), "ok")
    with pytest.raises(ValueError, match="already active"):
        stepper.add(SynthesisItem("Again.", voice_en, nfe_steps=2, seed=1), "ok")
    assert stepper.active == 1
    rows, frames = stepper.pass_cost()
    assert rows == 2 and frames == stepper.frames("ok")
    assert stepper.remaining("ok") == 2
