"""Normalisation says tokens as people do, never loses a plain word, and each rule can be switched off."""

from __future__ import annotations

import dataclasses
import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from text.normalize import NormalizeOptions, detect_language, normalize, normalize_spans, say_as
from text.normalize.english import ABBREVIATIONS, TITLES

ENGLISH = [
    # numbers
    ("I have 42 apples.", "I have forty-two apples."),
    ("It was -5 outside.", "It was minus five outside."),
    ("Pi is 3.14.", "Pi is three point one four."),
    ("A crowd of 1,234,567 people", "A crowd of one million, two hundred and thirty-four thousand, "
     "five hundred and sixty-seven people"),
    ("0 errors", "zero errors"),
    ("Pages 1, 2 and 3", "Pages one, two and three"),
    ("In 2026 we had 2026 items.", "In twenty twenty-six we had two thousand and twenty-six items."),
    ("the 1990s and the '80s", "the nineteen nineties and the eighties"),
    ("Version 1.2.3", "Version one dot two dot three"),
    ("F5 model", "F five model"),
    # currency
    ("It costs $3.50.", "It costs three dollars and fifty cents."),
    ("Only $1 now", "Only one dollar now"),
    ("$0.99 each", "ninety-nine cents each"),
    ("$1,000 prize", "one thousand dollars prize"),
    ("$1.5 million raised", "one point five million dollars raised"),
    ("£2.01 left", "two pounds and one penny left"),
    ("€5 fee", "five euros fee"),
    ("¥100 coin", "one hundred yen coin"),
    ("20 USD total", "twenty dollars total"),
    # dates
    ("On 2026-11-29 we ship.", "On November twenty-ninth, twenty twenty-six we ship."),
    ("Due 11/29/2026.", "Due November twenty-ninth, twenty twenty-six."),
    ("Due 29/11/2026.", "Due November twenty-ninth, twenty twenty-six."),
    ("Nov 29, 2026", "November twenty-ninth, twenty twenty-six"),
    ("29 November 2026", "the twenty-ninth of November, twenty twenty-six"),
    ("born in March 1990", "born in March nineteen ninety"),
    ("Nov 45, 2026", "Nov forty-five, twenty twenty-six"),
    # times
    ("Meet at 10:30.", "Meet at ten thirty."),
    ("Meet at 10:30 pm. Then go.", "Meet at ten thirty P M. Then go."),
    ("at 7:05 am", "at seven oh five A M"),
    ("at 10:00", "at ten o'clock"),
    ("by 5 p.m. tomorrow", "by five P M tomorrow"),
    ("It ends at 5pm.", "It ends at five P M."),
    # ordinals
    ("The 3rd time", "The third time"),
    ("her 21st birthday", "her twenty-first birthday"),
    # units
    ("Drive 100 km/h.", "Drive one hundred kilometers per hour."),
    ("It weighs 5kg.", "It weighs five kilograms."),
    ("1 kg of flour", "one kilogram of flour"),
    ("50% off", "fifty percent off"),
    ("It is 20°C today", "It is twenty degrees Celsius today"),
    ("6 ft tall", "six feet tall"),
    ("a 2.5 GHz chip with 16 GB", "a two point five gigahertz chip with sixteen gigabytes"),
    # abbreviations
    ("Dr. Smith is in.", "Doctor Smith is in."),
    ("Mr. and Mrs. Jones", "Mister and Missus Jones"),
    ("He lives on Main St. He is nice.", "He lives on Main Street. He is nice."),
    ("Visit St. Louis.", "Visit Saint Louis."),
    ("Apples, pears, etc. Then more.", "Apples, pears, et cetera. Then more."),
    ("fruit, e.g. apples", "fruit, for example apples"),
    ("cats vs. dogs", "cats versus dogs"),
    ("No. 5 is here", "number five is here"),
    # symbols
    ("salt & pepper", "salt and pepper"),
    ("ticket #7", "ticket number seven"),
    # addresses
    ("See https://www.example.com/docs/v2 now.", "See w w w dot example dot com slash docs slash v two now."),
    ("Go to example.com.", "Go to example dot com."),
    ("Write to john.doe@example.com today.", "Write to john dot doe at example dot com today."),
]

CHINESE = [
    ("今天是2026年11月29日", "今天是二零二六年十一月二十九日"),
    ("圆周率约为3.5", "圆周率约为三点五"),
    ("气温-3度", "气温负三度"),
    ("增长了50%", "增长了百分之五十"),
    ("有1,234人", "有一千二百三十四人"),
    ("价格¥12.5", "价格十二点五元"),
    ("时间10:30", "时间十点三十分"),
    ("下午2:05出发", "下午两点零五分出发"),
    ("日期2026-11-29", "日期二零二六年十一月二十九日"),
    ("温度25°C", "温度二十五摄氏度"),
    ("跑了5km", "跑了五公里"),
    ("电话13800138000", "电话一三八零零一三八零零零"),
    ("第3名", "第三名"),
]


@pytest.mark.parametrize(("text", "spoken"), ENGLISH)
def test_english(text: str, spoken: str) -> None:
    assert normalize(text, "en") == spoken


@pytest.mark.parametrize(("text", "spoken"), CHINESE)
def test_chinese(text: str, spoken: str) -> None:
    assert normalize(text, "zh") == spoken
    assert normalize(text) == spoken  # detected by script


@pytest.mark.parametrize(("text", "spoken"), ENGLISH[:20] + CHINESE)
def test_normalising_twice_changes_nothing_more(text: str, spoken: str) -> None:
    assert normalize(spoken) == spoken


def test_language_detection_and_pass_through() -> None:
    assert detect_language("Hello there") == "en"
    assert detect_language("今天天气很好 OK") == "zh"
    assert detect_language("今日はいい天気") == "ja"
    assert normalize("今日は3時", "auto") == "今日は3時"  # no Japanese rules: untouched
    assert normalize("Il a 3 ans", "fr") == "Il a 3 ans"
    assert normalize("3 kg", "en-US") == "three kilograms"
    assert normalize("3公斤", "zh-CN") == "三公斤"


# Words the rules deliberately rewrite; every other plain word must come through.
REWRITTEN = {w.lower() for w in (*ABBREVIATIONS, *TITLES, "St", "No", "www", "am", "pm")}
WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéüß", min_size=1, max_size=10)
SEPARATOR = st.sampled_from([" ", ", ", ". ", "! ", "? ", "; ", ": ", " - ", "'", "\n", " (", ") ", ".", "\"", "/"])


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(WORD, SEPARATOR), min_size=1, max_size=30), st.sampled_from(["auto", "en", "zh"]))
def test_plain_words_are_never_dropped(parts: list[tuple[str, str]], lang: str) -> None:
    text = "".join(word + sep for word, sep in parts)
    words_in = [w for w in re.findall(r"[^\W\d_]+", text) if w.lower() not in REWRITTEN]
    words_out = iter(re.findall(r"[^\W\d_]+", normalize(text, lang)))
    # Every input word appears in the output, in order (others may be added around it, e.g. "dot").
    assert all(any(w == out for out in words_out) for w in words_in)


def test_each_rule_can_be_switched_off() -> None:
    sample = {"urls": "example.com", "emails": "a@example.com", "dates": "2026-11-29", "times": "10:30",
              "currency": "$5", "ordinals": "3rd", "units": "5 kg", "numbers": "42",
              "abbreviations": "etc. and more", "symbols": "a & b"}
    assert set(sample) == {f.name for f in dataclasses.fields(NormalizeOptions)}
    for name, text in sample.items():
        assert normalize(text, "en") != text, name
        off = NormalizeOptions(**{name: False})
        if name in ("dates", "times", "currency", "ordinals", "units"):  # their numbers are still said
            assert normalize(text, "en", off) != normalize(text, "en"), name
        else:
            assert normalize(text, "en", off) == text, name
    everything = " ".join(sample.values())
    assert normalize(everything, "en", NormalizeOptions.disabled()) == everything


def test_spans_map_spoken_text_back_to_the_given_text() -> None:
    result = normalize_spans("Pay $3.50 by 10:30, ok?", "en")
    assert result.spoken == "Pay three dollars and fifty cents by ten thirty, ok?"
    start = result.spoken.index("fifty")
    assert result.text_span(start, start + 5) == (4, 9)  # inside a rewritten token: the whole token
    start = result.spoken.index("ok")
    assert result.text_span(start, start + 2) == (20, 22)  # verbatim text maps one to one
    assert result.text_span(0, len(result.spoken)) == (0, len(result.text))
    spans = result.spans
    assert all(a.spoken_end == b.spoken_start for a, b in itertools.pairwise(spans))
    assert all(a.text_end <= b.text_start for a, b in itertools.pairwise(spans))


def test_glued_tokens_get_spaces() -> None:
    assert normalize("abc5kg", "en") == "abc five kilograms"
    assert normalize("跑5km了", "zh") == "跑五公里了"


@pytest.mark.parametrize(("kind", "text", "lang", "fmt", "spoken"), [
    ("characters", "AB12", "en", None, "A B one two"),
    ("cardinal", "1,234", "en", None, "one thousand, two hundred and thirty-four"),
    ("ordinal", "2", "en", None, "second"),
    ("date", "2026-11-29", "en", None, "November twenty-ninth, twenty twenty-six"),
    ("date", "29.11.2026", "en", "dmy", "November twenty-ninth, twenty twenty-six"),
    ("date", "1999", "en", "y", "nineteen ninety-nine"),
    ("telephone", "+1 555-0100", "en", None, "plus one, five five five, zero one zero zero"),
    ("cardinal", "12", "zh", None, "十二"),
    ("ordinal", "3", "zh", None, "第三"),
    ("telephone", "138-0013", "zh", None, "幺三八，零零幺三"),
])
def test_say_as(kind: str, text: str, lang: str, fmt: str | None, spoken: str) -> None:
    assert say_as(kind, text, lang, fmt) == spoken


@pytest.mark.parametrize(("kind", "text", "fmt"), [("cardinal", "abc", None), ("date", "2026-13-01", None),
                                                   ("date", "2026-11", "ymd"), ("telephone", "none", None),
                                                   ("unknown", "1", None), ("cardinal", "1 2", None),
                                                   ("ordinal", "2.5", None), ("date", "12026-11-29", None),
                                                   ("date", "2026-011-29", None)])
def test_say_as_refuses_what_it_cannot_read(kind: str, text: str, fmt: str | None) -> None:
    with pytest.raises(ValueError):
        say_as(kind, text, "en", fmt)


HUGE = "9" * 5000  # past Python's 4 300-digit limit on int(str)


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("text", [HUGE, f"-{HUGE}", f"1.{HUGE}", f"{HUGE}th", f"${HUGE}", f"${HUGE}.50",
                                  f"{HUGE} km", f"{HUGE}%", f"in {HUGE}", f"{HUGE} USD", f"No. {HUGE}",
                                  "1" + ",000" * 1500])
def test_huge_numbers_are_read_digit_by_digit(text: str, lang: str) -> None:
    """A number too long to say is read digit by digit, with no ``int()`` of it (which raises past 4 300
    digits): whatever a client sends, normalising it is never a server error."""
    spoken = normalize(text, lang)
    digits = re.findall(r"\b(?:zero|one|nine)\b", spoken) if lang == "en" else re.findall("[零一九]", spoken)
    assert len(digits) >= 4500


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("kind", ["cardinal", "number", "ordinal", "telephone", "characters"])
def test_say_as_reads_huge_numbers(kind: str, lang: str) -> None:
    spoken = say_as(kind, HUGE, lang)
    assert spoken.count("nine" if lang == "en" else "九") >= 4999
    assert say_as("ordinal", "1" * 20, "en").endswith("one first")


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_say_as_date_of_a_huge_number_is_not_a_date(lang: str) -> None:
    with pytest.raises(ValueError, match="too long"):
        say_as("date", HUGE, lang, "y")
    with pytest.raises(ValueError, match="does not match"):
        say_as("date", HUGE, lang)


def test_chinese_fractions_keep_every_digit() -> None:
    assert normalize("3.14159265358979323846", "zh") == "三点一四一五九二六五三五八九七九三二三八四六"
    assert normalize("-1.5 12.0", "zh") == "负一点五 十二点零"
