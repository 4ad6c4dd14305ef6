"""Voice registry: the built-in ``default`` voice plus uploaded ones, persisted under ``voices_dir``.

Each uploaded voice is a folder ``<voices_dir>/<id>/`` holding ``audio`` (the clipped reference as 24 kHz
24-bit FLAC, never the upload itself) and ``voice.json`` (transcript, RMS of the upload, creation time).
Folders are written under ``.incoming-*`` and renamed into place, so a crash leaves no half-written
voice; stale ``.incoming-*``/``.deleted-*`` folders are removed at start. Decoding (bounded: see
``engine.voices``) runs on a small pool of single-threaded helpers (``engine.threads``: a second OpenMP
team would slow every batch), at most ``DECODERS`` at once; only the conditioning mel runs on the model's
thread, so an upload never stalls synthesis.

Refusals (``VoiceError``; status, code):
400 ``bad_request`` bad id · 400 ``bad_audio`` undecodable, silent, too short or absurd audio ·
400 ``transcript_too_long`` over ``max_transcript_bytes`` or too long for the clip · 409 ``conflict`` id
taken · 507 ``quota_exceeded`` over ``max_voices`` or ``max_voices_bytes`` · 507/500 ``storage_error``
the voices dir cannot be written (full / otherwise).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import re
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from engine import Engine, EngineError, Voice
from engine.threads import helper_executor
from engine.voices import (
    DEFAULT_VOICE_ID,
    Reference,
    default_voice,
    encode_reference,
    load_reference,
    reference_text,
    voice_from_reference,
)

log = logging.getLogger(__name__)

VOICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # always fullmatch: `$` would accept "nl\n"
STALE_PREFIXES = (".incoming-", ".deleted-")
DECODERS = 2
"""Uploads decoded at once. Each holds at most ~10 MB (12 s mono at 192 kHz); more would only queue on
the two CPUs a small box has and slow the synthesis running beside them."""
Worker = Callable[..., Awaitable[Any]]
R = TypeVar("R")


class VoiceError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class VoiceLimits:
    max_transcript_bytes: int = 1_000
    max_voices: int = 100
    """Uploaded voices (``default`` not counted)."""
    max_bytes: int = 200 * 1024 * 1024
    """Stored bytes of all uploaded voices (audio + voice.json), counted in memory-only mode too."""


def describe(voice: Voice, builtin: bool = False) -> dict[str, Any]:
    return {"id": voice.id, "transcript": voice.transcript, "seconds": round(voice.seconds, 3),
            "sample_rate": 24_000, "clipped": voice.clipped, "builtin": builtin}


def valid_id(voice_id: str) -> bool:
    return VOICE_ID.fullmatch(voice_id) is not None


def _storage_error(exc: OSError) -> VoiceError:
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return VoiceError(507 if full else 500, "storage_error", f"cannot store the voice: {exc.strerror or exc}")


class VoiceStore:
    def __init__(self, engine: Engine, directory: Path | None, in_worker: Worker) -> None:
        self.engine = engine
        self.directory = directory
        self._in_worker = in_worker
        self._voices: dict[str, Voice] = {}
        self._sizes: dict[str, int] = {}
        self._pending: dict[str, int] = {}  # id -> bytes reserved; ids being prepared count toward quotas
        self._decoding = asyncio.Semaphore(DECODERS)
        self._helpers = helper_executor(DECODERS + 1, "tts-voice")
        """Decoding, encoding and file writes: single-threaded torch, off the model thread (engine.threads)."""

    async def load(self) -> None:
        """The default voice, then every persisted one (a broken folder is logged and skipped)."""
        self._voices[DEFAULT_VOICE_ID] = await self._attach(await self._off_model(default_voice))
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for folder in sorted(self.directory.iterdir()):
            if folder.is_dir() and folder.name.startswith(STALE_PREFIXES):
                log.info("removing stale voice folder %s", folder.name)
                shutil.rmtree(folder, ignore_errors=True)  # left by a crash mid-upload or mid-delete
            elif folder.is_dir() and valid_id(folder.name) and folder.name != DEFAULT_VOICE_ID:
                await self._load_stored(folder)
        log.info("voices loaded", extra={"count": len(self._voices), "bytes": sum(self._sizes.values())})

    async def _load_stored(self, folder: Path) -> None:
        try:
            meta = orjson.loads((folder / "voice.json").read_bytes())
            audio_path = folder / "audio"
            reference = await self._decode(audio_path.read_bytes())
            if "rms" in meta:  # stored at 24 kHz: keep the RMS measured on the upload, as at creation
                reference = dataclasses.replace(reference, rms=float(meta["rms"]), clipped=bool(meta["clipped"]))
            voice = await self._off_model(voice_from_reference, folder.name, str(meta["transcript"]), reference)
            size = audio_path.stat().st_size + (folder / "voice.json").stat().st_size
        except (OSError, ValueError, KeyError, TypeError, EngineError) as exc:
            log.warning("skipping stored voice %s: %s", folder.name, exc)
            return
        self._voices[voice.id] = await self._attach(voice)
        self._sizes[voice.id] = size

    def get(self, voice_id: str) -> Voice | None:
        return self._voices.get(voice_id)

    def all(self) -> list[Voice]:
        return list(self._voices.values())

    async def prepare(self, voice_id: str, audio: bytes, transcript: str) -> Voice:
        """A voice that is not stored (e.g. the RunPod worker's inline voices): decoded off the model
        thread, its mel on it. Raises EngineError."""
        reference_text(transcript)
        reference = await self._decode(audio)
        return await self._attach(await self._off_model(voice_from_reference, voice_id, transcript, reference))

    async def add(self, voice_id: str | None, audio: bytes, transcript: str,
                  limits: VoiceLimits | None = None) -> Voice:
        limits = limits or VoiceLimits()
        voice_id = voice_id or uuid.uuid4().hex[:12]
        self._check_new(voice_id, transcript, limits)
        self._pending[voice_id] = 0
        try:
            try:
                reference_text(transcript)
                reference = await self._decode(audio)
                voice = await self._off_model(voice_from_reference, voice_id, transcript, reference)
                blob = await self._off_model(encode_reference, reference)
            except EngineError as exc:
                raise VoiceError(400, exc.code if exc.code != "internal" else "bad_request", str(exc)) from exc
            meta = orjson.dumps({"id": voice_id, "transcript": voice.transcript, "rms": reference.rms,
                                 "clipped": reference.clipped, "created_at": time.time()})
            self._reserve(voice_id, len(blob) + len(meta), limits)
            voice = await self._attach(voice)  # before persisting: a stored voice is one that worked
            await self._persist(voice_id, blob, meta)
            self._voices[voice_id] = voice
            self._sizes[voice_id] = len(blob) + len(meta)
        finally:
            self._pending.pop(voice_id, None)
        return voice

    def delete(self, voice_id: str) -> None:
        if voice_id == DEFAULT_VOICE_ID:
            raise VoiceError(400, "bad_request", "the default voice cannot be deleted")
        if voice_id not in self._voices:
            raise VoiceError(404, "unknown_voice", f"no voice {voice_id!r}")
        if self.directory is not None and (self.directory / voice_id).exists():
            trash = self.directory / f".deleted-{voice_id}-{uuid.uuid4().hex[:8]}"
            try:
                (self.directory / voice_id).rename(trash)
            except OSError as exc:
                raise _storage_error(exc) from exc
            shutil.rmtree(trash, ignore_errors=True)  # what is left is removed at the next start
        del self._voices[voice_id]
        self._sizes.pop(voice_id, None)

    # -- helpers --------------------------------------------------------------------------------------

    def _check_new(self, voice_id: str, transcript: str, limits: VoiceLimits) -> None:
        """Cheap refusals, before any decoding."""
        if not valid_id(voice_id):
            raise VoiceError(400, "bad_request", "voice id must be 1-64 letters, digits, '-' or '_', "
                             "starting with a letter or digit")
        if voice_id in self._voices or voice_id in self._pending:
            raise VoiceError(409, "conflict", f"voice {voice_id!r} already exists; delete it first")
        if len(transcript.encode("utf-8")) > limits.max_transcript_bytes:
            raise VoiceError(400, "transcript_too_long",
                             f"the transcript is over {limits.max_transcript_bytes} bytes (UTF-8)")
        if len(self._sizes) + len(self._pending) >= limits.max_voices:
            raise VoiceError(507, "quota_exceeded", f"this server holds at most {limits.max_voices} voices; "
                             "delete one first")

    def _reserve(self, voice_id: str, size: int, limits: VoiceLimits) -> None:
        """Synchronous check-and-reserve, so concurrent uploads cannot both take the last bytes."""
        used = sum(self._sizes.values()) + sum(self._pending.values())
        if used + size > limits.max_bytes:
            raise VoiceError(507, "quota_exceeded", f"stored voices would take {used + size} bytes; "
                             f"the limit is {limits.max_bytes}; delete a voice first")
        self._pending[voice_id] = size

    async def _decode(self, audio: bytes) -> Reference:
        async with self._decoding:
            return await self._off_model(load_reference, audio)

    def close(self) -> None:
        """Release the helper threads (at shutdown, after the batcher: no voice work is left to run)."""
        self._helpers.shutdown(wait=False, cancel_futures=True)

    async def _off_model(self, fn: Callable[..., R], *args: Any) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._helpers, fn, *args)

    async def _attach(self, voice: Voice) -> Voice:
        result: Voice = await self._in_worker(self.engine.attach, voice)
        return result

    async def _persist(self, voice_id: str, blob: bytes, meta: bytes) -> None:
        if self.directory is None:
            return
        try:
            await self._off_model(self._write, self.directory, voice_id, blob, meta)
        except OSError as exc:
            log.warning("cannot store voice %s: %s", voice_id, exc)
            raise _storage_error(exc) from exc

    @staticmethod
    def _write(directory: Path, voice_id: str, blob: bytes, meta: bytes) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        staging = directory / f".incoming-{voice_id}-{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir()
            (staging / "audio").write_bytes(blob)
            (staging / "voice.json").write_bytes(meta)
            staging.rename(directory / voice_id)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
