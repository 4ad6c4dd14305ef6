"""Reference voices: decode, mono, clip, loudness-normalise and resample once; reuse for every request.

The processing mirrors ``f5_tts.infer.utils_infer`` (``preprocess_ref_audio_text`` for the transcript,
``infer_batch_process`` for RMS and resampling) so a voice sounds the same here as upstream: silent edges
are trimmed and 50 ms of silence appended as ``remove_silence_edges`` does (the reference's length sets
the pace of the generated speech, so edge silence would slow it and cost frames). Clipping is a plain cut
at ``max_seconds`` rather than upstream's search for a long pause: it is predictable and documented.

Uploads are untrusted, and audio is a resource attack: a 3.5 MB FLAC of a constant tone decodes to
gigabytes, and a sinc resampler's filter table grows with rate / gcd(rate, 24 000). So the header is
probed first and absurd ones refused, at most ``max_seconds`` are decoded (block by block, mixed to mono
as they come, never the whole file), and rates whose reduced ratio is large go through soxr, whose cost
does not depend on the gcd. Everything here is plain CPU work meant to run off the model thread.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
import torchaudio

from engine.errors import InvalidAudioError, InvalidTextError, TranscriptTooLongError
from text.chunking import max_chunk_bytes, nbytes

SAMPLE_RATE = 24_000
TARGET_RMS = 0.1
MIN_SECONDS = 0.3
MAX_SECONDS = 12.0
SILENCE_RMS = 1e-4
DEFAULT_VOICE_ID = "default"
DEFAULT_TRANSCRIPT = "Some call me nature, others call me mother nature."

EDGE_SILENCE_DBFS = -42.0
"""``remove_silence_edges``: 10 ms chunks quieter than this are trimmed from both ends (pydub's dBFS)."""
EDGE_CHUNK_SECONDS = 0.010
END_SILENCE_SECONDS = 0.050
"""Appended after trimming, as upstream does."""

MIN_RATE, MAX_RATE = 4_000, 192_000
MAX_CHANNELS = 8
MAX_SOURCE_SECONDS = 3_600.0
"""A header claiming more than an hour is refused outright: no reference needs it, and it is the
signature of a decompression bomb (only ``max_seconds`` would be decoded anyway)."""
BLOCK_FRAMES = 32_768
"""Frames decoded at a time: bounds the multichannel float buffer to ~1 MB whatever the file says."""
TORCHAUDIO_MAX_RATIO = 1_000
"""Up to this reduced ratio (e.g. 44 100 -> 24 000 is 147:80) upstream's own resampler is used, so voices
match upstream bit for bit; its filter table is then at most ~1000 x 1000. Beyond it (23 999 Hz) soxr."""
FASTEST_SPEED = 4.0  # the top of engine.params.SPEED_RANGE: chunks are longest at the fastest speed
MAX_TOKENS = 65_536  # engine.sampler.MAX_FRAMES: reference + chunk tokens must stay below it


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


@dataclass(frozen=True, eq=False)
class Reference:
    """A decoded reference before normalisation: what a voice is stored as."""

    samples: np.ndarray = field(repr=False)
    """Mono float32 at 24 kHz, clipped to ``max_seconds``, loudness as uploaded."""
    rms: float
    """RMS at the source rate, as upstream measures it."""
    source_seconds: float
    """Decoded length at the source rate, after clipping and trimming."""
    clipped: bool


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


def _open(data: bytes) -> sf.SoundFile:
    if not data:
        raise InvalidAudioError("reference audio is empty")
    try:
        return sf.SoundFile(io.BytesIO(data))
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise InvalidAudioError(f"cannot decode reference audio: {exc}") from exc


def _check_header(audio: sf.SoundFile) -> None:
    """Refuse what no real reference looks like, before a single frame is decoded."""
    if not MIN_RATE <= audio.samplerate <= MAX_RATE:
        raise InvalidAudioError(f"reference sample rate {audio.samplerate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")
    if not 1 <= audio.channels <= MAX_CHANNELS:
        raise InvalidAudioError(f"reference has {audio.channels} channels; at most {MAX_CHANNELS} are accepted")
    if audio.frames > MAX_SOURCE_SECONDS * audio.samplerate:
        raise InvalidAudioError(f"reference audio claims {audio.frames / audio.samplerate:.0f} s; "
                                f"at most {MAX_SOURCE_SECONDS:.0f} s is accepted (only {MAX_SECONDS:.0f} s are used)")


def _read_mono(audio: sf.SoundFile, limit: int) -> tuple[np.ndarray, bool]:
    """Up to ``limit`` frames mixed to mono, and whether the file holds more (one frame past the limit
    is read to know: MP3 and Ogg headers only estimate their length)."""
    blocks: list[np.ndarray] = []
    wanted = limit + 1
    try:
        while wanted > 0:
            block = audio.read(min(BLOCK_FRAMES, wanted), dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                break
            blocks.append(block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0].copy())
            wanted -= block.shape[0]
    except Exception as exc:
        raise InvalidAudioError(f"cannot decode reference audio: {exc}") from exc
    mono = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    return mono[:limit], mono.shape[0] > limit


def _leading_silence(mono: np.ndarray, chunk: int, threshold: float) -> int:
    """pydub's ``detect_leading_silence``: samples before the first chunk whose RMS reaches ``threshold``."""
    squares = np.concatenate([[0.0], np.cumsum(np.square(mono, dtype=np.float64))])
    starts = np.arange(0, mono.shape[0], chunk)
    ends = np.minimum(starts + chunk, mono.shape[0])
    rms = np.sqrt((squares[ends] - squares[starts]) / (ends - starts))
    loud = np.flatnonzero(rms >= threshold)
    return int(starts[loud[0]]) if loud.size else int(mono.shape[0])


def trim_silent_edges(mono: np.ndarray, rate: int) -> np.ndarray:
    """Upstream's ``remove_silence_edges`` plus its 50 ms of silence. A recording quiet throughout (less
    than ``MIN_SECONDS`` would be left) is kept whole: its loudness is restored later, not cut away."""
    chunk = max(1, round(rate * EDGE_CHUNK_SECONDS))
    threshold = 10 ** (EDGE_SILENCE_DBFS / 20)
    start = _leading_silence(mono, chunk, threshold)
    end = mono.shape[0] - _leading_silence(mono[start:][::-1], chunk, threshold)
    if (end - start) / rate < MIN_SECONDS:
        return mono
    return np.concatenate([mono[start:end], np.zeros(round(rate * END_SILENCE_SECONDS), dtype=np.float32)])


def resample(mono: np.ndarray, rate: int) -> np.ndarray:
    """To 24 kHz at a cost that does not grow with rate / gcd(rate, 24 000)."""
    if rate == SAMPLE_RATE:
        return mono
    divisor = math.gcd(rate, SAMPLE_RATE)
    if max(rate, SAMPLE_RATE) // divisor <= TORCHAUDIO_MAX_RATIO:
        return torchaudio.functional.resample(torch.from_numpy(mono)[None], rate, SAMPLE_RATE)[0].numpy()
    return np.asarray(soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ"), dtype=np.float32)


def load_reference(data: bytes, *, max_seconds: float = MAX_SECONDS) -> Reference:
    """Any format libsndfile reads (wav, flac, ogg/vorbis/opus, mp3) -> mono 24 kHz, at most
    ``max_seconds``. Work and memory are bounded by ``max_seconds`` at ``MAX_RATE``, whatever the file."""
    with _open(data) as audio:
        _check_header(audio)
        rate = int(audio.samplerate)
        mono, clipped = _read_mono(audio, int(max_seconds * rate))
    if mono.size == 0:
        raise InvalidAudioError("reference audio has no samples")
    if not np.isfinite(mono).all():
        raise InvalidAudioError("reference audio contains NaN or infinite samples")
    mono = trim_silent_edges(mono, rate)
    seconds = mono.shape[0] / rate
    if seconds < MIN_SECONDS:
        raise InvalidAudioError(f"reference audio is {seconds:.2f} s long; at least {MIN_SECONDS} s is needed")
    rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64))))
    samples = np.ascontiguousarray(resample(mono, rate), dtype=np.float32)
    return Reference(samples=samples, rms=rms, source_seconds=seconds, clipped=clipped)


def encode_reference(reference: Reference) -> bytes:
    """The stored form of a voice: 24-bit FLAC at 24 kHz (<= ~1 MB for 12 s), not the upload."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(reference.samples, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_24")
    return buffer.getvalue()


def check_transcript_fits(ref_text: str, seconds: float) -> None:
    """A transcript far denser than speech would make every synthesis overflow the model's frame cap
    (reference tokens + the longest chunk at the fastest speed): refuse it when the voice is made."""
    worst = nbytes(ref_text) + max_chunk_bytes(ref_text, seconds, FASTEST_SPEED)
    if worst >= MAX_TOKENS:
        raise TranscriptTooLongError(f"the transcript ({nbytes(ref_text)} bytes) is far longer than "
                                     f"{seconds:.1f} s of speech can hold; give the text spoken in the clip")


def voice_from_reference(voice_id: str, transcript: str, reference: Reference) -> Voice:
    ref_text = reference_text(transcript)
    if reference.rms < SILENCE_RMS:
        raise InvalidAudioError(f"reference audio is silent (RMS {reference.rms:.1e})")
    check_transcript_fits(ref_text, reference.samples.shape[0] / SAMPLE_RATE)
    audio = torch.from_numpy(reference.samples).unsqueeze(0)
    if reference.rms < TARGET_RMS:
        audio = audio * TARGET_RMS / reference.rms
    return Voice(id=voice_id, transcript=transcript.strip(), ref_text=ref_text, audio=audio.contiguous(),
                 rms=reference.rms, clipped=reference.clipped)


def prepare_voice(voice_id: str, data: bytes, transcript: str, *, max_seconds: float = MAX_SECONDS) -> Voice:
    reference_text(transcript)  # an empty transcript fails before any decoding
    return voice_from_reference(voice_id, transcript, load_reference(data, max_seconds=max_seconds))


def default_voice_file() -> Path:
    return Path(str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav")))


def default_voice() -> Voice:
    """f5-tts's bundled English reference with its transcript."""
    return prepare_voice(DEFAULT_VOICE_ID, default_voice_file().read_bytes(), DEFAULT_TRANSCRIPT)
