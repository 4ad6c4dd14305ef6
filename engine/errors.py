"""Typed engine errors. They name no wire codes: ``server.core.errors.classify`` maps each type onto the
server's error table."""

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
]


class EngineError(Exception):
    """Base class for every error the engine raises on purpose."""


class ModelLoadError(EngineError):
    """A checkpoint, vocab or vocoder could not be found, fetched or loaded."""


class InvalidAudioError(EngineError):
    """Reference audio that cannot be decoded, is silent, too short, or otherwise unusable."""


class InvalidParameterError(EngineError):
    """A synthesis parameter (speed, nfe_steps, cfg, ...) is out of range."""


class TranscriptTooLongError(InvalidTextError):
    """A voice transcript longer than the limit, or too long for its clip to ever fit the model's context."""
