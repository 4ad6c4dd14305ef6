"""Text normalisation: write numbers, symbols and abbreviations out as people say them.

F5-TTS speaks the characters it is given, so "$3.50" or "2026-11-29" come out as noise or letter
soup. ``normalize`` rewrites such tokens into words before chunking; plain words pass through
untouched (a property test holds us to that). English and Chinese have rules; any other language
passes through unchanged, because reading French numbers with English rules is worse than not at all.

The rules of a language are regexes tried in one left-to-right pass (one alternation, earlier rules
win at a position), so a rewritten token is never rewritten again and every stretch of the spoken text
knows the stretch of the given text it came from: ``normalize_spans`` returns that alignment.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from text.normalize import chinese, english
from text.normalize.rules import Rule, SayAs

__all__ = ["SUPPORTED_LANGUAGES", "NormalizeOptions", "Normalized", "Span", "detect_language", "normalize",
           "normalize_spans", "prepare", "resolve_language", "say_as"]

SUPPORTED_LANGUAGES = ("en", "zh")


@dataclass(frozen=True)
class NormalizeOptions:
    """Which rules run. All on by default; ``NormalizeOptions.disabled()`` is the per-request off switch."""

    urls: bool = True  # https://example.com/a -> example dot com slash a
    emails: bool = True  # a.b@example.com -> a dot b at example dot com
    dates: bool = True  # 2026-11-29, 11/29/2026, Nov 29, 29 November 2026
    times: bool = True  # 10:30, 10:30 pm, 5 a.m.
    currency: bool = True  # $3.50, €5, £2, ¥100, 3 USD
    ordinals: bool = True  # 3rd -> third
    units: bool = True  # 5 km/h, 3 kg, 50%, 20 °C
    numbers: bool = True  # cardinals, decimals, negatives, 1,234, years, decades
    abbreviations: bool = True  # Dr., Mr., St., etc., e.g.
    symbols: bool = True  # & -> and, #5 -> number five

    @classmethod
    def disabled(cls) -> NormalizeOptions:
        return cls(**{field.name: False for field in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Span:
    """One stretch of the spoken text and the stretch of the given text it speaks (half-open character
    offsets). ``rule`` is None where the text was copied verbatim, so offsets map one to one inside it."""

    text_start: int
    text_end: int
    spoken_start: int
    spoken_end: int
    rule: str | None


@dataclass(frozen=True)
class Normalized:
    spoken: str
    """What is said: numbers, symbols... written out."""
    text: str
    """The text as given."""
    spans: tuple[Span, ...]

    def text_span(self, start: int, end: int) -> tuple[int, int]:
        """The stretch of the given text that ``spoken[start:end]`` speaks. A position inside a rewritten
        token maps to the whole token (its words cannot be split back)."""
        lo, hi = len(self.text), 0
        for span in self.spans:
            if span.spoken_end <= start or span.spoken_start >= end:
                continue
            if span.rule is None:
                lo = min(lo, span.text_start + max(start - span.spoken_start, 0))
                hi = max(hi, span.text_start + min(end, span.spoken_end) - span.spoken_start)
            else:
                lo, hi = min(lo, span.text_start), max(hi, span.text_end)
        return (lo, hi) if lo <= hi else (start, start)


_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_LATIN = re.compile(r"[A-Za-z]")


def detect_language(text: str) -> str:
    """'zh' when Han characters carry the text, 'ja' when kana appear (no rules: passed through), else 'en'.
    A Chinese character is worth about a word, an English word about four letters."""
    if _KANA.search(text):
        return "ja"
    han = len(_HAN.findall(text))
    return "zh" if han and han * 4 >= len(_LATIN.findall(text)) else "en"


def resolve_language(text: str, lang: str) -> str:
    """'auto' -> detected; 'en-US', 'zh_CN', 'cmn' -> 'en', 'zh'."""
    code = lang.strip().lower().replace("_", "-").split("-")[0]
    if code in ("auto", ""):
        return detect_language(text)
    return "zh" if code in ("cmn", "yue", "zho", "chi") else code


_RULES: dict[str, Sequence[Rule]] = {"en": english.RULES, "zh": chinese.RULES}


@lru_cache(maxsize=64)
def _compiled(lang: str, options: NormalizeOptions) -> tuple[re.Pattern[str], tuple[Rule, ...]]:
    rules = tuple(rule for rule in _RULES[lang] if getattr(options, rule.option))
    # Each rule is wrapped in a named group so the match says which rule fired (the outer group closes
    # last, so it is ``lastgroup``); rules use only unnamed groups, which combine without clashes.
    joined = "|".join(f"(?P<r{i}>{rule.pattern.pattern})" for i, rule in enumerate(rules))
    return re.compile(joined or r"(?!)"), rules


def prepare() -> None:
    """Compile every language's rules for the default options now (~0.1 s on a CPU core), so that the
    first request does not pay for it: servers call this while they warm up."""
    for lang in _RULES:
        _compiled(lang, NormalizeOptions())


def _spaced(char: str) -> bool:
    # Latin-like letters and digits need a space between words; Han characters and kana do not.
    return char.isalnum() and ord(char) < 0x2E80


def _needs_space(left: str, right: str) -> bool:
    return bool(left) and bool(right) and _spaced(left[-1]) and _spaced(right[0])


def normalize_spans(text: str, lang: str = "auto", options: NormalizeOptions | None = None) -> Normalized:
    """``normalize`` plus the alignment of every stretch of the spoken text to the given text it speaks."""
    code = resolve_language(text, lang)
    if code not in _RULES:
        return Normalized(text, text, (Span(0, len(text), 0, len(text), None),) if text else ())
    combined, rules = _compiled(code, options or NormalizeOptions())
    out: list[str] = []
    spans: list[Span] = []
    length = 0

    def emit(chunk: str, text_start: int, text_end: int, rule: str | None) -> None:
        nonlocal length
        if not chunk and text_start == text_end:
            return
        out.append(chunk)
        spans.append(Span(text_start, text_end, length, length + len(chunk), rule))
        length += len(chunk)

    cursor = 0
    for match in combined.finditer(text):
        rule = rules[int((match.lastgroup or "r0")[1:])]
        local = rule.pattern.match(text, match.start())
        spoken = rule.speak(local) if local else match.group()
        emit(text[cursor : match.start()], cursor, match.start(), None)
        if _needs_space("".join(out[-1:]), spoken):  # "abc5km": keep the rewritten words apart
            emit(" ", match.start(), match.start(), rule.option)
        emit(spoken, match.start(), match.end(), rule.option)
        if _needs_space(spoken, text[match.end() : match.end() + 1]):
            emit(" ", match.end(), match.end(), rule.option)
        cursor = match.end()
    emit(text[cursor:], cursor, len(text), None)
    return Normalized("".join(out), text, tuple(spans))


def normalize(text: str, lang: str = "auto", options: NormalizeOptions | None = None) -> str:
    """``text`` with numbers, dates, times, currency, units, abbreviations, URLs and e-mail addresses
    written out in words of ``lang`` ('auto' detects English or Chinese by script)."""
    return normalize_spans(text, lang, options).spoken


_SAY_AS: dict[str, dict[str, SayAs]] = {"en": english.SAY_AS, "zh": chinese.SAY_AS}


def say_as(kind: str, text: str, lang: str = "auto", fmt: str | None = None) -> str:
    """SSML ``<say-as interpret-as=kind format=fmt>``: 'characters', 'cardinal', 'ordinal', 'date',
    'telephone'. Raises ValueError for an unknown kind or text that is not of that kind."""
    code = resolve_language(text, lang)
    table = _SAY_AS.get(code, english.SAY_AS)
    if kind not in table:
        raise ValueError(f"unsupported interpret-as {kind!r}; supported: {', '.join(sorted(table))}")
    return table[kind](text.strip(), fmt)
