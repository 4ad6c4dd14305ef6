"""The SSML subset becomes speech and silence segments; hostile or broken XML is refused, fast; marks
estimate word times inside a chunk and never leave it."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidTextError
from text.marks import estimate_word_times
from text.normalize import NormalizeOptions
from text.ssml import Break, Segment, Speech, SSMLError, is_ssml, parse, parse_ssml, parse_ssml_document

DOCUMENTS: list[tuple[str, list[Segment]]] = [
    ('<speak>Hello <break time="500ms"/> world, it costs $5.</speak>',
     [Speech("Hello", "Hello"), Break(0.5), Speech("world, it costs five dollars.", "world, it costs $5.")]),
    ('<speak>A<break time="2s"/>B<break strength="weak"/>C<break/>D<break strength="none"/>E</speak>',
     [Speech("A", "A"), Break(2.0), Speech("B", "B"), Break(0.25), Speech("C", "C"), Break(0.5),
      Speech("D", "D"), Speech("E", "E")]),
    ('<speak>Spell <say-as interpret-as="characters">ABC</say-as>, please.</speak>',
     [Speech("Spell A B C, please.", "Spell ABC, please.")]),
    ('<speak><say-as interpret-as="cardinal">1234</say-as> and <say-as interpret-as="ordinal">3</say-as></speak>',
     [Speech("one thousand, two hundred and thirty-four and third", "1234 and 3")]),
    ('<speak>On <say-as interpret-as="date" format="mdy">11/29/2026</say-as>.</speak>',
     [Speech("On November twenty-ninth, twenty twenty-six.", "On 11/29/2026.")]),
    ('<speak>Call <say-as interpret-as="telephone">555-0100</say-as></speak>',
     [Speech("Call five five five, zero one zero zero", "Call 555-0100")]),
    ('<speak>The <sub alias="World Wide Web">WWW</sub> is big.</speak>',
     [Speech("The World Wide Web is big.", "The WWW is big.")]),
    ('<speak><prosody rate="slow">Slow words</prosody> normal <prosody rate="150%">fast</prosody></speak>',
     [Speech("Slow words", "Slow words", 0.75), Speech("normal", "normal"), Speech("fast", "fast", 1.5)]),
    ('<speak><prosody rate="2">a <prosody rate="-50%">b</prosody></prosody></speak>',
     [Speech("a", "a", 2.0), Speech("b", "b", 1.0)]),
    ('<speak><p><s>One</s><s>Two!</s></p><p>Three</p></speak>',
     [Speech("One. Two!", "One Two!"), Speech("Three.", "Three")]),
    ('<speak xmlns="http://www.w3.org/2001/10/synthesis" version="1.0">\n  Hi   there\n</speak>',
     [Speech("Hi there", "Hi there")]),
    ('<speak xml:lang="zh-CN">今天<say-as interpret-as="telephone">138</say-as>，共5个</speak>',
     [Speech("今天幺三八，共五个", "今天138，共5个")]),
    ('<speak><!-- a comment --><break time="1s"/>Late start</speak>', [Break(1.0), Speech("Late start", "Late start")]),
]


@pytest.mark.parametrize(("document", "segments"), DOCUMENTS)
def test_documents(document: str, segments: list[Segment]) -> None:
    assert is_ssml(document)
    assert parse_ssml(document) == segments
    assert parse(document).segments == segments


def test_unknown_tags_are_stripped_with_a_warning() -> None:
    parsed = parse_ssml_document('<speak>I <emphasis level="strong">really</emphasis> mean it '
                                 '<audio src="x.wav">beep</audio></speak>')
    assert parsed.segments == [Speech("I really mean it beep", "I really mean it beep")]
    assert any("emphasis" in w for w in parsed.warnings) and any("audio" in w for w in parsed.warnings)


def test_unknown_say_as_is_spoken_as_text_with_a_warning() -> None:
    parsed = parse_ssml_document('<speak><say-as interpret-as="fraction">3</say-as> '
                                 '<say-as interpret-as="cardinal">many</say-as></speak>')
    assert parsed.segments == [Speech("three many", "3 many")]
    assert len(parsed.warnings) == 2


def test_breaks_are_capped_and_merged() -> None:
    parsed = parse_ssml_document('<speak>a<break time="30s"/>b<break time="3s"/><break time="4000ms"/>c</speak>',
                                 max_break_s=5.0)
    assert parsed.segments == [Speech("a", "a"), Break(5.0), Speech("b", "b"), Break(5.0), Speech("c", "c")]
    assert parsed.warnings


def test_rates_are_clamped_to_the_engines_range() -> None:
    parsed = parse_ssml_document('<speak><prosody rate="1000%">a</prosody></speak>')
    assert parsed.segments == [Speech("a", "a", 4.0)] and parsed.warnings


def test_normalisation_can_be_switched_off_but_say_as_still_speaks() -> None:
    doc = '<speak>$5 <say-as interpret-as="cardinal">5</say-as></speak>'
    assert parse_ssml(doc, options=NormalizeOptions.disabled()) == [Speech("$5 five", "$5 5")]


@pytest.mark.parametrize("document", [
    "<speak>unclosed",
    "<speak><break time='500ms'></speak>",
    "<voice>not speak</voice>",
    '<speak><break time="soon"/></speak>',
    '<speak><break strength="huge"/></speak>',
    '<speak><prosody rate="quick">a</prosody></speak>',
    '<speak><prosody rate="0%">a</prosody></speak>',
    "<speak>" + "<p>" * 100 + "deep" + "</p>" * 100 + "</speak>",
])
def test_malformed_documents_are_refused(document: str) -> None:
    with pytest.raises(SSMLError) as info:
        parse_ssml(document)
    assert isinstance(info.value, ValueError) and isinstance(info.value, InvalidTextError)
    assert info.value.code == "bad_request"


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<speak>&lol9;</speak>"""
EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE speak [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<speak>&xxe;</speak>"""
EXTERNAL_DTD = '<?xml version="1.0"?><!DOCTYPE speak SYSTEM "http://example.com/evil.dtd"><speak>hi</speak>'


@pytest.mark.parametrize("document", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD])
def test_entity_attacks_are_refused_fast(document: str) -> None:
    start = time.perf_counter()
    with pytest.raises(SSMLError, match="refused"):
        parse_ssml(document)
    assert time.perf_counter() - start < 0.1
    assert is_ssml(document)  # so the front ends' parse() refuses it too, rather than reading it out
    with pytest.raises(SSMLError, match="refused"):
        parse(document)


def test_plain_text_pause_markers() -> None:
    parsed = parse('Hello [pause 1s] world [pause] and <break time="250ms"/> [PAUSE:1.5s] done 5 kg')
    assert parsed.segments == [Speech("Hello", "Hello"), Break(1.0), Speech("world", "world"), Break(0.5),
                               Speech("and", "and"), Break(1.75), Speech("done five kilograms", "done 5 kg")]
    assert parse("no markers here, 3rd time").segments == [Speech("no markers here, third time",
                                                                  "no markers here, 3rd time")]
    assert parse("  ").segments == []
    with pytest.raises(SSMLError):
        parse("wait [pause forever]")


def test_a_large_document_parses_quickly() -> None:
    document = "<speak>" + "<s>It costs $3.50 at 10:30 on 2026-11-29.</s><break time='100ms'/>" * 500 + "</speak>"
    start = time.perf_counter()
    segments = parse_ssml(document)
    assert len(segments) == 1000
    assert time.perf_counter() - start < 2.0


def test_word_times_are_byte_proportional_estimates() -> None:
    words = estimate_word_times("ab cd", 500, start_sample=1000)
    assert [(w.word, w.start, w.end) for w in words] == [("ab", 1000, 1200), ("cd", 1300, 1500)]
    assert all(w.estimate for w in words)
    han = estimate_word_times("你好a", 700)  # 3 + 3 + 1 bytes
    assert [(w.word, w.start, w.end) for w in han] == [("你", 0, 300), ("好", 300, 600), ("a", 600, 700)]
    assert estimate_word_times("", 100) == [] and estimate_word_times("...", 100) == []


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.integers(min_value=1, max_value=10**6), st.integers(min_value=0, max_value=10**7))
def test_word_times_stay_inside_the_chunk_in_order(text: str, samples: int, start: int) -> None:
    words = estimate_word_times(text, samples, start)
    assert all(start <= w.start <= w.end <= start + samples for w in words)
    assert all(a.end <= b.start for a, b in itertools.pairwise(words))
    assert all(text[w.char_start : w.char_end] == w.word for w in words)


def test_what_counts_as_ssml() -> None:
    assert is_ssml('  <?xml version="1.0"?>\n<speak>hi</speak>')
    assert parse('<?xml version="1.0"?><speak>hi</speak>').segments == [Speech("hi", "hi")]
    assert not is_ssml("Say <speak> aloud") and not is_ssml("<speaker>")


@pytest.mark.parametrize("kind", ["cardinal", "ordinal", "date", "number", "telephone"])
def test_say_as_of_a_huge_number_is_spoken_not_a_crash(kind: str) -> None:
    digits = "7" * 4400
    parsed = parse(f'<speak>Count <say-as interpret-as="{kind}">{digits}</say-as>.</speak>', lang="en")
    (speech,) = parsed.segments
    assert isinstance(speech, Speech) and speech.text == f"Count {digits}."
    assert speech.spoken.count("seven") >= 4399
    assert (kind == "date") == bool(parsed.warnings)  # not a date: read as plain text, with a warning
