"""Voice aliases: other names for configured voices, so clients that only know OpenAI's voice names
(pipecat, LiveKit, Open WebUI, Home Assistant) get audio from a server with no uploaded voice.

Every OpenAI voice name maps to ``default`` until an operator maps it elsewhere, in
``<voices_dir>/aliases.json`` (``{"alloy": "me", ...}``) and/or ``--voice-aliases alloy=me,echo=other``
(the flag wins over the file). A real voice with the same id always wins over an alias: the service
looks the id up first and consults aliases only when it is not a voice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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


@dataclass(frozen=True)
class VoiceAliases:
    mapping: dict[str, str]
    """Alias name → voice id."""

    @classmethod
    def build(cls, directory: Path | None, flag: str) -> VoiceAliases:
        mapping = dict.fromkeys(OPENAI_VOICES, "default")
        mapping.update(read_file(directory))
        mapping.update(parse_pairs(flag))
        if mapping != dict.fromkeys(OPENAI_VOICES, "default"):
            log.info("voice aliases", extra={"aliases": mapping})
        return cls(mapping)

    def target(self, name: str) -> str | None:
        return self.mapping.get(name)

    def listing(self) -> list[dict[str, str]]:
        return [{"id": name, "voice": target} for name, target in self.mapping.items()]
