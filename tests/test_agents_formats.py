"""Output formats for the agent endpoints: G.711 against CPython's reference codec, resampling seams,
WAV headers, MP3 at the asked rate, refusals."""

from __future__ import annotations

import io
import itertools
import warnings

import numpy as np
import pytest
import soundfile as sf
import soxr

from server.agents.formats import AudioFormat, AudioOutput, FormatError, alaw, ulaw

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the reference G.711 codec (CPython's C implementation)


def speech_like(seconds: float = 1.0, rate: int = 24_000) -> np.ndarray:
    """A voiced-speech stand-in: harmonics of a gliding pitch under a syllable envelope, as int16."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    wave = 0.4 * wave / np.max(np.abs(wave))
    return np.round(wave * 32767).astype("<i2")


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    reference, test = reference.astype(np.float64), test.astype(np.float64)
    noise = max(float(np.sum((reference - test) ** 2)), 1e-30)  # identical signals: a finite, huge SNR
    return float(10 * np.log10(np.sum(reference ** 2) / noise))


def convert(fmt: AudioFormat, pcm: np.ndarray, pieces: int = 7) -> bytes:
    """Through one AudioOutput in uneven pieces, as a stream sends its frames."""
    output = AudioOutput(fmt, 24_000)
    cuts = np.linspace(0, len(pcm), pieces + 1).astype(int)
    data = b"".join(output.push(pcm[a:b].tobytes()) for a, b in itertools.pairwise(cuts))
    return data + output.finish()


def test_g711_matches_cpython_codec_bit_for_bit() -> None:
    pcm = np.arange(-32768, 32768, dtype=np.int32)
    assert ulaw(pcm).tobytes() == audioop.lin2ulaw(pcm.astype("<i2").tobytes(), 2)
    assert alaw(pcm).tobytes() == audioop.lin2alaw(pcm.astype("<i2").tobytes(), 2)


@pytest.mark.parametrize("encoding,decode", [("pcm_mulaw", audioop.ulaw2lin), ("pcm_alaw", audioop.alaw2lin)])
def test_telephony_8k_is_our_24k_pcm_resampled(encoding: str, decode) -> None:  # type: ignore[no-untyped-def]
    pcm = speech_like()
    data = convert(AudioFormat("raw", encoding, 8000), pcm)
    decoded = np.frombuffer(decode(data, 2), dtype="<i2")
    reference = soxr.resample(pcm.astype(np.float32) / 32768, 24_000, 8000) * 32768
    assert len(decoded) == len(reference) == len(pcm) // 3
    assert snr_db(reference, decoded) >= 30


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_streamed_resampling_has_clean_seams(rate: int) -> None:
    pcm = speech_like()
    data = np.frombuffer(convert(AudioFormat("raw", "pcm_f32le", rate), pcm, pieces=13), dtype="<f4")
    whole = soxr.resample(pcm.astype(np.float32) / 32768, 24_000, rate, quality="HQ")
    assert len(data) == len(whole)
    assert snr_db(whole, data) >= 80


def test_24k_s16le_passes_through_unchanged() -> None:
    pcm = speech_like(0.3)
    assert convert(AudioFormat("raw", "pcm_s16le", 24_000), pcm) == pcm.tobytes()


@pytest.mark.parametrize("encoding,subtype", [("pcm_s16le", "PCM_16"), ("pcm_f32le", "FLOAT"),
                                              ("pcm_mulaw", "ULAW"), ("pcm_alaw", "ALAW")])
def test_streamed_wav_reads_back(encoding: str, subtype: str) -> None:
    pcm = speech_like(0.5)
    data = convert(AudioFormat("wav", encoding, 16_000), pcm)
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.subtype) == (16_000, subtype)
    samples, _ = sf.read(io.BytesIO(data), dtype="float32")
    assert abs(len(samples) - len(pcm) * 2 // 3) <= 1


def test_mp3_at_the_asked_rate_decodes() -> None:
    data = convert(AudioFormat("mp3", "mp3", 44_100, 128_000), speech_like(1.0))
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == 44_100 and abs(len(samples) / rate - 1.0) < 0.1


@pytest.mark.parametrize("fmt", [("raw", "pcm_s24le", 24_000), ("raw", "pcm_s16le", 11_025), ("flac", "x", 24_000),
                                 ("ogg", "opus", 24_000), ("mp3", "mp3", 96_000)])
def test_unoffered_formats_are_refused(fmt: tuple[str, str, int]) -> None:
    with pytest.raises(FormatError):
        AudioFormat(*fmt)
