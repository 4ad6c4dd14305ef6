"""A request's audio must not depend on what it is batched with."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from engine import Engine, EngineConfig, SynthesisItem, Voice

pytestmark = pytest.mark.slow  # every test here runs the model for seconds

TEXTS = [
    "Hi.",
    "A somewhat longer sentence to pad the batch.",
    "Short one here.",
    "Yet another text of a different length, longer still than the others by far.",
    "Mid length text.",
    "Seven words make up this sentence.",
    "Numbers one two three.",
    "Final item in the batch, with words.",
]


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def batch_items(voice_a: Voice, voice_b: Voice) -> list[SynthesisItem]:
    voices = [voice_a, voice_b]
    return [SynthesisItem(t, voices[i % 2], nfe_steps=6, seed=100 + i) for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def solo(engine: Engine, voice_en: Voice, voice_zh: Voice) -> list[np.ndarray]:
    return [engine.synthesize([item])[0] for item in batch_items(voice_en, voice_zh)]


def test_batched_equals_solo(engine: Engine, voice_en: Voice, voice_zh: Voice, solo: list[np.ndarray]) -> None:
    batched = engine.synthesize(batch_items(voice_en, voice_zh))
    errors = [rel_l2(b, s) for b, s in zip(batched, solo, strict=True)]
    assert max(errors) <= 1e-3, errors


def test_without_attention_mask_batching_changes_audio(
    tiny_config: EngineConfig, voice_en: Voice, voice_zh: Voice, solo: list[np.ndarray]
) -> None:
    unmasked = Engine.load(replace(tiny_config, attention_mask=False))
    items = batch_items(unmasked.attach(voice_en), unmasked.attach(voice_zh))
    batched = unmasked.synthesize(items)
    errors = [rel_l2(b, s) for b, s in zip(batched, solo, strict=True)]
    # The longest item has no padding and stays equal; the short ones attend to padding and drift.
    assert max(errors) > 1e-2, errors
    assert min(errors) <= 1e-3, errors


def test_result_order_follows_input_order(engine: Engine, voice_en: Voice, voice_zh: Voice,
                                          solo: list[np.ndarray]) -> None:
    items = batch_items(voice_en, voice_zh)
    order = [5, 2, 7, 0, 3, 6, 1, 4]
    batched = engine.synthesize([items[i] for i in order])
    for out, i in zip(batched, order, strict=True):
        assert rel_l2(out, solo[i]) <= 1e-3
