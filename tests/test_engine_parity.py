"""A single request through the engine equals upstream f5-tts's own path: ``preprocess_ref_audio_text``
(silent edges trimmed, 50 ms appended) on the uploaded file, then ``infer_batch_process``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from f5_tts.infer.utils_infer import infer_batch_process

with warnings.catch_warnings():  # pydub looks for ffmpeg at import; WAV needs none
    warnings.simplefilter("ignore", RuntimeWarning)
    from f5_tts.infer.utils_infer import preprocess_ref_audio_text

from engine import Engine, SynthesisItem
from tests.audio import EN_TRANSCRIPT, encode, english_clip


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def upstream(engine: Engine, upload: Path, text: str, seed: int, nfe: int) -> np.ndarray:
    reference, ref_text = preprocess_ref_audio_text(str(upload), EN_TRANSCRIPT, show_info=lambda *_: None)
    samples, rate = sf.read(reference, dtype="float32")
    torch.manual_seed(seed)  # upstream draws its noise from the global RNG
    wave, out_rate, _ = next(infer_batch_process(
        (torch.from_numpy(samples)[None], rate), ref_text, [text], engine.cfm, engine.vocoder,
        nfe_step=nfe, progress=None, device="cpu",
    ))
    assert out_rate == 24_000
    return np.asarray(wave, dtype=np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("rate", [24_000, 16_000])
@pytest.mark.parametrize("text", ["I don't really care what you call me.", "Hi!"])
def test_single_request_matches_upstream(engine: Engine, tmp_path: Path, rate: int, text: str) -> None:
    samples, src_rate = english_clip(1.0)
    if rate != src_rate:  # exercise the resampling path too
        samples = torchaudio.functional.resample(torch.from_numpy(samples)[None], src_rate, rate)[0].numpy()
    upload = tmp_path / "upload.wav"
    upload.write_bytes(encode(samples, rate, subtype="PCM_16"))  # a WAV pydub reads without ffmpeg
    voice = engine.prepare_voice("p", upload.read_bytes(), EN_TRANSCRIPT)
    ours = engine.synthesize([SynthesisItem(text, voice, nfe_steps=8, seed=42)])[0]
    theirs = upstream(engine, upload, text, seed=42, nfe=8)
    assert rel_l2(ours, theirs) <= 1e-4


@pytest.mark.slow
def test_parity_is_not_vacuous(engine: Engine, tmp_path: Path) -> None:
    """The same comparison with another seed must fail, or the parity test proves nothing."""
    samples, rate = english_clip(1.0)
    upload = tmp_path / "upload.wav"
    upload.write_bytes(encode(samples, rate, subtype="PCM_16"))  # a WAV pydub reads without ffmpeg
    voice = engine.prepare_voice("p", upload.read_bytes(), EN_TRANSCRIPT)
    ours = engine.synthesize([SynthesisItem("I don't really care.", voice, nfe_steps=8, seed=1)])[0]
    theirs = upstream(engine, upload, "I don't really care.", seed=2, nfe=8)
    assert rel_l2(ours, theirs) > 0.05
