"""The real ``python -m server`` process: warm before listening, streams, SIGTERM drain, clear failures."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from f5tts_client import TTSClient
from tests.conftest import free_port, server_env, wait_ready

pytestmark = pytest.mark.slow  # every test starts a server process

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server_process(tiny_cache: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--model", "tiny", "--host", "127.0.0.1", "--port", str(port),
         "--voices-dir", str(tmp_path / "voices"), "--shutdown-grace-s", "20",
         "--drain-delay-s", "0"],  # refusal at once: the delay before it is tests/test_fleet.py's
        cwd=ROOT, env=server_env(tiny_cache), stdout=log, stderr=subprocess.STDOUT, text=True)
    yield proc, port
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    log.close()


async def test_real_process_is_warm_before_it_listens_and_streams(server_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc, port = server_process
    seen = await wait_ready(proc, port)
    assert seen == [200]  # the port opened only once the model was loaded and warm
    async with TTSClient(f"ws://127.0.0.1:{port}/v1/stream") as client:
        result = await client.synthesize("Hello from a real process.", seed=1)
    assert result.end is not None and result.end["samples"] == result.samples > 0
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        metrics = await response.text()
    assert 'tts_startup_seconds{phase="warmup"}' in metrics and "tts_ready 1.0" in metrics
    log = (tmp_path / "server.log").read_text()
    assert "model loaded" in log and "model warm" in log and "seed=timed" in log


async def test_sigterm_drains_in_flight_stream(server_process) -> None:  # type: ignore[no-untyped-def]
    proc, port = server_process
    await wait_ready(proc, port)
    text = ("This stream is in flight when the server is told to stop. It has several sentences, so it "
            "takes a while. The server must let it finish before it exits. And only then close the socket.")
    async with TTSClient(f"ws://127.0.0.1:{port}/v1/stream") as client:
        result = await client.start(text, nfe_steps=16)
        while result.frames == 0:
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        async with aiohttp.ClientSession() as session:
            for _ in range(50):  # readiness drops at once
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 503:
                        break
                await asyncio.sleep(0.05)
            assert response.status == 503
            async with session.ws_connect(f"ws://127.0.0.1:{port}/v1/stream") as late:
                assert (await late.receive_json())["code"] == "shutting_down"
        await result.done
        assert result.end is not None and result.end["samples"] == result.samples
        await asyncio.wait_for(client.closed.wait(), 10)
        assert client.close_code == 1001
    assert await asyncio.to_thread(proc.wait, 30) == 0


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--ckpt-file", "/nonexistent/model.safetensors"], {},
     "checkpoint file not found: /nonexistent/model.safetensors"),
    (["--model", "F5TTS_v1_Base"], {"HF_HUB_OFFLINE": "1"}, "cannot fetch F5TTS_v1_Base/model_1250000.safetensors"),
    (["--model", "F5TTS_v9"], {}, "unknown model 'F5TTS_v9'"),
    (["--vocab-file", "{tmp}/vocab.txt"], {}, "must have a space as its first token"),
    (["--port", "99999"], {}, "--port and --health-port must be between 1 and 65535"),
])
def test_startup_failure_is_one_clear_line_and_exit_1(tiny_cache: Path, tmp_path: Path, args: list[str],
                                                      env: dict[str, str], message: str) -> None:
    (tmp_path / "vocab.txt").write_text("not a vocab\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    argv = [sys.executable, "-m", "server", "--model", "tiny", "--port", str(free_port()),
            "--voices-dir", str(tmp_path / "v"), *args]
    proc = subprocess.run(argv, cwd=ROOT, env=server_env(tiny_cache, HF_HOME=str(tmp_path / "hf"), **env),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_taken_port_fails_before_the_model_loads(tiny_cache: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        argv = [sys.executable, "-m", "server", "--model", "tiny", "--host", "127.0.0.1",
                "--port", str(taken.getsockname()[1]), "--voices-dir", str(tmp_path / "v")]
        proc = subprocess.run(argv, cwd=ROOT, env=server_env(tiny_cache), capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 1 and "Address already in use" in proc.stderr
    assert "loading model" not in proc.stderr and "Traceback" not in proc.stderr


def test_sigterm_during_startup_stops_cleanly(tiny_cache: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "server", "--model", "tiny", "--port", str(free_port()),
                                 "--voices-dir", str(tmp_path / "v")], cwd=ROOT, env=server_env(tiny_cache),
                                stdout=out, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while "loading model" not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    text = log.read_text()
    assert "stopped during startup" in text and "Traceback" not in text
