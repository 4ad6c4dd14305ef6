"""Bad input fails with a typed error and a message; nothing crashes and no audio is NaN."""

from __future__ import annotations

import numpy as np
import pytest

from engine import (
    Engine,
    InvalidAudioError,
    InvalidParameterError,
    InvalidTextError,
    SynthesisItem,
    Voice,
)
from tests.audio import EN_TRANSCRIPT, encode, english_clip


@pytest.mark.slow
@pytest.mark.parametrize("text", ["", "   \n\t", "☃☃☃", "🙂🙂", "...!!!"])
def test_unspeakable_text_is_rejected(engine: Engine, voice_en: Voice, text: str) -> None:
    with pytest.raises(InvalidTextError) as info:
        engine.synthesize([SynthesisItem(text, voice_en, nfe_steps=2, seed=1)])
    assert info.value.code == "bad_request"
    assert str(info.value)


@pytest.mark.parametrize(("field", "value"), [("speed", 0.0), ("speed", 9.0), ("nfe_steps", 0),
                                               ("cfg_strength", -1.0), ("sway_sampling_coef", 5.0)])
def test_out_of_range_parameters(engine: Engine, voice_en: Voice, field: str, value: float) -> None:
    item = SynthesisItem("Hello.", voice_en, nfe_steps=2, seed=1)
    with pytest.raises(InvalidParameterError, match=field):
        engine.synthesize([SynthesisItem(**{**item.__dict__, field: value})])


def test_undecodable_audio(engine: Engine) -> None:
    with pytest.raises(InvalidAudioError, match="cannot decode"):
        engine.prepare_voice("x", b"this is not audio at all" * 10, "Hello there.")
    with pytest.raises(InvalidAudioError, match="empty"):
        engine.prepare_voice("x", b"", "Hello there.")
    truncated = encode(*english_clip(1.0))[:30]
    with pytest.raises(InvalidAudioError):
        engine.prepare_voice("x", truncated, "Hello there.")


def test_silent_and_short_audio(engine: Engine) -> None:
    with pytest.raises(InvalidAudioError, match="silent"):
        engine.prepare_voice("x", encode(np.zeros(24_000, dtype=np.float32), 24_000), "Hello there.")
    with pytest.raises(InvalidAudioError, match="at least"):
        engine.prepare_voice("x", encode(english_clip(0.1)[0], 24_000), "Hello.")


def test_nan_audio_is_rejected(engine: Engine) -> None:
    samples = english_clip(1.0)[0].copy()
    samples[100] = np.nan
    with pytest.raises(InvalidAudioError, match="NaN"):
        engine.prepare_voice("x", encode(samples, 24_000), "Hello there.")


def test_empty_transcript(engine: Engine) -> None:
    with pytest.raises(InvalidTextError, match="transcript"):
        engine.prepare_voice("x", encode(*english_clip(1.0)), "  ")


@pytest.mark.parametrize(("fmt", "subtype"), [("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("WAV", "PCM_16"),
                                             ("MP3", "MPEG_LAYER_III")])
def test_common_formats_and_stereo_decode(engine: Engine, fmt: str, subtype: str) -> None:
    mono, rate = english_clip(1.0)
    stereo = np.stack([mono, mono * 0.5], axis=1)
    voice = engine.prepare_voice("x", encode(stereo, rate, fmt, subtype), EN_TRANSCRIPT)
    assert voice.audio.shape[0] == 1 and abs(voice.seconds - 1.0) < 0.1  # mp3 pads a frame or so


def test_long_reference_is_clipped(engine: Engine) -> None:
    mono, rate = english_clip(1.0)
    voice = engine.prepare_voice("x", encode(np.tile(mono, 14), rate), EN_TRANSCRIPT)
    # cut at 12 s, then the silent edges trimmed and 50 ms of silence appended, as upstream does
    assert voice.clipped and 11.5 < voice.seconds <= 12.05


@pytest.mark.slow
def test_quiet_reference_keeps_its_loudness(engine: Engine) -> None:
    mono, rate = english_clip(1.0)
    hum = 0.15 * np.sin(np.arange(mono.size) * 2 * np.pi * 100 / rate)  # no edge quiet enough to trim
    at_target = (mono + hum) * (0.1 / np.sqrt(np.mean((mono + hum) ** 2)))  # at the internal RMS: used as is
    normal = engine.prepare_voice("n", encode(at_target, rate), EN_TRANSCRIPT)
    quiet = engine.prepare_voice("q", encode(at_target * 0.3, rate), EN_TRANSCRIPT)
    assert quiet.rms < 0.1 and quiet.audio.shape == normal.audio.shape
    normal_out = engine.synthesize([SynthesisItem("Hello there.", normal, nfe_steps=2, seed=1)])[0]
    quiet_out = engine.synthesize([SynthesisItem("Hello there.", quiet, nfe_steps=2, seed=1)])[0]
    # The quiet one is boosted to the same internal level, so only the output scale differs.
    np.testing.assert_allclose(quiet_out, normal_out * 0.3, rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_odd_but_valid_text_gives_finite_audio(engine: Engine, voice_en: Voice) -> None:
    out = engine.synthesize([SynthesisItem("a ☃ b 🙂 c", voice_en, nfe_steps=2, seed=1)])[0]
    assert np.isfinite(out).all() and out.size > 0
