"""Reference voices: decode, mono, clip, loudness-normalise and resample once; reuse for every request.

The processing mirrors ``f5_tts.infer.utils_infer`` (``preprocess_ref_audio_text`` for the transcript,
``infer_batch_process`` for RMS and resampling) so a voice sounds the same here as upstream. Clipping is
a plain cut at ``max_seconds`` rather than upstream's silence search: it is predictable and documented.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from engine.errors import InvalidAudioError, InvalidTextError

SAMPLE_RATE = 24_000
TARGET_RMS = 0.1
MIN_SECONDS = 0.3
MAX_SECONDS = 12.0
SILENCE_RMS = 1e-4
DEFAULT_VOICE_ID = "default"
DEFAULT_TRANSCRIPT = "Some call me nature, others call me mother nature."


@dataclass(frozen=True, eq=False)
class Voice:
    """A prepared reference. ``audio`` is mono float32 at 24 kHz after RMS normalisation."""

    id: str
    transcript: str
    """The transcript as the user gave it."""
    ref_text: str
    """The transcript as the model sees it (sentence-final punctuation and spacing as upstream)."""
    audio: torch.Tensor = field(repr=False)
    """Shape (1, samples), float32, 24 kHz."""
    rms: float
    """RMS of the reference before normalisation; quiet voices get their loudness back at the output."""
    clipped: bool = False
    mel: torch.Tensor | None = field(default=None, repr=False)
    """Cached conditioning mel, (frames, n_mels) on the model's device; set by the engine."""

    @property
    def seconds(self) -> float:
        return self.audio.shape[-1] / SAMPLE_RATE

    @property
    def ref_frames(self) -> int:
        """Reference length in mel hops, as upstream counts it for duration and trimming."""
        return int(self.audio.shape[-1]) // 256


def reference_text(transcript: str) -> str:
    text = transcript.strip()
    if not text:
        raise InvalidTextError("the reference transcript is empty; give the text spoken in the audio")
    # preprocess_ref_audio_text: end with a sentence stop so generated text starts a new sentence.
    if not text.endswith(". ") and not text.endswith("。"):
        text += " " if text.endswith(".") else ". "
    # infer_batch_process: a transcript ending in a one-byte character gets one more space.
    if len(text[-1].encode("utf-8")) == 1:
        text += " "
    return text


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Any format libsndfile reads (wav, flac, ogg/vorbis/opus, mp3) -> (samples, channels) float32, rate."""
    if not data:
        raise InvalidAudioError("reference audio is empty")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise InvalidAudioError(f"cannot decode reference audio: {exc}") from exc
    if samples.size == 0:
        raise InvalidAudioError("reference audio has no samples")
    if not np.isfinite(samples).all():
        raise InvalidAudioError("reference audio contains NaN or infinite samples")
    return samples, int(rate)


def prepare_voice(voice_id: str, data: bytes, transcript: str, *, max_seconds: float = MAX_SECONDS) -> Voice:
    ref_text = reference_text(transcript)
    samples, rate = decode_audio(data)
    mono = samples.mean(axis=1)
    seconds = mono.shape[0] / rate
    if seconds < MIN_SECONDS:
        raise InvalidAudioError(f"reference audio is {seconds:.2f} s long; at least {MIN_SECONDS} s is needed")
    clipped = seconds > max_seconds
    if clipped:
        mono = mono[: int(max_seconds * rate)]
    audio = torch.from_numpy(np.ascontiguousarray(mono)).unsqueeze(0)
    rms = float(torch.sqrt(torch.mean(torch.square(audio))))
    if rms < SILENCE_RMS:
        raise InvalidAudioError(f"reference audio is silent (RMS {rms:.1e})")
    if rms < TARGET_RMS:
        audio = audio * TARGET_RMS / rms
    if rate != SAMPLE_RATE:
        audio = torchaudio.functional.resample(audio, rate, SAMPLE_RATE)
    return Voice(id=voice_id, transcript=transcript.strip(), ref_text=ref_text, audio=audio.contiguous(),
                 rms=rms, clipped=clipped)


def default_voice_file() -> Path:
    return Path(str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav")))


def default_voice() -> Voice:
    """f5-tts's bundled English reference with its transcript."""
    return prepare_voice(DEFAULT_VOICE_ID, default_voice_file().read_bytes(), DEFAULT_TRANSCRIPT)
