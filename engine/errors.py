"""Typed engine errors. Each carries a machine-readable ``code`` that front ends map to their protocol."""

from __future__ import annotations

from text.errors import InvalidTextError, TextTooLongError

__all__ = [
    "EngineError",
    "InvalidAudioError",
    "InvalidParameterError",
    "InvalidTextError",
    "ModelLoadError",
    "TextTooLongError",
    "TranscriptTooLongError",
    "UnknownVoiceError",
]


class EngineError(Exception):
    """Base class for every error the engine raises on purpose."""

    code = "internal"


class ModelLoadError(EngineError):
    """A checkpoint, vocab or vocoder could not be found, fetched or loaded."""

    code = "model_load"


class InvalidAudioError(EngineError):
    """Reference audio that cannot be decoded, is silent, too short, or otherwise unusable."""

    code = "bad_audio"


class UnknownVoiceError(EngineError):
    code = "unknown_voice"


class InvalidParameterError(EngineError):
    """A synthesis parameter (speed, nfe_steps, cfg, ...) is out of range."""

    code = "bad_request"


class TranscriptTooLongError(InvalidTextError):
    """A voice transcript longer than the limit, or too long for its clip to ever fit the model's context."""

    code = "transcript_too_long"
