"""A single request through the engine equals upstream f5-tts's own inference path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio
from f5_tts.infer.utils_infer import infer_batch_process

from engine import Engine, SynthesisItem
from tests.audio import EN_TRANSCRIPT, encode, english_clip


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def upstream(engine: Engine, samples: np.ndarray, rate: int, text: str, seed: int, nfe: int) -> np.ndarray:
    torch.manual_seed(seed)  # upstream draws its noise from the global RNG
    wave, out_rate, _ = next(infer_batch_process(
        (torch.from_numpy(samples)[None], rate), EN_TRANSCRIPT + ". ", [text], engine.cfm, engine.vocoder,
        nfe_step=nfe, progress=None, device="cpu",
    ))
    assert out_rate == 24_000
    return np.asarray(wave, dtype=np.float32)


@pytest.mark.parametrize("rate", [24_000, 16_000])
@pytest.mark.parametrize("text", ["I don't really care what you call me.", "Hi!"])
def test_single_request_matches_upstream(engine: Engine, rate: int, text: str) -> None:
    samples, src_rate = english_clip(1.0)
    if rate != src_rate:  # exercise the resampling path too
        samples = torchaudio.functional.resample(torch.from_numpy(samples)[None], src_rate, rate)[0].numpy()
    voice = engine.prepare_voice("p", encode(samples, rate), EN_TRANSCRIPT)
    ours = engine.synthesize([SynthesisItem(text, voice, nfe_steps=8, seed=42)])[0]
    theirs = upstream(engine, samples, rate, text, seed=42, nfe=8)
    assert rel_l2(ours, theirs) <= 1e-4


def test_parity_is_not_vacuous(engine: Engine) -> None:
    """The same comparison with another seed must fail, or the parity test proves nothing."""
    samples, rate = english_clip(1.0)
    voice = engine.prepare_voice("p", encode(samples, rate), EN_TRANSCRIPT)
    ours = engine.synthesize([SynthesisItem("I don't really care.", voice, nfe_steps=8, seed=1)])[0]
    theirs = upstream(engine, samples, rate, "I don't really care.", seed=2, nfe=8)
    assert rel_l2(ours, theirs) > 0.05
