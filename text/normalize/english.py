"""English rules. Number words come from num2words; the tables here are only what it lacks
(currency and unit names as said after a number, abbreviations, month names)."""

from __future__ import annotations

import re

from num2words import num2words

from text.normalize.rules import EMAIL, URL, Rule, SayAs, keeps_stop, read_address, rule

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
_MONTH = r"(Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sept?(?:ember)?" \
         r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"  # 1,234.56 or 42
_NUM = r"(-?" + _NUMBER + ")"
_BEFORE = r"(?<![\d.,:/])"  # not the tail of another number, time or date
_SCALE = r"(?:\s(thousand|million|billion|trillion)\b)?"
# symbol or code: singular, plural, minor unit singular, plural (None: no minor unit is said)
CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
              "£": ("pound", "pounds", "penny", "pence"), "¥": ("yen", "yen", None, None),
              "₹": ("rupee", "rupees", "paisa", "paise")}
CODES = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹", "CNY": "yuan", "RMB": "yuan"}
UNITS = {"km/h": "kilometer per hour", "mph": "mile per hour", "m/s": "meter per second", "km": "kilometer",
         "cm": "centimeter", "mm": "millimeter", "m": "meter", "kg": "kilogram", "mg": "milligram",
         "g": "gram", "lbs": "pound", "lb": "pound", "oz": "ounce", "ft": "foot", "ml": "milliliter",
         "L": "liter", "°C": "degree Celsius", "°F": "degree Fahrenheit", "°": "degree", "%": "percent",
         "KB": "kilobyte", "MB": "megabyte", "GB": "gigabyte", "TB": "terabyte", "kHz": "kilohertz",
         "MHz": "megahertz", "GHz": "gigahertz", "Hz": "hertz", "ms": "millisecond", "kWh": "kilowatt hour",
         "kW": "kilowatt", "W": "watt", "V": "volt", "mAh": "milliamp hour"}
_IRREGULAR = {"foot": "feet", "percent": "percent", "hertz": "hertz", "degree Celsius": "degrees Celsius",
              "degree Fahrenheit": "degrees Fahrenheit", "kilometer per hour": "kilometers per hour",
              "mile per hour": "miles per hour", "meter per second": "meters per second"}
_UNIT = "|".join(re.escape(u).replace("°", "° ?") for u in sorted(UNITS, key=len, reverse=True))
TITLES = {"Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Dr": "Doctor", "Prof": "Professor", "Mt": "Mount"}
ABBREVIATIONS = {"etc": "et cetera", "vs": "versus", "e.g": "for example", "i.e": "that is",
                 "approx": "approximately", "Jr": "Junior", "Sr": "Senior", "Ave": "Avenue", "Blvd": "Boulevard"}
ADDRESS_SYMBOLS = {".": "dot", "/": "slash", "-": "dash", "_": "underscore", ":": "colon", "?": "question mark",
                   "=": "equals", "&": "and", "#": "hash", "@": "at", "%": "percent", "~": "tilde", "+": "plus"}


ORDINAL_DIGITS = ["zeroth", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth"]
SAID_DIGITS = 15
"""Past a quadrillion nobody says the number: longer ones are read digit by digit. Checked on the digit
string before any ``int()``, which refuses strings of more than 4 300 digits."""


def _too_long(digits: str) -> bool:
    return len(digits.lstrip("-").lstrip("0")) > SAID_DIGITS


def _one_by_one(digits: str) -> str:
    return " ".join(DIGITS[int(d)] for d in digits.lstrip("-"))


def integer(digits: str) -> str:
    return _one_by_one(digits) if _too_long(digits) else str(num2words(int(digits)))


def cardinal(number: str) -> str:
    """'-1,234.05' -> 'minus one thousand, two hundred and thirty-four point zero five'."""
    number = number.replace(",", "")
    sign, number = ("minus ", number[1:]) if number.startswith("-") else ("", number)
    whole, _, fraction = number.partition(".")
    words = integer(whole or "0")
    if fraction:
        words += " point " + " ".join(DIGITS[int(d)] for d in fraction)
    return sign + words


def ordinal(number: str) -> str:
    digits = number.replace(",", "")
    if _too_long(digits):  # "nine nine ... ninth"
        return " ".join([*(DIGITS[int(d)] for d in digits[:-1]), ORDINAL_DIGITS[int(digits[-1])]])
    return str(num2words(int(digits), to="ordinal"))


def year(number: str) -> str:
    return str(num2words(int(number), to="year"))


def _plural(word: str) -> str:
    return word[:-1] + "ies" if word.endswith("y") else word + "s"


@rule("emails", EMAIL)
def _email(match: re.Match[str]) -> str:
    return read_address(match.group(), ADDRESS_SYMBOLS, cardinal)


@rule("urls", URL)
def _url(match: re.Match[str]) -> str:
    return read_address(match.group(), ADDRESS_SYMBOLS, cardinal)


def date(y: str | None, m: str, d: str | None) -> str:
    """'November twenty-ninth, twenty twenty-six'; raises ValueError for a month or day out of range."""
    month, day = int(m), int(d) if d else 1
    if not (1 <= month <= 12 and 1 <= day <= 31):
        raise ValueError(f"not a date: month {m}, day {d}")
    words = MONTHS[month - 1] + (f" {ordinal(d)}" if d else "")
    return words + (f", {year(y)}" if y else "")


def _month_number(name: str) -> str:
    return str(next(i for i, full in enumerate(MONTHS, 1) if full.startswith(name[:3].title())))


@rule("dates", r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b|\b(\d{1,2})/(\d{1,2})/(\d{4})\b")
def _numeric_date(match: re.Match[str]) -> str:
    y, m, d, first, second, y2 = match.groups()
    if y2:  # m/d/y as Americans write it, unless the first number cannot be a month
        y, m, d = (y2, second, first) if int(first) > 12 else (y2, first, second)
    try:
        return date(y, m, d)
    except ValueError:
        return " ".join(cardinal(n) if n.isdigit() else n for n in re.split(r"([-/])", match.group()) if n)


@rule("dates", r"\b" + _MONTH + r"\.? (\d{1,2})(?:st|nd|rd|th)?\b(?:,? (\d{4})\b)?"
      + r"|\b(\d{1,2})(?:st|nd|rd|th)? (?:of )?" + _MONTH + r"\b(?:,? (\d{4})\b)?")
def _named_date(match: re.Match[str]) -> str:
    month, day, y, day2, month2, y2 = match.groups()
    if month:
        if not 1 <= int(day) <= 31:  # "Nov 45": not a date, but its numbers are still said
            return f"{month} {integer(day)}" + (f", {year(y)}" if y else "")
        return date(y, _month_number(month), day)
    spoken = f"the {ordinal(day2)} of {MONTHS[int(_month_number(month2)) - 1]}"
    return spoken + (f", {year(y2)}" if y2 else "")


@rule("times", _BEFORE + r"\b([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?(?:\s?([AaPp])\.?[Mm]\b\.?)?(?!\d)")
def _time(match: re.Match[str]) -> str:
    hour, minute, second, half = match.groups()
    words = integer(hour)
    if minute != "00":
        words += " oh " + DIGITS[int(minute[1])] if minute[0] == "0" else " " + integer(minute)
    elif not half:
        words += " o'clock"
    if second:
        words += f" and {integer(second)} seconds"
    if half:
        words += f" {half.upper()} M" + ("." if keeps_stop(match) else "")
    return words


@rule("times", r"\b(1[0-2]|0?[1-9]) ?([AaPp])\.?[Mm]\b\.?")
def _hour(match: re.Match[str]) -> str:
    return f"{integer(match.group(1))} {match.group(2).upper()} M" + ("." if keeps_stop(match) else "")


@rule("currency", r"(-)?([$€£¥₹]) ?" + _NUM + _SCALE + r"|" + _BEFORE + _NUM + _SCALE
      + r" ?\b(USD|EUR|GBP|JPY|INR|CNY|RMB)\b")
def _money(match: re.Match[str]) -> str:
    minus, symbol, amount, scale, amount2, scale2, code = match.groups()
    symbol, amount, scale = (CODES[code], amount2, scale2) if code else (symbol, amount, scale)
    sign = "minus " if minus else ""
    if symbol not in CURRENCIES:  # yuan: no minor unit said, no plural
        return f"{sign}{cardinal(amount)}{' ' + scale if scale else ''} {symbol}"
    one, many, cent, cents = CURRENCIES[symbol]
    whole, _, fraction = amount.replace(",", "").partition(".")
    if scale or not cent or len(fraction) != 2:  # $1.5 million, ¥100, $3.999: say the number, then unit
        return f"{sign}{cardinal(amount)}{' ' + scale if scale else ''} {many if scale or amount != '1' else one}"
    # (no int() of ``whole``: it may be thousands of digits long)
    parts = [f"{integer(whole)} {one if whole == '1' else many}"] if whole.strip("0") or not int(fraction) else []
    if int(fraction):
        parts.append(f"{integer(fraction)} {cent if fraction == '01' else cents}")
    return sign + " and ".join(parts)


@rule("ordinals", _BEFORE + r"\b(\d+)(?:st|nd|rd|th)\b")
def _ordinal(match: re.Match[str]) -> str:
    return ordinal(match.group(1))


@rule("units", _BEFORE + _NUM + r" ?(" + _UNIT + r")(?![\w/])")
def _unit(match: re.Match[str]) -> str:
    amount, unit = match.group(1), match.group(2).replace(" ", "")
    name = UNITS[unit]
    plural = _IRREGULAR.get(name) or (name if name.endswith("hertz") else _plural(name))
    return f"{cardinal(amount)} {name if amount.lstrip('-') == '1' else plural}"


@rule("numbers", r"(?<![\d.])\b((?:1[1-9]|20)\d0)s\b|(?<![\d.])'?\b([2-9]0)s\b")
def _decade(match: re.Match[str]) -> str:
    full, short = match.groups()
    words = (year(full) if full else integer(short)).split()
    return " ".join([*words[:-1], _plural(words[-1])])


_YEAR_WORDS = "in|since|by|until|from|of|before|after|year|circa|" + "|".join(m.lower() for m in MONTHS)


@rule("numbers", r"\b((?i:" + _YEAR_WORDS + r")) ((?:1[1-9]|20)\d\d)\b(?![.,]\d)")
def _year(match: re.Match[str]) -> str:  # "in 2026": twenty twenty-six, where "2026 people" is a number
    return f"{match.group(1)} {year(match.group(2))}"


@rule("numbers", r"\b\d+(?:\.\d+){2,}\b")
def _dotted(match: re.Match[str]) -> str:  # versions and addresses: 1.2.3, 192.168.0.1
    return " dot ".join(integer(part) for part in match.group().split("."))


@rule("numbers", r"(?:(?<![\w.,)\]-])-)?(?<![\d.])" + _NUMBER + r"(?!\d)")
def _number(match: re.Match[str]) -> str:
    return cardinal(match.group())


@rule("abbreviations", r"\b(" + "|".join(TITLES) + r")\.")
def _title(match: re.Match[str]) -> str:
    return TITLES[match.group(1)]


@rule("abbreviations", r"\bSt\.")
def _saint_or_street(match: re.Match[str]) -> str:
    # "St. Louis" is a saint, "on Main St." a street: a capitalised word inside a sentence before it
    # names the street, as does the lack of a name after it.
    before, after = match.string[: match.start()], match.string[match.end() :]
    street = bool(re.search(r"[a-z,;:] +[A-Z][a-z]* $", before)) or not re.match(r" ?[A-Z]", after)
    return ("Street" + ("." if keeps_stop(match) else "")) if street else "Saint"


@rule("abbreviations", r"(?<![\w.])(" + "|".join(re.escape(a) for a in ABBREVIATIONS) + r")\.(?!\w)"
      + r"|\b(No)\. ?(?=\d)")
def _abbreviation(match: re.Match[str]) -> str:
    if match.group(2):
        return "number "
    return ABBREVIATIONS[match.group(1)] + ("." if keeps_stop(match) else "")


@rule("symbols", r"(?<=\s)&(?=\s)|(?<=\s)@(?=\s)|#(?=\d)|(?<=\s)\+(?=\s)|(?<=\s)=(?=\s)")
def _symbol(match: re.Match[str]) -> str:
    return {"&": "and", "@": "at", "#": "number ", "+": "plus", "=": "equals"}[match.group()]


RULES: tuple[Rule, ...] = (_email, _url, _numeric_date, _named_date, _time, _hour, _money, _ordinal, _unit,
                           _decade, _year, _dotted, _number, _title, _saint_or_street, _abbreviation, _symbol)


def characters(text: str, fmt: str | None = None) -> str:
    return " ".join(DIGITS[int(c)] if c.isdecimal() else c for c in text if not c.isspace())


def telephone(text: str, fmt: str | None = None) -> str:
    """Digits one by one, groups kept apart by commas (the pauses people make): '+1 555-0100' ->
    'plus one, five five five, zero one zero zero'."""
    groups = re.findall(r"\+|\d+", text)
    if not any(g.isdigit() for g in groups):
        raise ValueError(f"not a telephone number: {text!r}")
    spoken = [("plus" if g == "+" else " ".join(DIGITS[int(d)] for d in g)) for g in groups]
    return ", ".join(spoken).replace("plus,", "plus")


def say_date(text: str, fmt: str | None = None) -> str:
    """A date in ``fmt`` order (SSML formats: ymd, mdy, dmy, ym, my, md, dm, y; default ymd or, with a
    four-digit last field, mdy)."""
    fields = re.findall(r"\d+", text)
    order = fmt or ("ymd" if fields and len(fields[0]) == 4 else "mdy")
    parts = date_fields(text, fields, order)
    if "m" not in parts:
        return year(parts["y"])
    return date(parts.get("y"), parts["m"], parts.get("d"))


def date_fields(text: str, fields: list[str], order: str) -> dict[str, str]:
    """``fields`` named by ``order`` (SSML's ymd, mdy, ...); ValueError unless they fit: a year of at most
    four digits, a month and a day of at most two."""
    if len(fields) != len(order) or not set(order) <= set("ymd"):
        raise ValueError(f"date {text!r} does not match format {order!r}")
    parts = dict(zip(order, fields, strict=True))
    if any(len(value) > (4 if name == "y" else 2) for name, value in parts.items()):
        raise ValueError(f"date {text!r} has a field too long for a year, month or day")
    return parts


_CARDINAL = re.compile(_NUM)
_ORDINAL = re.compile(r"\d{1,3}(?:,\d{3})+|\d+")


def say_cardinal(text: str, fmt: str | None = None) -> str:
    if not _CARDINAL.fullmatch(text):
        raise ValueError(f"not a number: {text!r}")
    return cardinal(text)


def say_ordinal(text: str, fmt: str | None = None) -> str:
    if not _ORDINAL.fullmatch(text):
        raise ValueError(f"not a whole number: {text!r}")
    return ordinal(text)


SAY_AS: dict[str, SayAs] = {"characters": characters, "spell-out": characters, "cardinal": say_cardinal,
                            "number": say_cardinal, "ordinal": say_ordinal, "date": say_date,
                            "telephone": telephone}
