"""PCM conversion and streaming cross-fades between synthesised chunks."""

from __future__ import annotations

import numpy as np

CROSS_FADE_S = 0.15  # upstream's cross_fade_duration


def to_pcm16(wave: np.ndarray) -> bytes:
    """float32 [-1, 1] -> little-endian int16 bytes (clipped, rounded)."""
    clipped = np.clip(wave, -1.0, 1.0)
    return np.round(clipped * 32767.0).astype("<i2").tobytes()


class CrossFader:
    """Joins chunk waveforms as upstream's ``infer_batch_process`` does (linear fade-out/fade-in over
    ``fade`` samples), but incrementally: each ``push`` returns what can be played now, holding back
    only the tail that the next chunk will fade into. ``finish`` returns the held tail."""

    def __init__(self, fade_samples: int) -> None:
        self.fade = fade_samples
        self._tail = np.zeros(0, dtype=np.float32)
        self._started = False

    def push(self, wave: np.ndarray) -> np.ndarray:
        wave = np.asarray(wave, dtype=np.float32)
        if not self._started:
            self._started = True
            head = wave
        else:
            n = min(self.fade, len(self._tail), len(wave))
            if n <= 0:
                head = np.concatenate([self._tail, wave])
            else:
                fade_out = np.linspace(1, 0, n)
                fade_in = np.linspace(0, 1, n)
                mixed = (self._tail[-n:] * fade_out + wave[:n] * fade_in).astype(np.float32)
                head = np.concatenate([self._tail[:-n], mixed, wave[n:]])
        keep = min(self.fade, len(head))
        self._tail = head[len(head) - keep :]
        return head[: len(head) - keep]

    def finish(self) -> np.ndarray:
        tail, self._tail = self._tail, np.zeros(0, dtype=np.float32)
        return tail

