"""Voice aliases: other names for configured voices, so clients that only know OpenAI's voice names
(pipecat, LiveKit, Open WebUI, Home Assistant) get audio from a server with no uploaded voice.

Every OpenAI voice name maps to ``default`` until an operator maps it elsewhere, in
``<voices_dir>/aliases.json`` (``{"alloy": "me", ...}``) and/or ``--voice-aliases alloy=me,echo=other``
(the flag wins over the file); edits to the file take effect within ``--voices-sync-s`` on every replica
that shares the directory. A real voice with the same id always wins over an alias: the service
looks the id up first and consults aliases only when it is not a voice.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

OPENAI_VOICES = ("alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage",
                 "shimmer", "verse")
ALIASES_FILE = "aliases.json"


class AliasError(ValueError):
    """A malformed ``--voice-aliases`` value or aliases file (a startup error)."""


def parse_pairs(text: str) -> dict[str, str]:
    """``"alloy=me, echo=other"`` → ``{"alloy": "me", "echo": "other"}``."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, target = (s.strip() for s in item.partition("="))
        if not sep or not name or not target:
            raise AliasError(f"voice alias {item!r} is not NAME=VOICE")
        pairs[name] = target
    return pairs


def read_file(directory: Path | None) -> dict[str, str]:
    """The aliases file in the voices dir, or nothing. Raises AliasError when it exists but is malformed."""
    if directory is None or not (directory / ALIASES_FILE).is_file():
        return {}
    path = directory / ALIASES_FILE
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise AliasError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise AliasError(f"{path} must be a JSON object of name -> voice id strings")
    return data


class VoiceAliases:
    """Alias name → voice id. The file is re-read when it changes (checked at most every ``recheck_s``, on
    use), so every replica sharing the voices dir follows an edit; a malformed edit is logged and the last
    good mapping kept."""

    def __init__(self, directory: Path | None, flag: str, recheck_s: float = 1.0) -> None:
        self._directory = directory
        self._flag = parse_pairs(flag)
        self._recheck_s = recheck_s
        self._seen = _file_signature(directory)
        self._checked = time.monotonic()
        self.mapping = self._merge(read_file(directory))

    @classmethod
    def build(cls, directory: Path | None, flag: str, recheck_s: float = 1.0) -> VoiceAliases:
        """Raises AliasError when the flag or the file is malformed (a startup error)."""
        aliases = cls(directory, flag, recheck_s)
        if aliases.mapping != dict.fromkeys(OPENAI_VOICES, "default"):
            log.info("voice aliases", extra={"aliases": aliases.mapping})
        return aliases

    def target(self, name: str) -> str | None:
        self._recheck()
        return self.mapping.get(name)

    def listing(self) -> list[dict[str, str]]:
        self._recheck()
        return [{"id": name, "voice": target} for name, target in self.mapping.items()]

    def _merge(self, from_file: dict[str, str]) -> dict[str, str]:
        return {**dict.fromkeys(OPENAI_VOICES, "default"), **from_file, **self._flag}  # the flag wins

    def _recheck(self) -> None:
        now = time.monotonic()
        if self._directory is None or now - self._checked < self._recheck_s:
            return
        self._checked = now
        seen = _file_signature(self._directory)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            self.mapping = self._merge(read_file(self._directory))
        except AliasError as exc:
            log.warning("keeping the previous voice aliases: %s", exc)
            return
        log.info("voice aliases changed", extra={"aliases": self.mapping})


def _file_signature(directory: Path | None) -> tuple[int, int, int] | None:
    """(inode, mtime, size) of the aliases file: an edit in place or a replacing rename both change it."""
    if directory is None:
        return None
    try:
        stat = (directory / ALIASES_FILE).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size
