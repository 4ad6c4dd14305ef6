"""Incremental audio encoders for streamed HTTP responses; libraries do the encoding.

Each encoder takes int16 PCM as it is produced and returns the bytes that can be sent now.

* ``pcm``: the samples as they are.
* ``wav``: libsndfile's header with its RIFF and data sizes set to "unknown" (0xFFFFFFFF), as a streamed
  WAV must be, then the samples.
* ``opus``: Ogg/Opus pages from libsndfile as they fill.
* ``mp3``: CBR frames from LAME (``lameenc``). libsndfile's MP3 writer puts a Xing header at the start and
  rewrites it at close; a streamed copy keeps the placeholder and decoders stop early, so it is not used.
* ``aac``: ADTS frames (AAC-LC, FFmpeg's native encoder through PyAV) as they fill. ADTS, not MP4: each
  frame carries its own header, so the stream plays from any point without an index at the end. (PyAV's
  libmp3lame measured 1.8x slower than lameenc here, so MP3 stays on lameenc.)
* ``flac``: sent whole when synthesis completes. Its STREAMINFO header holds the total length, which is
  only known at the end; a FLAC streamed with "unknown length" is legal but common decoders (libsndfile
  among them) fail on it.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile as sf

CONTENT_TYPES = {"pcm": "audio/pcm", "wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg",
                 "opus": "audio/ogg; codecs=opus", "aac": "audio/aac"}
_LIBSNDFILE = {"flac": ("FLAC", "PCM_16"), "opus": ("OGG", "OPUS")}
MP3_KBPS = 64
AAC_KBPS = 64
UNKNOWN_SIZE = 0xFFFFFFFF


class PcmEncoder:
    def encode(self, pcm: bytes) -> bytes:
        return pcm

    def finish(self) -> bytes:
        return b""


class WavEncoder:
    """RIFF/WAVE header from libsndfile, with the RIFF and data sizes set to 'unknown'."""

    def __init__(self, sample_rate: int) -> None:
        buffer = io.BytesIO()
        with sf.SoundFile(buffer, "w", samplerate=sample_rate, channels=1, format="WAV", subtype="PCM_16"):
            pass
        header = bytearray(buffer.getvalue())
        struct.pack_into("<I", header, 4, UNKNOWN_SIZE)  # RIFF chunk size
        data_at = header.rfind(b"data")
        struct.pack_into("<I", header, data_at + 4, UNKNOWN_SIZE)  # data chunk size
        self._header: bytes | None = bytes(header)

    def encode(self, pcm: bytes) -> bytes:
        header, self._header = self._header or b"", None
        return header + pcm

    def finish(self) -> bytes:
        return self._header or b""  # an empty response is still a valid (empty) WAV


class _Drained(io.BytesIO):
    """A file an encoder library writes into, read out as it grows: ``new_bytes`` is what was written
    since the last call."""

    def __init__(self) -> None:
        super().__init__()
        self._sent = 0

    def new_bytes(self) -> bytes:
        data = self.getbuffer()
        chunk = bytes(data[self._sent :])
        self._sent = len(data)
        return chunk


class SndfileEncoder:
    def __init__(self, fmt: str, sample_rate: int) -> None:
        container, subtype = _LIBSNDFILE[fmt]
        self.buffer = _Drained()
        self._file = sf.SoundFile(self.buffer, "w", samplerate=sample_rate, channels=1, format=container,
                                  subtype=subtype)

    def encode(self, pcm: bytes) -> bytes:
        self._file.write(np.frombuffer(pcm, dtype="<i2"))
        return self.buffer.new_bytes()

    def finish(self) -> bytes:
        self._file.close()
        return self.buffer.new_bytes()


class Mp3Encoder:
    def __init__(self, sample_rate: int, kbps: int = MP3_KBPS) -> None:
        import lameenc

        self._lame = lameenc.Encoder()
        self._lame.set_bit_rate(kbps)
        self._lame.set_in_sample_rate(sample_rate)
        self._lame.set_channels(1)
        self._lame.set_quality(2)

    def encode(self, pcm: bytes) -> bytes:
        return bytes(self._lame.encode(pcm))

    def finish(self) -> bytes:
        return bytes(self._lame.flush())


class AacEncoder:
    def __init__(self, sample_rate: int) -> None:
        import av

        self._av = av
        self._buffer = _Drained()
        self._container = av.open(self._buffer, "w", format="adts")
        self._stream = self._container.add_stream("aac", rate=sample_rate, layout="mono")
        self._stream.bit_rate = AAC_KBPS * 1000
        self._rate = sample_rate
        self._pts = 0

    def _mux(self, frame: object) -> None:
        for packet in self._stream.encode(frame):  # type: ignore[arg-type]
            self._container.mux(packet)

    def encode(self, pcm: bytes) -> bytes:
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = self._av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = self._rate, self._pts
        self._pts += samples.shape[1]
        self._mux(frame)
        return self._buffer.new_bytes()

    def finish(self) -> bytes:
        self._mux(None)
        self._container.close()
        return self._buffer.new_bytes()


class WholeFileEncoder:
    """Collects everything and encodes once at the end (FLAC: see the module docstring)."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        self._inner = SndfileEncoder(fmt, sample_rate)

    def encode(self, pcm: bytes) -> bytes:
        self._inner.encode(pcm)  # libsndfile may already have written bytes: they are sent at the end
        return b""

    def finish(self) -> bytes:
        self._inner.finish()
        return self._inner.buffer.getvalue()


Encoder = PcmEncoder | WavEncoder | SndfileEncoder | Mp3Encoder | AacEncoder | WholeFileEncoder


def make_encoder(fmt: str, sample_rate: int) -> Encoder:
    if fmt == "pcm":
        return PcmEncoder()
    if fmt == "wav":
        return WavEncoder(sample_rate)
    if fmt == "mp3":
        return Mp3Encoder(sample_rate)
    if fmt == "aac":
        return AacEncoder(sample_rate)
    if fmt == "flac":
        return WholeFileEncoder(fmt, sample_rate)
    return SndfileEncoder(fmt, sample_rate)
