"""Errors the text front end raises; each carries the machine-readable ``code`` of the error table."""

from __future__ import annotations


class InvalidTextError(ValueError):
    """The text to synthesise is empty, malformed, or has nothing the model's vocabulary can speak."""

    code = "bad_request"


class TextTooLongError(InvalidTextError):
    code = "text_too_long"
