"""Voice registry: the built-in ``default`` voice plus uploaded ones, persisted under ``voices_dir``.

Each uploaded voice is a folder ``<voices_dir>/<id>/`` holding the original upload (``audio``) and
``voice.json`` (transcript, creation time). Folders are written under a temporary name and renamed into
place, so a crash never leaves a half-written voice. Preparation (decode, resample, mel) runs once, on
the model's worker thread, when a voice is added or the server starts.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from engine import Engine, EngineError, Voice
from engine.voices import DEFAULT_VOICE_ID

log = logging.getLogger(__name__)

VOICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
Worker = Callable[..., Awaitable[Any]]


class VoiceError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def describe(voice: Voice, builtin: bool = False) -> dict[str, Any]:
    return {"id": voice.id, "transcript": voice.transcript, "seconds": round(voice.seconds, 3),
            "sample_rate": 24_000, "clipped": voice.clipped, "builtin": builtin}


class VoiceStore:
    def __init__(self, engine: Engine, directory: Path | None, in_worker: Worker) -> None:
        self.engine = engine
        self.directory = directory
        self._in_worker = in_worker
        self._voices: dict[str, Voice] = {}

    async def load(self) -> None:
        """The default voice, then every persisted one (a broken folder is logged and skipped)."""
        self._voices[DEFAULT_VOICE_ID] = await self._in_worker(self.engine.default_voice)
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for folder in sorted(self.directory.iterdir()):
            if not folder.is_dir() or folder.name.startswith(".") or not VOICE_ID.match(folder.name):
                continue
            try:
                meta = orjson.loads((folder / "voice.json").read_bytes())
                audio = (folder / "audio").read_bytes()
                voice = await self._in_worker(self.engine.prepare_voice, folder.name, audio, meta["transcript"])
            except (OSError, ValueError, KeyError, EngineError) as exc:
                log.warning("skipping stored voice %s: %s", folder.name, exc)
                continue
            self._voices[voice.id] = voice
        log.info("voices loaded", extra={"count": len(self._voices)})

    def get(self, voice_id: str) -> Voice | None:
        return self._voices.get(voice_id)

    def all(self) -> list[Voice]:
        return list(self._voices.values())

    async def add(self, voice_id: str | None, audio: bytes, transcript: str) -> Voice:
        voice_id = voice_id or uuid.uuid4().hex[:12]
        if not VOICE_ID.match(voice_id):
            raise VoiceError(400, "bad_request", "voice id must be 1-64 letters, digits, '-' or '_', "
                             "starting with a letter or digit")
        if voice_id in self._voices:
            raise VoiceError(409, "conflict", f"voice {voice_id!r} already exists; delete it first")
        try:
            voice = await self._in_worker(self.engine.prepare_voice, voice_id, audio, transcript)
        except EngineError as exc:
            raise VoiceError(400, "bad_request", str(exc)) from exc
        if voice_id in self._voices:  # added concurrently while this one was being prepared
            raise VoiceError(409, "conflict", f"voice {voice_id!r} already exists; delete it first")
        self._persist(voice_id, audio, transcript)
        self._voices[voice_id] = voice
        return voice

    def delete(self, voice_id: str) -> None:
        if voice_id == DEFAULT_VOICE_ID:
            raise VoiceError(400, "bad_request", "the default voice cannot be deleted")
        if self._voices.pop(voice_id, None) is None:
            raise VoiceError(404, "unknown_voice", f"no voice {voice_id!r}")
        if self.directory is not None and (self.directory / voice_id).exists():
            trash = self.directory / f".deleted-{voice_id}-{uuid.uuid4().hex[:8]}"
            (self.directory / voice_id).rename(trash)
            shutil.rmtree(trash, ignore_errors=True)

    def _persist(self, voice_id: str, audio: bytes, transcript: str) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = self.directory / f".incoming-{voice_id}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        (staging / "audio").write_bytes(audio)
        (staging / "voice.json").write_bytes(orjson.dumps({"id": voice_id, "transcript": transcript,
                                                           "created_at": time.time()}))
        staging.rename(self.directory / voice_id)
