"""End to end through the real tiny engine: batching under concurrency changes nothing audible."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from batching import BatcherConfig, MicroBatcher
from engine import Engine, SynthesisItem, Voice
from tests.fakes import RecordingObserver

pytestmark = pytest.mark.slow  # every test here runs the model for seconds

TEXTS = ["Hi.", "A longer sentence for the batch.", "Short one.", "Quite a bit longer text than the rest here.",
         "Mid length.", "Seven words make up this sentence.", "One two three.", "Last one, with a comma."]


async def test_concurrent_requests_through_batcher_equal_solo(engine: Engine, voice_en: Voice,
                                                              voice_zh: Voice) -> None:
    voices = [voice_en, voice_zh]
    items = [SynthesisItem(t, voices[i % 2], nfe_steps=4, seed=10 + i) for i, t in enumerate(TEXTS)]
    solo = [engine.synthesize([item])[0] for item in items]

    observer = RecordingObserver()
    batcher: MicroBatcher[SynthesisItem, np.ndarray] = MicroBatcher(
        engine, BatcherConfig(max_batch_size=8, max_wait_ms=30), observer)
    await batcher.start()
    try:
        outputs = await asyncio.gather(*(batcher.run(item) for item in items))
    finally:
        await batcher.close()
    assert max(size for size, *_ in observer.batches) > 1  # they really were batched
    for out, ref in zip(outputs, solo, strict=True):
        assert out.shape == ref.shape
        assert np.linalg.norm(out - ref) / np.linalg.norm(ref) <= 1e-3
