"""Output formats for clients that ask for something other than 24 kHz PCM: raw PCM (s16le, f32le) at the
usual rates, G.711 μ-law and A-law (telephony), streamed WAV, MP3 and Ogg/Opus.

An ``AudioOutput`` converts one stream: int16 PCM at the engine's rate in, the client's bytes out, chunk
by chunk. Resampling keeps soxr's streaming state per stream, so chunk seams are the same as resampling
the whole signal at once; ``finish`` drains the resampler's delay line.

G.711 follows the ITU tables (the same segment search as CPython's ``audioop``), vectorised.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import soxr

from server.http.encoders import Mp3Encoder, SndfileEncoder

RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
"""Sample rates offered for PCM, G.711 and WAV (Hz)."""
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
"""What LAME encodes (MPEG-1, -2 and -2.5 layer III)."""
ENCODINGS = ("pcm_s16le", "pcm_f32le", "pcm_mulaw", "pcm_alaw")
CONTAINERS = ("raw", "wav", "mp3", "ogg")

_WAV_TAG = {"pcm_s16le": (1, 16), "pcm_f32le": (3, 32), "pcm_alaw": (6, 8), "pcm_mulaw": (7, 8)}
_ULAW_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


class FormatError(ValueError):
    """A format the server does not produce; the message names what is offered."""


@dataclass(frozen=True)
class AudioFormat:
    container: str
    """``raw`` (bare samples), ``wav`` (streamed header + samples), ``mp3`` or ``ogg`` (Opus)."""
    encoding: str
    """Sample encoding of raw and wav (one of ``ENCODINGS``); ``mp3``/``opus`` for compressed ones."""
    sample_rate: int
    """Hz."""
    bit_rate: int | None = None
    """Bits per second, compressed formats only (None: the encoder's default)."""

    def __post_init__(self) -> None:
        if self.container in ("raw", "wav"):
            if self.encoding not in ENCODINGS:
                raise FormatError(f"encoding {self.encoding!r} is not offered; use one of {', '.join(ENCODINGS)}")
            if self.sample_rate not in RATES:
                raise FormatError(f"sample_rate {self.sample_rate} is not offered; use one of {_list(RATES)}")
        elif self.container == "mp3":
            if self.sample_rate not in MP3_RATES:
                raise FormatError(f"mp3 sample_rate {self.sample_rate} is not offered; use one of {_list(MP3_RATES)}")
            if self.bit_rate is not None and not 8000 <= self.bit_rate <= 320_000:
                raise FormatError(f"mp3 bit_rate {self.bit_rate} is out of range (8000-320000)")
        elif self.container == "ogg":
            if self.sample_rate != 48000:
                raise FormatError("opus is offered at 48000 Hz only")
        else:
            raise FormatError(f"container {self.container!r} is not offered; use one of {', '.join(CONTAINERS)}")

    @property
    def content_type(self) -> str:
        return {"raw": "audio/pcm", "wav": "audio/wav", "mp3": "audio/mpeg", "ogg": "audio/ogg; codecs=opus"}[
            self.container]


def _list(values: tuple[int, ...]) -> str:
    return ", ".join(str(v) for v in values)


class AudioOutput:
    """One stream's conversion from the engine's int16 PCM to ``fmt``."""

    def __init__(self, fmt: AudioFormat, source_rate: int) -> None:
        self.format = fmt
        self._resampler = None if fmt.sample_rate == source_rate else soxr.ResampleStream(
            source_rate, fmt.sample_rate, 1, dtype="float32", quality="HQ")
        self._encoder: Mp3Encoder | SndfileEncoder | None = None
        if fmt.container == "mp3":
            self._encoder = Mp3Encoder(fmt.sample_rate, kbps=(fmt.bit_rate or 64_000) // 1000)
        elif fmt.container == "ogg":
            self._encoder = SndfileEncoder("opus", fmt.sample_rate)
        self._header = wav_header(fmt) if fmt.container == "wav" else b""

    def push(self, pcm16: bytes) -> bytes:
        """The bytes for these samples that can be sent now (may be empty while a resampler fills)."""
        return self._convert(pcm16, last=False)

    def finish(self) -> bytes:
        """The rest: the resampler's tail and the encoder's last frames."""
        data = self._convert(b"", last=True)
        if self._encoder is not None:
            data += self._encoder.finish()
        return data

    def _convert(self, pcm16: bytes, last: bool) -> bytes:
        if self._resampler is None and self.format.encoding == "pcm_s16le" and self.format.container != "mp3":
            return self._take_header() + pcm16  # the engine's own rate and encoding: the bytes as they are
        wave = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
        if self._resampler is not None:
            wave = self._resampler.resample_chunk(wave, last=last)
        if self._encoder is not None:
            return self._encoder.encode(encode_samples(wave, "pcm_s16le")) if len(wave) else b""
        return self._take_header() + encode_samples(wave, self.format.encoding)

    def _take_header(self) -> bytes:
        header, self._header = self._header, b""
        return header


def encode_samples(wave: np.ndarray, encoding: str) -> bytes:
    """float32 in [-1, 1) → bytes of ``encoding``."""
    if encoding == "pcm_f32le":
        return np.asarray(wave, dtype="<f4").tobytes()
    pcm = np.clip(np.round(np.asarray(wave, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int32)
    if encoding == "pcm_s16le":
        return pcm.astype("<i2").tobytes()
    if encoding == "pcm_mulaw":
        return ulaw(pcm).tobytes()
    if encoding == "pcm_alaw":
        return alaw(pcm).tobytes()
    raise FormatError(f"encoding {encoding!r} is not offered")


def ulaw(pcm: np.ndarray) -> np.ndarray:
    """int16 samples → G.711 μ-law bytes."""
    value = pcm >> 2  # 14-bit magnitude, as G.711 defines it
    mask = np.where(value < 0, 0x7F, 0xFF)
    value = np.minimum(np.abs(value), 8159) + 33
    seg = np.searchsorted(_ULAW_END, value)
    code = (seg << 4) | ((value >> (np.minimum(seg, 7) + 1)) & 0x0F)
    return (np.where(seg >= 8, 0x7F, code) ^ mask).astype(np.uint8)


def alaw(pcm: np.ndarray) -> np.ndarray:
    """int16 samples → G.711 A-law bytes."""
    value = pcm >> 3  # 13-bit
    mask = np.where(value >= 0, 0xD5, 0x55)
    value = np.where(value >= 0, value, -value - 1)
    seg = np.searchsorted(_ALAW_END, value)
    low = np.where(seg < 2, value >> 1, value >> np.maximum(seg, 1)) & 0x0F
    code = (seg << 4) | low
    return (np.where(seg >= 8, 0x7F, code) ^ mask).astype(np.uint8)


def wav_header(fmt: AudioFormat) -> bytes:
    """A WAVE header whose RIFF and data sizes are 'unknown' (0xFFFFFFFF), as a streamed WAV must be."""
    tag, bits = _WAV_TAG[fmt.encoding]
    block = bits // 8
    fmt_chunk = struct.pack("<HHIIHH", tag, 1, fmt.sample_rate, fmt.sample_rate * block, block, bits)
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk))
            + fmt_chunk + b"data" + struct.pack("<I", 0xFFFFFFFF))
