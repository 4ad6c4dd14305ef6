"""What a normalisation rule is, and the pieces English and Chinese rules share (URLs, e-mail, digits)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """A regex (unnamed groups only: rules are joined into one alternation) and how to say a match.
    ``option`` names the ``NormalizeOptions`` field that switches the rule."""

    option: str
    pattern: re.Pattern[str]
    speak: Callable[[re.Match[str]], str]


def rule(option: str, pattern: str) -> Callable[[Callable[[re.Match[str]], str]], Rule]:
    """Decorator: ``@rule("times", r"...")`` over ``def say(match) -> str`` builds a Rule. Flags must be
    inline and scoped (``(?i:...)``): the pattern is also compiled into the language's alternation."""

    def wrap(speak: Callable[[re.Match[str]], str]) -> Rule:
        return Rule(option, re.compile(pattern), speak)

    return wrap


SayAs = Callable[[str, str | None], str]  # SSML say-as: (text, format) -> spoken words


# A URL or address ends before trailing sentence punctuation: "see example.com." keeps its stop.
_TAIL = r"""[^\s<>"'.,;:!?)\]}]"""
URL = (r"(?:\b(?:https?|ftp)://|\bwww\.)[^\s<>\"']*" + _TAIL
       + r"|(?<!@)\b(?:[A-Za-z0-9-]+\.)+(?:com|org|net|edu|gov|io|ai|dev|app|info|co|uk|de|fr|cn|jp|me|tv|ly)\b"
       + r"(?:/[^\s<>\"']*" + _TAIL + r"|/)?(?![\w@-])")
EMAIL = r"\b[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b"
_URL_PART = re.compile(r"[A-Za-z]+|\d+|[^A-Za-z\d]")
_SCHEME = re.compile(r"^(?:https?|ftp)://", re.IGNORECASE)


def read_address(address: str, symbols: Mapping[str, str], number: Callable[[str], str]) -> str:
    """Read a URL or e-mail address out: 'www' spelled, words kept, numbers said, each symbol named.
    The scheme is dropped (nobody says "h t t p s colon slash slash")."""
    words: list[str] = []
    for part in _URL_PART.findall(_SCHEME.sub("", address).rstrip("/")):
        if part.lower() == "www":
            words.append(" ".join(part))
        elif part.isdigit():
            words.append(number(part))
        elif part.isalpha():
            words.append(part)
        elif part in symbols:
            words.append(symbols[part])
    return " ".join(words)


def keeps_stop(match: re.Match[str]) -> bool:
    """A token that swallowed a final '.' ('etc.', 'p.m.') also ended its sentence if nothing but
    space and a capital, or the end, follows: keep the stop then, so the chunker still cuts there."""
    if not match.group().endswith("."):
        return False
    rest = match.string[match.end() :]
    return not rest.strip() or bool(re.match(r"\s*\n|\s+[A-Z\"'“(]", rest))
