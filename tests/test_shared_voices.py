"""One voices directory shared by several stores (replicas): read-through, rescans, atomic creation and
deletion across processes, quotas counted from the directory, aliases that follow the file."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
import soundfile as sf

from engine import Engine, Voice
from server.core import voicedir
from server.core.aliases import ALIASES_FILE, VoiceAliases
from server.core.errors import ServiceError
from server.core.voices import VoiceLimits, VoiceStore
from tests.audio import EN_TRANSCRIPT, ZH_TRANSCRIPT, chinese_clip, encode, english_clip
from tests.conftest import wait_until

EN = encode(*english_clip(1.0))
ZH = encode(*chinese_clip(1.0))


async def inline(fn: Any, *args: Any) -> Any:
    return fn(*args)


@pytest.fixture
async def stores(engine: Engine, tmp_path: Path) -> AsyncIterator[list[VoiceStore]]:
    """Two replicas' stores on one directory, rescanning every 0.1 s."""
    made = [VoiceStore(engine, tmp_path / "voices", inline, sync_s=0.1) for _ in range(2)]
    for store in made:
        await store.load()
    yield made
    for store in made:
        store.close()


async def test_a_voice_made_through_one_store_is_found_at_once_through_the_other(stores: list[VoiceStore]) -> None:
    a, b = stores
    await a.add("shared", EN, EN_TRANSCRIPT)
    found = await b.lookup("shared")  # read-through: no waiting for a rescan
    assert found is not None and found.transcript == EN_TRANSCRIPT and found.mel is not None
    assert await b.lookup("missing") is None


async def test_a_deleted_voice_leaves_every_store_within_the_rescan(stores: list[VoiceStore]) -> None:
    a, b = stores
    await a.add("gone", EN, EN_TRANSCRIPT)
    await wait_until(lambda: b.get("gone") is not None, timeout=2)  # the rescan loads it too
    await a.delete("gone")
    assert a.get("gone") is None
    started = time.monotonic()
    await wait_until(lambda: b.get("gone") is None, timeout=2)
    assert time.monotonic() - started < 1.0
    with pytest.raises(ServiceError) as refused:
        await b.delete("gone")
    assert refused.value.status == 404


@pytest.mark.slow
async def test_a_voice_replaced_under_the_same_id_is_reloaded(stores: list[VoiceStore]) -> None:
    a, b = stores
    await a.add("v", EN, EN_TRANSCRIPT)
    assert (await b.lookup("v")) is not None
    await a.delete("v")
    await a.add("v", ZH, ZH_TRANSCRIPT)
    await wait_until(lambda: (v := b.get("v")) is not None and v.transcript == ZH_TRANSCRIPT, timeout=2)


async def test_concurrent_creation_of_one_id_one_wins_never_a_mixed_folder(stores: list[VoiceStore],
                                                                         tmp_path: Path) -> None:
    a, b = stores
    for round_ in range(3):
        voice_id = f"race{round_}"
        results = await asyncio.gather(a.add(voice_id, EN, EN_TRANSCRIPT), b.add(voice_id, ZH, ZH_TRANSCRIPT),
                                       return_exceptions=True)
        refused = [r for r in results if isinstance(r, ServiceError)]
        assert len(refused) == 1 and refused[0].status == 409, results
        folder = tmp_path / "voices" / voice_id
        meta = orjson.loads((folder / "voice.json").read_bytes())
        seconds = sf.info(str(folder / "audio")).duration
        winner = next(r for r in results if isinstance(r, Voice))
        assert meta["transcript"] == winner.transcript
        assert abs(seconds - winner.seconds) < 1e-3  # the audio of the same upload as the transcript


def test_racing_creators_at_the_rename(tmp_path: Path) -> None:
    """Both claims made and counted before either renames (a barrier in the quota check): one Taken."""
    for round_ in range(20):
        barrier = threading.Barrier(2)

        def create(tag: bytes, barrier: threading.Barrier = barrier, voice_id: str = f"v{round_}") -> str:
            def wait_for_the_other(_usage: voicedir.Usage) -> None:
                barrier.wait(5)
            try:
                voicedir.create(tmp_path, voice_id, tag * 1000, orjson.dumps({"tag": tag.decode()}),
                                wait_for_the_other)
            except voicedir.Taken:
                return "taken"
            return "made"

        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(create, [b"a", b"b"]))
        assert outcomes == ["made", "taken"]
        folder = tmp_path / f"v{round_}"
        tag = orjson.loads((folder / "voice.json").read_bytes())["tag"]
        assert (folder / "audio").read_bytes() == tag.encode() * 1000
    assert list((tmp_path / voicedir.STAGING).iterdir()) == []


def test_racing_creators_cannot_pass_the_count_quota_together(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Both claims exist before either counts: each sees the other, so at the edge neither passes."""
    limits = VoiceLimits(max_voices=3)
    for voice_id in ("a", "b"):
        voicedir.create(tmp_path, voice_id, b"x", b"{}", lambda _u: None)
    barrier, counted = threading.Barrier(2), voicedir.usage

    def usage_after_both_claims(directory: Path) -> voicedir.Usage:
        barrier.wait(5)
        return counted(directory)

    monkeypatch.setattr(voicedir, "usage", usage_after_both_claims)

    def create(voice_id: str) -> str:
        def check(usage: voicedir.Usage) -> None:
            if usage.count > limits.max_voices:
                raise OverflowError
        try:
            voicedir.create(tmp_path, voice_id, b"x", b"{}", check)
        except OverflowError:
            return "refused"
        return "made"

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(create, ["c", "d"]))
    assert outcomes.count("made") <= 1
    assert len(voicedir.scan(tmp_path)) <= limits.max_voices


async def test_quotas_count_the_directory_not_the_process(stores: list[VoiceStore]) -> None:
    a, b = stores
    limits = VoiceLimits(max_voices=2)
    await a.add("one", EN, EN_TRANSCRIPT, limits)
    await b.add("two", EN, EN_TRANSCRIPT, limits)
    for store in (a, b):
        with pytest.raises(ServiceError) as refused:
            await store.add("three", EN, EN_TRANSCRIPT, limits)
        assert (refused.value.status, refused.value.code) == (507, "quota_exceeded")
    assert a.directory is not None
    one_size = sum(f.stat().st_size for f in (a.directory / "one").iterdir())
    with pytest.raises(ServiceError, match="bytes"):
        await b.add("big", EN, EN_TRANSCRIPT, VoiceLimits(max_bytes=int(2.5 * one_size)))
    await a.delete("one")
    await b.add("three", EN, EN_TRANSCRIPT, limits)


async def test_a_crashed_replicas_leftovers_expire_and_a_live_claim_is_kept(engine: Engine, tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    old = time.time() - voicedir.CLAIM_TTL_S - 60
    leftovers = [voices / voicedir.TRASH / "x.1234", voices / voicedir.STAGING / "y.100.abcd",
                 voices / ".incoming-z-1234abcd", voices / ".deleted-w-1234abcd"]
    live = voices / voicedir.STAGING / "busy.5000.ef01"  # another replica writing a voice right now
    for folder in [*leftovers, live]:
        folder.mkdir(parents=True)
        (folder / "audio").write_bytes(b"\0" * 1000)
        if folder != live:
            os.utime(folder, (old, old))
    store = VoiceStore(engine, voices, inline)
    await store.load()
    store.close()
    assert not any(folder.exists() for folder in leftovers)
    assert live.exists()
    assert voicedir.usage(voices).sizes == {"busy": 5000}  # it counts toward the quotas


def test_aliases_follow_the_file(tmp_path: Path) -> None:
    (tmp_path / ALIASES_FILE).write_bytes(orjson.dumps({"alloy": "me"}))
    aliases = VoiceAliases.build(tmp_path, "echo=flagged", recheck_s=0.05)
    assert aliases.target("alloy") == "me" and aliases.target("echo") == "flagged"
    (tmp_path / ALIASES_FILE).write_bytes(orjson.dumps({"alloy": "you", "nova": "her", "echo": "file"}))
    time.sleep(0.06)
    assert aliases.target("alloy") == "you" and aliases.target("nova") == "her"
    assert aliases.target("echo") == "flagged"  # the flag still wins
    (tmp_path / ALIASES_FILE).write_bytes(b"{not json")  # a broken edit keeps the last good mapping
    time.sleep(0.06)
    assert aliases.target("alloy") == "you"
