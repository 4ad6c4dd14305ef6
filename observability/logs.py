"""Structured logging: JSON lines (orjson) for machines, a compact format for terminals.

Pass context with ``extra``: ``log.info("batch done", extra={"request_ids": [...], "seconds": 0.4})``;
every extra field becomes a JSON key. Both formats escape what they print (JSON by its own rules), so a
client's value cannot forge a line.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # NON_STR_KEYS: extras may hold dicts keyed by numbers (e.g. predicted seconds per batch size).
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape(text: object) -> str:
    """``str(text)`` with every control character (newlines, carriage returns, escape sequences, Unicode
    line separators) written as a backslash escape: a value a client chose (a stream id, a voice name)
    cannot start a line of its own or repaint the terminal."""
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), str(text))


class TextFormatter(logging.Formatter):
    """One line a record, every field escaped (``escape``); a traceback follows on lines indented by two
    spaces, so nothing in it reads as a record of its own."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{escape(k)}={escape(v)}" for k, v in _extras(record).items())
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname[0]} " \
               f"{escape(record.name)}: {escape(record.getMessage())}" + (f"  {extras}" if extras else "")
        if record.exc_info:
            line += "\n" + "\n".join("  " + row for row in self.formatException(record.exc_info).splitlines())
        return line


def configure_logging(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
