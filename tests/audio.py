"""Reference audio the tests write themselves: ~1 s slices of f5-tts's bundled recordings."""

from __future__ import annotations

import io
from importlib.resources import files

import numpy as np
import soundfile as sf


def bundled(name: str) -> tuple[np.ndarray, int]:
    path = files("f5_tts").joinpath(f"infer/examples/basic/{name}")
    data, rate = sf.read(str(path), dtype="float32")
    return data, rate


def encode(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = "FLOAT") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def english_clip(seconds: float = 1.0) -> tuple[np.ndarray, int]:
    data, rate = bundled("basic_ref_en.wav")
    return data[: int(seconds * rate)], rate


def chinese_clip(seconds: float = 1.0) -> tuple[np.ndarray, int]:
    data, rate = bundled("basic_ref_zh.wav")
    start = int(0.3 * rate)
    return data[start : start + int(seconds * rate)], rate


EN_TRANSCRIPT = "Some call me"
ZH_TRANSCRIPT = "对，这就是我"
