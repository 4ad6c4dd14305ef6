"""The voices directory as every replica that mounts it sees it: atomic creation and deletion, quotas
counted from the directory, and a cheap scan that tells what changed.

Layout::

    <dir>/<id>/audio, voice.json          a voice; it appears whole, by one rename
    <dir>/.staging/<id>.<bytes>.<nonce>/   a creation in progress, and its claim on the quotas
    <dir>/.trash/<id>.<nonce>/             a deleted voice on its way out
    <dir>/aliases.json                     (server.core.aliases)

Only operations that are atomic on a local disk and on NFS/EFS (and so on a RunPod network volume) are
relied on: ``mkdir`` and ``rename``. There are no locks, so a replica that crashes holds nothing: its
staging claim stops counting after ``CLAIM_TTL_S`` and any replica sweeps it, with the trash.

* Creation: make the claim (mkdir), count the directory, write the files into the claim, rename it to
  ``<id>``. rename(2) onto an existing voice (a non-empty folder) fails, so of two replicas creating one
  id exactly one wins, and a voice folder is never a mix of two uploads.
* Quotas: a creator counts only after its claim exists, listing the claims before the voices (a voice
  leaves ``.staging`` and enters ``<dir>`` by one rename, so it is seen in at least one listing). Of two
  concurrent creators at least one sees the other, so together they cannot pass the limit; at the very
  edge both may refuse, never both accept.
* Deletion: rename ``<id>`` into the trash, then remove it. A reader either opened the whole voice
  before the rename or finds nothing after it.

Everything here is blocking file I/O, meant for a helper thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

VOICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # always fullmatch: `$` would accept "nl\n"
"""Voice ids are folder names: no dot, so ``.staging``, ``.trash`` and ``aliases.json`` are never voices."""
STAGING = ".staging"
TRASH = ".trash"
LEGACY_PREFIXES = (".incoming-", ".deleted-")
"""Leftovers of servers that staged inside the voices dir itself."""
CLAIM_TTL_S = 300.0
"""A claim older than this belongs to a crashed replica (a live one renames its claim within seconds).
Replicas' clocks and the file server's must agree to well within it."""

Signature = tuple[int, int]
"""(inode, mtime in ns) of a voice folder: a voice deleted and created again under one id differs."""


class Taken(Exception):
    """The id is already a voice."""


@dataclass(frozen=True)
class StoredVoice:
    meta: dict[str, Any]
    audio: bytes = field(repr=False)
    signature: Signature
    size: int
    """Stored bytes (audio + voice.json)."""


@dataclass(frozen=True)
class Usage:
    sizes: dict[str, int]
    """Voice id -> stored (or claimed) bytes, over voices and live claims."""

    @property
    def count(self) -> int:
        return len(self.sizes)

    @property
    def bytes(self) -> int:
        return sum(self.sizes.values())


def valid_id(voice_id: str) -> bool:
    return VOICE_ID.fullmatch(voice_id) is not None


def signature(path: Path) -> Signature:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def scan(directory: Path) -> dict[str, Signature]:
    """Every voice folder and its signature: one listing, one stat each."""
    found: dict[str, Signature] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            if valid_id(entry.name):
                try:
                    if entry.is_dir():
                        stat = entry.stat()
                        found[entry.name] = (stat.st_ino, stat.st_mtime_ns)
                except FileNotFoundError:  # deleted while listed
                    continue
    return found


def read_voice(directory: Path, voice_id: str) -> StoredVoice:
    """Raises FileNotFoundError when the voice is not (or no longer) there."""
    folder = directory / voice_id
    sig = signature(folder)
    with (folder / "voice.json").open("rb") as meta_file, (folder / "audio").open("rb") as audio_file:
        meta, audio = meta_file.read(), audio_file.read()  # both open: a delete now cannot split them
    return StoredVoice(orjson.loads(meta), audio, sig, len(meta) + len(audio))


def exists(directory: Path, voice_id: str) -> bool:
    return (directory / voice_id).is_dir()


def usage(directory: Path) -> Usage:
    """Voices plus live claims, claims listed first (see the module docstring)."""
    sizes: dict[str, int] = {}
    now = time.time()
    for claim in _listdir(directory / STAGING):
        voice_id, size = _parse_claim(claim.name)
        with contextlib.suppress(FileNotFoundError):  # removed by another replica meanwhile
            if voice_id and now - claim.stat().st_mtime < CLAIM_TTL_S:
                sizes[voice_id] = max(size, sizes.get(voice_id, 0))
    for voice_id in scan(directory):
        with contextlib.suppress(FileNotFoundError):  # removed by another replica meanwhile
            folder = directory / voice_id
            sizes[voice_id] = sum(f.stat().st_size for f in (folder / "audio", folder / "voice.json"))
    return Usage(sizes)


def create(directory: Path, voice_id: str, blob: bytes, meta: bytes, check: Callable[[Usage], None]) -> Signature:
    """Claim, count (``check(usage)`` raises to refuse), write, rename into place. Raises Taken, OSError,
    or whatever ``check`` raises; the claim is removed on every failure."""
    (directory / STAGING).mkdir(parents=True, exist_ok=True)
    claim = directory / STAGING / f"{voice_id}.{len(blob) + len(meta)}.{uuid.uuid4().hex[:12]}"
    claim.mkdir()
    try:
        check(usage(directory))
        (claim / "audio").write_bytes(blob)
        (claim / "voice.json").write_bytes(meta)
        try:
            claim.rename(directory / voice_id)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR):
                raise Taken(voice_id) from exc
            raise
        return signature(directory / voice_id)
    except BaseException:
        shutil.rmtree(claim, ignore_errors=True)
        raise


def delete(directory: Path, voice_id: str) -> bool:
    """Move the voice out of sight at once, then remove it. False when there was no such voice."""
    (directory / TRASH).mkdir(parents=True, exist_ok=True)
    trash = directory / TRASH / f"{voice_id}.{uuid.uuid4().hex[:12]}"
    try:
        (directory / voice_id).rename(trash)
    except FileNotFoundError:
        return False
    shutil.rmtree(trash, ignore_errors=True)  # what is left, any replica's sweep removes
    return True


def sweep(directory: Path) -> list[str]:
    """Remove the trash, expired claims and legacy leftovers; returns what was removed. Safe beside other
    replicas: a live claim is young, and a trash entry is garbage whoever removes it."""
    now, removed = time.time(), []
    candidates = [(entry, True) for entry in _listdir(directory / TRASH)]
    candidates += [(entry, False) for entry in _listdir(directory / STAGING)]
    candidates += [(entry, False) for entry in _listdir(directory) if entry.name.startswith(LEGACY_PREFIXES)]
    for entry, garbage in candidates:
        with contextlib.suppress(FileNotFoundError):  # removed by another replica meanwhile
            if garbage or now - entry.stat().st_mtime >= CLAIM_TTL_S:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    return removed


def _parse_claim(name: str) -> tuple[str, int]:
    parts = name.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return "", 0
    return parts[0], int(parts[1])


def _listdir(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


