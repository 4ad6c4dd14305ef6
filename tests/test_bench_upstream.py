"""The upstream baseline launcher in bench/upstream.py: upstream's own socket server, started on the
tiny checkpoint, answers one request on its wire (float32 PCM, then END). Guards the comparison against
upstream API changes (the processor hooks it overrides) and environment drift (torchaudio's loader)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from bench.common import free_port, served, stop, tcp_open, wait_ready
from bench.upstream import Sample, ours_session, start, upstream_command, upstream_request
from engine.tiny import ensure_tiny_model

pytestmark = pytest.mark.slow  # upstream's server runs in its own process

ROOT = Path(__file__).resolve().parent.parent


def test_upstream_server_answers_on_the_tiny_model(tmp_path: Path) -> None:
    port = free_port()
    command = upstream_command(ensure_tiny_model(tmp_path / "tiny"), port, nfe_steps=4)
    proc: subprocess.Popen[bytes] = start(command, tmp_path / "upstream.log", tmp_path, ROOT)
    try:
        wait_ready(proc, tcp_open(port), 90, tmp_path / "upstream.log")
        sample = asyncio.run(asyncio.wait_for(upstream_request(port, "Hello there, how are you?"), 60))
    finally:
        stop(proc)
    assert sample.samples > 24_000 // 2  # at least half a second of audio
    assert sample.ttfa_s is not None and sample.ttfa_s <= sample.latency_s


def test_a_refused_client_retries_after_the_hint_and_counts_the_wait() -> None:
    """With admission on (the default), clients arriving together are refused with a retry hint; the bench's
    client must retry as a real one does, not count the refusal as an error (that made our side 21 errors
    of 24 at 32 steps and compared three requests against upstream's 24)."""
    with served("--admission-ttfa-s", "0.2") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        sessions = [ours_session(port, 8, ["Hello there, how are you today?"], seed=c) for c in range(4)]

        async def together() -> list[list[Sample | None]]:
            return await asyncio.wait_for(asyncio.gather(*sessions), 120)

        samples = [s for session in asyncio.run(together()) for s in session]
    assert all(s is not None for s in samples)
    done = [s for s in samples if s is not None]
    assert sum(s.refusals for s in done) >= 1  # some were refused and then served
    refused = [s for s in done if s.refusals]
    assert all(s.ttfa_s is not None and 0 < s.ttfa_s <= s.latency_s for s in done)
    assert min(s.latency_s for s in refused) > min(s.latency_s for s in done if not s.refusals)
