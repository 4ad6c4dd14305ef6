"""Chinese rules. Arabic numbers become Chinese numerals with cn2an (kept up, pure Python); years,
telephone and other long digit strings are read digit by digit, as people read them."""

from __future__ import annotations

import re

import cn2an

from text.normalize import english
from text.normalize.rules import EMAIL, URL, Rule, SayAs, read_address, rule

DIGITS = "零一二三四五六七八九"
_NUM = r"(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)"
_BEFORE = r"(?<![\d.,:/])"
CURRENCIES = {"¥": "元", "￥": "元", "$": "美元", "€": "欧元", "£": "英镑", "₹": "卢比"}
UNITS = {"km/h": "公里每小时", "m/s": "米每秒", "km": "公里", "cm": "厘米", "mm": "毫米", "m": "米", "kg": "千克",
         "mg": "毫克", "g": "克", "ml": "毫升", "L": "升", "°C": "摄氏度", "℃": "摄氏度", "°F": "华氏度", "°": "度",
         "kWh": "千瓦时", "kW": "千瓦", "GB": "G B", "MB": "M B", "ms": "毫秒"}
_UNIT = "|".join(re.escape(u).replace("°", "° ?") for u in sorted(UNITS, key=len, reverse=True))
ADDRESS_SYMBOLS = {".": "点", "/": "斜杠", "-": "杠", "_": "下划线", ":": "冒号", "@": "at", "?": "问号",
                   "=": "等于", "&": "和", "#": "井号", "%": "百分号", "~": "波浪号", "+": "加"}


def digits(text: str) -> str:
    return "".join(DIGITS[int(c)] for c in text if c.isdecimal())


def number(text: str) -> str:
    """'-1,234.5' -> '负一千二百三十四点五'. Leading zeros and numbers of 11+ digits (telephone,
    account numbers) are read digit by digit."""
    text = text.replace(",", "")
    sign = "负" if text.startswith("-") else ""
    whole, point, fraction = text.lstrip("-").partition(".")
    # The fraction is read digit by digit here, as cn2an would, but whole: cn2an keeps only 16 digits.
    tail = "点" + digits(fraction) if point else ""
    if len(whole) >= 11 or (len(whole) > 1 and whole.startswith("0")):
        return sign + digits(whole) + tail
    return sign + str(cn2an.an2cn(whole)) + tail


@rule("emails", EMAIL)
def _email(match: re.Match[str]) -> str:
    return read_address(match.group(), ADDRESS_SYMBOLS, number)


@rule("urls", URL)
def _url(match: re.Match[str]) -> str:
    return read_address(match.group(), ADDRESS_SYMBOLS, number)


def date(y: str | None, m: str, d: str | None) -> str:
    if not (1 <= int(m) <= 12 and (d is None or 1 <= int(d) <= 31)):
        raise ValueError(f"not a date: month {m}, day {d}")
    return (f"{digits(y)}年" if y else "") + f"{number(m)}月" + (f"{number(d)}日" if d else "")


@rule("dates", r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)")
def _numeric_date(match: re.Match[str]) -> str:
    try:
        return date(*match.groups())
    except ValueError:
        return "".join(number(p) if p.isdigit() else p for p in re.split(r"(\D)", match.group()) if p)


@rule("dates", r"(?<!\d)(\d{2,4})(?=年)")
def _year(match: re.Match[str]) -> str:
    return digits(match.group(1))


@rule("times", _BEFORE + r"(?<!\d)([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?(?!\d)")
def _time(match: re.Match[str]) -> str:
    hour, minute, second = match.groups()
    words = number(hour).replace("二", "两") if hour in ("2", "02") else number(hour)
    words += "点"
    if minute != "00" or second:
        words += ("零" if minute[0] == "0" != minute[1] else "") + number(str(int(minute))) + "分"
    if second:
        words += ("零" if second[0] == "0" else "") + number(str(int(second))) + "秒"
    return words


@rule("currency", r"([¥￥$€£₹]) ?" + _NUM + r"|" + _BEFORE + _NUM + r" ?(元|块|美元|欧元|英镑)")
def _money(match: re.Match[str]) -> str:
    symbol, amount, amount2, unit = match.groups()
    return number(amount or amount2) + (CURRENCIES[symbol] if symbol else unit)


@rule("units", _BEFORE + _NUM + r" ?%")
def _percent(match: re.Match[str]) -> str:
    value = match.group(1)
    return ("负" if value.startswith("-") else "") + "百分之" + number(value.lstrip("-"))


@rule("units", _BEFORE + _NUM + r" ?(" + _UNIT + r")(?![A-Za-z/])")
def _unit(match: re.Match[str]) -> str:
    return number(match.group(1)) + UNITS[match.group(2).replace(" ", "")]


@rule("numbers", r"(?:(?<![A-Za-z0-9.,)\]-])-)?(?<![\d.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)")
def _number(match: re.Match[str]) -> str:
    return number(match.group())


RULES: tuple[Rule, ...] = (_email, _url, _numeric_date, _year, _time, _money, _percent, _unit, _number)


def characters(text: str, fmt: str | None = None) -> str:
    return " ".join(DIGITS[int(c)] if c.isdecimal() else c for c in text if not c.isspace())


def telephone(text: str, fmt: str | None = None) -> str:
    groups = re.findall(r"\d+", text)
    if not groups:
        raise ValueError(f"not a telephone number: {text!r}")
    # 一 is read 幺 in telephone numbers, so it cannot be misheard as 七.
    return ("加" if text.lstrip().startswith("+") else "") + "，".join(digits(g).replace("一", "幺") for g in groups)


def say_date(text: str, fmt: str | None = None) -> str:
    parts = english.date_fields(text, re.findall(r"\d+", text), fmt or "ymd")
    if "m" not in parts:
        return digits(parts["y"]) + "年"
    return date(parts.get("y"), parts["m"], parts.get("d"))


def say_cardinal(text: str, fmt: str | None = None) -> str:
    if not re.fullmatch(_NUM, text):
        raise ValueError(f"not a number: {text!r}")
    return number(text)


def say_ordinal(text: str, fmt: str | None = None) -> str:
    if not re.fullmatch(r"\d{1,3}(?:,\d{3})+|\d+", text):
        raise ValueError(f"not a whole number: {text!r}")
    return "第" + number(text)


SAY_AS: dict[str, SayAs] = {**english.SAY_AS, "characters": characters, "spell-out": characters,
                            "cardinal": say_cardinal, "number": say_cardinal, "ordinal": say_ordinal,
                            "date": say_date, "telephone": telephone}
