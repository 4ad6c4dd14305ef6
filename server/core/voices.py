"""Voice registry: the built-in ``default`` voice plus uploaded ones, persisted under ``voices_dir``.

Each uploaded voice is a folder ``<voices_dir>/<id>/`` holding ``audio`` (the clipped reference as 24 kHz
24-bit FLAC, never the upload itself) and ``voice.json`` (transcript, RMS of the upload, creation time).
The directory is the registry for every replica sharing it (``server.core.voicedir``: atomic creation and
deletion, quotas): each rescans it every ``sync_s`` and reads a lookup miss through at once, so an upload
works on any replica immediately and a deletion reaches all within ``sync_s`` plus one load. Decoding
(bounded: ``engine.voices``) runs on ``DECODERS`` single-threaded helpers (``engine.threads``: a second
OpenMP team would slow every batch); only the conditioning mel runs on the model's thread.

Refusals (``ServiceError``, codes from the error table; status, code):
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
from server.core import voicedir
from server.core.errors import ServiceError, classify
from server.core.voicedir import valid_id
from text.errors import InvalidTextError

log = logging.getLogger(__name__)

SWEEP_EVERY = 60
"""Rescans between sweeps of the trash and expired claims (crash leftovers; nothing waits on them)."""
DECODERS = 2
"""Uploads decoded at once. Each holds at most ~10 MB (12 s mono at 192 kHz); more would only queue on
the two CPUs a small box has and slow the synthesis running beside them."""
Worker = Callable[..., Awaitable[Any]]
R = TypeVar("R")


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


def _storage_error(exc: OSError) -> ServiceError:
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return ServiceError("storage_error", f"cannot store the voice: {exc.strerror or exc}", status=507 if full else 500)


class VoiceStore:
    def __init__(self, engine: Engine, directory: Path | None, in_worker: Worker, sync_s: float = 1.0) -> None:
        self.engine = engine
        self.directory = directory
        self.sync_s = sync_s
        """Seconds between rescans of the directory (what other replicas created or deleted)."""
        self._in_worker = in_worker
        self._voices: dict[str, Voice] = {}
        self._sizes: dict[str, int] = {}
        self._pending: dict[str, int] = {}  # id -> bytes reserved; ids being prepared count toward quotas
        self._signatures: dict[str, voicedir.Signature] = {}  # the folder each stored voice was loaded from
        self._broken: dict[str, voicedir.Signature] = {}  # stored voices that failed: retried once changed
        self._changed: dict[str, float] = {}  # id -> when this process last added or deleted it (monotonic)
        self._loading: dict[str, asyncio.Future[None]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._scans = 0
        self._scan_error = ""
        self._decoding = asyncio.Semaphore(DECODERS)
        self._helpers = helper_executor(DECODERS + 1, "tts-voice")
        """Decoding, encoding and file I/O: single-threaded torch, off the model thread (engine.threads)."""

    async def load(self) -> None:
        """The default voice, then every stored one (a broken folder is logged and skipped); from then on
        the directory is rescanned every ``sync_s``."""
        self._voices[DEFAULT_VOICE_ID] = await self._attach(await self._off_model(default_voice))
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for name in await self._off_model(voicedir.sweep, self.directory):
            log.info("removed stale voice folder %s", name)  # left by a crash mid-upload or mid-delete
        await self.refresh()
        log.info("voices loaded", extra={"count": len(self._voices), "bytes": sum(self._sizes.values())})
        self._watcher = asyncio.create_task(self._watch(), name="voice-sync")

    async def refresh(self) -> None:
        """Bring this process in line with the directory: load new or changed voices, drop deleted ones.
        A voice this process added or deleted while the scan ran keeps what this process did."""
        assert self.directory is not None
        started = time.monotonic()
        on_disk = await self._off_model(voicedir.scan, self.directory)
        for voice_id in [v for v in self._signatures if v not in on_disk]:
            if self._changed.get(voice_id, 0.0) < started:
                self._forget(voice_id)
        for voice_id in [v for v in self._broken if v not in on_disk]:
            del self._broken[voice_id]
        for voice_id, signature in on_disk.items():
            known = (self._signatures.get(voice_id), self._broken.get(voice_id))
            if voice_id != DEFAULT_VOICE_ID and signature not in known:
                await self._read_through(voice_id)
        self._scans += 1
        if self._scans % SWEEP_EVERY == 0:
            await self._off_model(voicedir.sweep, self.directory)

    def get(self, voice_id: str) -> Voice | None:
        """What this process holds (at most ``sync_s`` behind the directory); see ``lookup``."""
        return self._voices.get(voice_id)

    async def lookup(self, voice_id: str) -> Voice | None:
        """``get``, reading a miss through to the directory at once: a voice uploaded through another
        replica a moment ago is found."""
        voice = self._voices.get(voice_id)
        if voice is None and self.directory is not None and valid_id(voice_id) and voice_id not in self._broken:
            await self._read_through(voice_id)
            voice = self._voices.get(voice_id)
        return voice

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
        await self._check_new(voice_id, transcript, limits)
        self._pending[voice_id] = 0
        try:
            try:
                reference_text(transcript)
                reference = await self._decode(audio)
                voice = await self._off_model(voice_from_reference, voice_id, transcript, reference)
                blob = await self._off_model(encode_reference, reference)
            except (EngineError, InvalidTextError) as exc:
                raise classify(exc) from exc
            meta = orjson.dumps({"id": voice_id, "transcript": voice.transcript, "rms": reference.rms,
                                 "clipped": reference.clipped, "created_at": time.time()})
            if self.directory is None:
                self._reserve(voice_id, len(blob) + len(meta), limits)
            voice = await self._attach(voice)  # before persisting: a stored voice is one that worked
            await self._persist(voice_id, blob, meta, limits)
            self._changed[voice_id] = time.monotonic()
            self._voices[voice_id] = voice
            self._sizes[voice_id] = len(blob) + len(meta)
        finally:
            self._pending.pop(voice_id, None)
        return voice

    async def delete(self, voice_id: str) -> None:
        """Delete for every replica: the folder leaves the directory in one rename."""
        if voice_id == DEFAULT_VOICE_ID:
            raise ServiceError("bad_request", "the default voice cannot be deleted")
        found = voice_id in self._voices
        if self.directory is not None and valid_id(voice_id):
            try:
                found = await self._off_model(voicedir.delete, self.directory, voice_id)
            except OSError as exc:
                raise _storage_error(exc) from exc
        self._changed[voice_id] = time.monotonic()
        self._forget(voice_id)
        if not found:
            raise ServiceError("unknown_voice", f"no voice {voice_id!r}", status=404)

    def close(self) -> None:
        """Stop watching the directory and release the helper threads (at shutdown, after the batcher: no
        voice work is left to run)."""
        if self._watcher is not None:
            self._watcher.cancel()
        self._helpers.shutdown(wait=False, cancel_futures=True)

    # -- the directory --------------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.sync_s)
            try:
                await self.refresh()
            except Exception as exc:  # keep watching; say so once per distinct failure, not every second
                if str(exc) != self._scan_error:
                    log.warning("cannot scan the voices dir: %s", exc)
                self._scan_error = str(exc)
            else:
                self._scan_error = ""

    async def _read_through(self, voice_id: str) -> None:
        """Load one stored voice; concurrent callers for one id share the work."""
        loading = self._loading.get(voice_id)
        if loading is None:
            loading = self._loading[voice_id] = asyncio.ensure_future(self._load_stored(voice_id))
            loading.add_done_callback(lambda _f: self._loading.pop(voice_id, None))
        await asyncio.shield(loading)

    async def _load_stored(self, voice_id: str) -> None:
        assert self.directory is not None
        started = time.monotonic()
        try:
            stored = await self._off_model(voicedir.read_voice, self.directory, voice_id)
        except FileNotFoundError:
            return  # not a voice, or deleted meanwhile
        except (OSError, ValueError) as exc:
            log.warning("cannot read stored voice %s: %s", voice_id, exc)
            return
        try:
            reference = await self._decode(stored.audio)
            meta = stored.meta
            if "rms" in meta:  # stored at 24 kHz: keep the RMS measured on the upload, as at creation
                reference = dataclasses.replace(reference, rms=float(meta["rms"]), clipped=bool(meta["clipped"]))
            voice = await self._off_model(voice_from_reference, voice_id, str(meta["transcript"]), reference)
            voice = await self._attach(voice)
        except (ValueError, KeyError, TypeError, EngineError) as exc:
            log.warning("skipping stored voice %s: %s", voice_id, exc)
            self._broken[voice_id] = stored.signature
            return
        if self._changed.get(voice_id, 0.0) >= started:
            return  # added or deleted here while it loaded: what this process did is newer
        self._voices[voice_id], self._sizes[voice_id] = voice, stored.size
        self._signatures[voice_id] = stored.signature

    def _forget(self, voice_id: str) -> None:
        self._voices.pop(voice_id, None)
        self._sizes.pop(voice_id, None)
        self._signatures.pop(voice_id, None)

    # -- helpers --------------------------------------------------------------------------------------

    async def _check_new(self, voice_id: str, transcript: str, limits: VoiceLimits) -> None:
        """Cheap refusals, before any decoding (the directory's own checks come at creation)."""
        if not valid_id(voice_id):
            raise ServiceError("bad_request", "voice id must be 1-64 letters, digits, '-' or '_', "
                               "starting with a letter or digit")
        stored = self.directory is not None and await self._off_model(voicedir.exists, self.directory, voice_id)
        if voice_id in self._voices or voice_id in self._pending or stored:
            raise ServiceError("conflict", f"voice {voice_id!r} already exists; delete it first")
        if len(transcript.encode("utf-8")) > limits.max_transcript_bytes:
            raise ServiceError("transcript_too_long",
                               f"the transcript is over {limits.max_transcript_bytes} bytes (UTF-8)")
        try:
            used = self._sizes if self.directory is None else \
                (await self._off_model(voicedir.usage, self.directory)).sizes
        except OSError as exc:
            raise _storage_error(exc) from exc
        _check_usage(voicedir.Usage({**used, **self._pending, voice_id: 0}), limits)

    def _reserve(self, voice_id: str, size: int, limits: VoiceLimits) -> None:
        """Memory-only mode: synchronous check-and-reserve, so concurrent uploads cannot both take the
        last bytes (with a directory, the directory's claims do this across processes)."""
        _check_usage(voicedir.Usage({**self._sizes, **self._pending, voice_id: size}), limits)
        self._pending[voice_id] = size

    async def _decode(self, audio: bytes) -> Reference:
        async with self._decoding:
            return await self._off_model(load_reference, audio)

    async def _off_model(self, fn: Callable[..., R], *args: Any) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._helpers, fn, *args)

    async def _attach(self, voice: Voice) -> Voice:
        result: Voice = await self._in_worker(self.engine.attach, voice)
        return result

    async def _persist(self, voice_id: str, blob: bytes, meta: bytes, limits: VoiceLimits) -> None:
        if self.directory is None:
            return
        try:
            self._signatures[voice_id] = await self._off_model(
                voicedir.create, self.directory, voice_id, blob, meta, lambda u: _check_usage(u, limits))
        except voicedir.Taken:
            raise ServiceError("conflict", f"voice {voice_id!r} already exists; delete it first") from None
        except OSError as exc:
            log.warning("cannot store voice %s: %s", voice_id, exc)
            raise _storage_error(exc) from exc


def _check_usage(usage: voicedir.Usage, limits: VoiceLimits) -> None:
    """Usage includes the voice being created."""
    if usage.count > limits.max_voices or usage.bytes > limits.max_bytes:
        raise ServiceError("quota_exceeded", f"voices would number {usage.count} and take {usage.bytes} bytes; "
                           f"the limits are {limits.max_voices} and {limits.max_bytes} bytes: delete a voice first")
