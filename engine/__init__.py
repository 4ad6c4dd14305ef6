"""F5-TTS + Vocos: loading, warm-up, voices, text chunking and batched synthesis (no asyncio here)."""

from engine.errors import (
    EngineError,
    InvalidAudioError,
    InvalidParameterError,
    InvalidTextError,
    ModelLoadError,
    TextTooLongError,
    TranscriptTooLongError,
)
from engine.params import SynthesisParams
from engine.synthesis import Engine, EngineConfig, SynthesisItem, warmup_batch_sizes
from engine.voices import SAMPLE_RATE, Voice

__all__ = [
    "SAMPLE_RATE",
    "Engine",
    "EngineConfig",
    "EngineError",
    "InvalidAudioError",
    "InvalidParameterError",
    "InvalidTextError",
    "ModelLoadError",
    "SynthesisItem",
    "SynthesisParams",
    "TextTooLongError",
    "TranscriptTooLongError",
    "Voice",
    "warmup_batch_sizes",
]
