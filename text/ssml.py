"""An SSML subset, and pause markers for plain text: text in, a list of speech and silence segments out.

SSML is opt-in: a request whose text, stripped, starts with ``<speak`` (optionally after an XML
declaration) is parsed as SSML (``is_ssml``).
Supported: ``<speak xml:lang>``, ``<break time="500ms|2s" strength="none|x-weak|weak|medium|strong|
x-strong">``, ``<say-as interpret-as="characters|spell-out|cardinal|number|ordinal|date|telephone"
format="ymd|mdy|dmy|...">``, ``<sub alias>``, ``<prosody rate="x-slow|slow|medium|fast|x-fast|80%|+20%|1.2">``
(other prosody attributes are ignored with a warning), ``<p>`` (ends the segment) and ``<s>`` (ends the
sentence). Any other element is dropped with a warning and its text spoken. Plain text between tags is
normalised (``text.normalize``); say-as and sub text is already spoken form and is not.

Untrusted XML is an attack surface: the document is parsed by defusedxml with DTDs forbidden, so entity
expansion (billion laughs) and external entities are refused before any expansion, and nesting is
bounded. Every refusal is an ``SSMLError`` (a ValueError and an ``InvalidTextError``, code bad_request).

Plain text (not SSML) may carry pause markers for clients that cannot send XML: ``[pause]`` (medium,
0.5 s), ``[pause 500ms]``, ``[pause:1.5s]``, and a bare ``<break time="2s"/>``. Segments carry a
``rate`` that multiplies the request's speed; breaks are exact silence the front end inserts between
chunks, capped at ``max_break_s`` (consecutive breaks add up, then are capped).
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import defusedxml
from defusedxml import ElementTree as SafeET

from text.errors import InvalidTextError
from text.normalize import NormalizeOptions, normalize, resolve_language, say_as

__all__ = ["Break", "Parsed", "SSMLError", "Segment", "Speech", "is_ssml", "parse", "parse_plain", "parse_ssml",
           "parse_ssml_document"]

log = logging.getLogger(__name__)

MAX_DEPTH = 32  # nesting bound: the walk is recursive, and no honest document nests this deep
STRENGTH_SECONDS = {"none": 0.0, "x-weak": 0.1, "weak": 0.25, "medium": 0.5, "strong": 0.75, "x-strong": 1.0}
RATE_WORDS = {"x-slow": 0.5, "slow": 0.75, "medium": 1.0, "default": 1.0, "fast": 1.25, "x-fast": 1.5}
RATE_RANGE = (0.25, 4.0)  # the engine's speed range: a rate outside it could not be honoured anyway
_TIME = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*", re.IGNORECASE)
_RATE = re.compile(r"\s*([+-])?(\d+(?:\.\d+)?)\s*(%)?\s*")
_SPACE = re.compile(r"\s+")
_BEFORE_PUNCT = re.compile(r" ([,.;:!?])")  # left by the padding around spoken pieces
_STOP = re.compile(r"[.!?。！？…]\W*$")
_SSML_START = re.compile(r"\s*(?:<\?xml[^>]*\?>\s*)?(?:<speak\b|<!DOCTYPE)", re.IGNORECASE)
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


class SSMLError(InvalidTextError, ValueError):
    """The document is not well-formed, is refused (DTD, entities, too deep), or has a bad value."""

    code = "bad_request"


@dataclass(frozen=True)
class Speech:
    spoken: str  # what to synthesise: normalised, say-as and sub already spoken
    text: str  # the same stretch as given in the request, for marks and captions
    rate: float = 1.0  # multiplies the request's speed (prosody rate)


@dataclass(frozen=True)
class Break:
    seconds: float  # exact silence between the chunks around it


Segment = Speech | Break


@dataclass
class Parsed:
    segments: list[Segment]
    warnings: list[str] = field(default_factory=list)


def is_ssml(text: str) -> bool:
    """Starts with <speak, after an optional XML declaration. A DOCTYPE there also counts, so that such a
    document is refused as SSML with a clear error rather than read out as text."""
    return bool(_SSML_START.match(text))


def break_seconds(time: str | None, strength: str | None) -> float:
    """``time`` ('500ms', '2s') wins over ``strength``; neither means medium."""
    if time is not None:
        match = _TIME.fullmatch(time)
        if not match:
            raise SSMLError(f"break time {time!r} is not a number of s or ms, like '500ms' or '2s'")
        return float(match.group(1)) / (1000.0 if match.group(2).lower() == "ms" else 1.0)
    if strength is None:
        return STRENGTH_SECONDS["medium"]
    if strength not in STRENGTH_SECONDS:
        raise SSMLError(f"break strength {strength!r} is not one of {', '.join(STRENGTH_SECONDS)}")
    return STRENGTH_SECONDS[strength]


def prosody_rate(rate: str) -> float:
    """'slow' 0.75, '80%' 0.8, '+20%' 1.2, '-10%' 0.9, '1.2' 1.2 (a factor on the current rate)."""
    if rate.strip() in RATE_WORDS:
        return RATE_WORDS[rate.strip()]
    match = _RATE.fullmatch(rate)
    if not match:
        raise SSMLError(f"prosody rate {rate!r} is not a word (slow, fast, ...), a percentage or a number")
    sign, number, percent = match.groups()
    value = float(number) / 100.0 if percent else float(number)
    if sign:  # relative change: +20% -> 1.2
        value = 1.0 + value if sign == "+" else 1.0 - value
    if value <= 0:
        raise SSMLError(f"prosody rate {rate!r} is not positive")
    return value


@dataclass
class _Builder:
    """Collects speech pieces and breaks in document order, then merges them into segments."""

    lang: str
    options: NormalizeOptions
    max_break_s: float
    warnings: list[str] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    # pieces of the open speech segment: (what to say, text as given, already spoken form?)
    pieces: list[tuple[str, str, bool]] = field(default_factory=list)
    rate: float = 1.0

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def speak(self, say: str, text: str, rate: float, spoken: bool = False) -> None:
        """``say`` is normalised when the segment closes, unless it is already ``spoken`` form (say-as,
        sub); ``text`` is the same stretch as given."""
        if rate != self.rate and self.pieces:
            self.close()
        self.rate = rate
        if spoken and self.lang != "zh":  # keep spoken words apart from their neighbours: "x<sub>..</sub>y"
            say = f" {say} "
        self.pieces.append((_SPACE.sub(" ", say), _SPACE.sub(" ", text), spoken))

    def end_sentence(self) -> None:
        if self.pieces and not _STOP.search("".join(p[0] for p in self.pieces).rstrip()):
            self.pieces.append(("。" if self.lang == "zh" else ". ", " ", True))

    def pause(self, seconds: float) -> None:
        self.close()
        if seconds <= 0:
            return
        last = self.segments[-1] if self.segments else None
        if isinstance(last, Break):
            seconds += last.seconds
            self.segments.pop()
        if seconds > self.max_break_s:
            self.warn(f"break of {seconds:g} s capped at {self.max_break_s:g} s")
            seconds = self.max_break_s
        self.segments.append(Break(seconds))

    def close(self) -> None:
        """Merge the open pieces into one Speech; plain pieces are normalised here, one by one."""
        spoken = "".join(s if ready else normalize(s, self.lang, self.options) for s, _, ready in self.pieces)
        text = "".join(t for _, t, _ in self.pieces)
        self.pieces = []
        spoken = _BEFORE_PUNCT.sub(r"\1", _SPACE.sub(" ", spoken)).strip()
        text = _SPACE.sub(" ", text).strip()
        if spoken:
            self.segments.append(Speech(spoken, text, self.rate))


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""  # comments and PIs have no str tag


def _say_as(elem: ET.Element, out: _Builder, rate: float) -> None:
    text = "".join(elem.itertext())
    kind = elem.get("interpret-as", "")
    try:
        out.speak(say_as(kind, text, out.lang, elem.get("format")), text, rate, spoken=True)
    except (ValueError, KeyError) as exc:
        out.warn(f"say-as {kind!r} of {text!r} read as plain text: {exc}")
        out.speak(text, text, rate)


def _element(elem: ET.Element, out: _Builder, rate: float, depth: int) -> None:
    """Speak one element (not its tail)."""
    name = _local(elem.tag)
    if name == "break":
        out.pause(break_seconds(elem.get("time"), elem.get("strength")))
    elif name == "say-as":
        _say_as(elem, out, rate)
    elif name == "sub":
        text = "".join(elem.itertext())
        out.speak(elem.get("alias", text), text, rate, spoken=True)
    else:
        if name == "prosody":
            rate = _prosody(elem, out, rate)
        elif name not in ("speak", "p", "s") and name:
            out.warn(f"<{name}> is not supported: its tags were dropped, its text kept")
        _children(elem, out, rate, depth + 1)
        if name == "s":
            out.end_sentence()
        elif name == "p":
            out.end_sentence()
            out.close()


def _prosody(elem: ET.Element, out: _Builder, rate: float) -> float:
    ignored = sorted(set(elem.keys()) - {"rate"})
    if ignored:
        out.warn(f"<prosody> {', '.join(ignored)} ignored: only rate is supported")
    if elem.get("rate") is None:
        return rate
    wanted = rate * prosody_rate(elem.get("rate", ""))
    clamped = min(max(wanted, RATE_RANGE[0]), RATE_RANGE[1])
    if clamped != wanted:
        out.warn(f"prosody rate {wanted:g} clamped to {clamped:g}")
    return clamped


def _children(elem: ET.Element, out: _Builder, rate: float, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise SSMLError(f"SSML nests deeper than {MAX_DEPTH} elements")
    if elem.text:
        out.speak(elem.text, elem.text, rate)
    for child in elem:
        _element(child, out, rate, depth)
        if child.tail:
            out.speak(child.tail, child.tail, rate)


def _parse_xml(document: str) -> ET.Element:
    try:
        root: ET.Element = SafeET.fromstring(document, forbid_dtd=True, forbid_entities=True,
                                             forbid_external=True)
    except defusedxml.DefusedXmlException as exc:  # DTDs, entities, external references
        raise SSMLError(f"SSML refused: {type(exc).__name__} (DTDs and entities are not allowed)") from None
    except ET.ParseError as exc:
        raise SSMLError(f"SSML is not well-formed XML: {exc}") from None
    if _local(root.tag) != "speak":
        raise SSMLError(f"SSML root element must be <speak>, not <{_local(root.tag)}>")
    return root


def parse_ssml_document(document: str, max_break_s: float = 10.0, lang: str = "auto",
                        options: NormalizeOptions | None = None) -> Parsed:
    """Segments and warnings of an SSML document; ``xml:lang`` on <speak> overrides ``lang``."""
    root = _parse_xml(document)
    text = "".join(root.itertext())
    out = _Builder(resolve_language(text, root.get(_XML_LANG) or lang), options or NormalizeOptions(),
                   max_break_s)
    _children(root, out, 1.0, 1)
    out.close()
    return Parsed(out.segments, out.warnings)


def parse_ssml(document: str, max_break_s: float = 10.0, lang: str = "auto",
               options: NormalizeOptions | None = None) -> list[Segment]:
    """Segments of an SSML document; warnings (unsupported tags, capped breaks) are logged."""
    parsed = parse_ssml_document(document, max_break_s, lang, options)
    for warning in parsed.warnings:
        log.warning("ssml: %s", warning)
    return parsed.segments


_PAUSE = re.compile(r"\[pause(?:[ :]\s*([^\]]*))?\]|<break\s*(?:time\s*=\s*[\"']([^\"']*)[\"'])?\s*/>",
                    re.IGNORECASE)


def parse_plain(text: str, max_break_s: float = 10.0, lang: str = "auto",
                options: NormalizeOptions | None = None) -> Parsed:
    """Plain text with ``[pause 500ms]`` / ``<break time="1s"/>`` markers: speech and breaks."""
    out = _Builder(resolve_language(text, lang), options or NormalizeOptions(), max_break_s)
    cursor = 0
    for match in _PAUSE.finditer(text):
        out.speak(text[cursor : match.start()], text[cursor : match.start()], 1.0)
        out.pause(break_seconds(match.group(1) or match.group(2), None))
        cursor = match.end()
    out.speak(text[cursor:], text[cursor:], 1.0)
    out.close()
    return Parsed(out.segments, out.warnings)


def parse(text: str, max_break_s: float = 10.0, lang: str = "auto",
          options: NormalizeOptions | None = None) -> Parsed:
    """The front ends' entry point: SSML when the text starts with <speak, else plain text with pause
    markers. Pass ``NormalizeOptions.disabled()`` for a request that asked for ``normalize: false``."""
    parse_one = parse_ssml_document if is_ssml(text) else parse_plain
    return parse_one(text, max_break_s, lang, options)
