"""The upstream baseline launcher in bench/upstream.py: upstream's own socket server, started on the
tiny checkpoint, answers one request on its wire (float32 PCM, then END). Guards the comparison against
upstream API changes (the processor hooks it overrides) and environment drift (torchaudio's loader)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from bench.common import free_port, stop, tcp_open, wait_ready
from bench.upstream import start, upstream_command, upstream_request
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
