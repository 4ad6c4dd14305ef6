"""The RunPod worker in the SDK's own local modes (--test_input, --rp_serve_api), with the tiny model."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from server.core.errors import ServiceError
from server.core.settings import Settings
from server.runpod.jobs import parse_job_input
from server.runpod.main import local_test_mode
from server.runpod.worker import Worker
from tests.audio import EN_TRANSCRIPT, encode, english_clip
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def worker_env(tiny_cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TTS_", "RUNPOD_"))}
    env.update({"TTS_MODEL": "tiny", "TTS_TINY_CACHE_DIR": str(tiny_cache), "TTS_VOICES_DIR": "",
                "TTS_DEFAULT_NFE_STEPS": "4", "TTS_MAX_BATCH_SIZE": "8", "TTS_LOG_FORMAT": "json", **extra})
    return env


def run_test_input(tiny_cache: Path, tmp_path: Path, job_input: dict[str, Any], **env: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "server.runpod_worker", "--test_input",
                           orjson.dumps({"input": job_input}).decode()],
                          cwd=tmp_path, env={**worker_env(tiny_cache, **env), "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=180)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
def test_test_input_mode_returns_real_audio(tiny_cache: Path, tmp_path: Path) -> None:
    code, output = run_test_input(tiny_cache, tmp_path, {"text": "Hello from a serverless job.", "seed": 5})
    assert code == 0, output[-3000:]
    assert "Job local_test completed successfully." in output
    assert "Job result: {'output': [{'seq': 0, 'audio_b64': '" in output  # (the SDK truncates this line)
    summary = next(orjson.loads(x) for x in output.splitlines() if x.startswith("{") and '"job result"' in x)
    assert summary["done"] is True and summary["samples"] == summary["audio_bytes"] // 2 > 0
    assert summary["seed"] == 5 and summary["sample_rate"] == 24_000


@pytest.mark.slow
def test_test_input_mode_bad_input_fails_clearly(tiny_cache: Path, tmp_path: Path) -> None:
    code, output = run_test_input(tiny_cache, tmp_path, {"text": "Hi.", "voice": "nobody"})
    assert code == 1
    assert "unknown_voice: no voice 'nobody'" in output


@pytest.mark.slow
def test_load_failure_exits_1_with_the_cause(tiny_cache: Path, tmp_path: Path) -> None:
    code, output = run_test_input(tiny_cache, tmp_path, {"text": "Hi."}, TTS_CKPT_FILE="/nonexistent/x.pt")
    assert code == 1
    errors = [x for x in output.splitlines() if x.startswith("error:")]
    assert errors == ["error: cannot start: checkpoint file not found: /nonexistent/x.pt"]


@pytest.fixture
def api_worker(tiny_cache: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = tmp_path / "worker.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "server.runpod_worker", "--rp_serve_api", "--rp_api_port",
                                 str(port), "--rp_api_host", "127.0.0.1"], cwd=tmp_path,
                                # fill: on this CPU the latency policy rightly runs the default voice's
                                # chunks one by one; this test is about concurrent jobs *able* to share batches.
                                env={**worker_env(tiny_cache), "PYTHONPATH": str(ROOT), "TTS_BATCH_POLICY": "fill"},
                                stdout=sink, stderr=sink)
        try:
            yield f"http://127.0.0.1:{port}", log
        finally:
            proc.terminate()
            proc.wait(30)


async def wait_api(base: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(base + "/docs") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.2)
    raise AssertionError("worker API never came up")


def audio_samples(output: list[dict[str, Any]]) -> int:
    return sum(len(base64.b64decode(item["audio_b64"])) // 2 for item in output if "audio_b64" in item)


@pytest.mark.slow
async def test_serve_api_runsync_concurrent_runs_and_errors(api_worker: tuple[str, Path]) -> None:
    base, log = api_worker
    await wait_api(base)
    async with aiohttp.ClientSession() as session:
        async with session.post(base + "/runsync", json={"input": {"text": "Run me synchronously.", "seed": 1}}) as r:
            body = await r.json()
        assert body["status"] == "COMPLETED"
        assert body["output"][-1]["done"] and body["output"][-1]["samples"] == audio_samples(body["output"]) > 0

        ids = []
        for i in range(8):
            async with session.post(base + "/run", json={"input": {"text": f"Concurrent job number {i}.",
                                                                    "seed": i}}) as r:
                ids.append((await r.json())["id"])

        async def status(job_id: str) -> dict[str, Any]:
            async with session.post(f"{base}/status/{job_id}") as r:
                return dict(await r.json())

        results = await asyncio.gather(*(status(i) for i in ids))
        assert all(r["status"] == "COMPLETED" and r["output"][-1].get("samples", 0) > 0 for r in results), results

        async with session.post(base + "/runsync", json={"input": {"text": "", "voice": 5}}) as r:
            bad = await r.json()
        # The SDK's local API reports a generator's error item as output (its production path fails the job).
        assert bad["output"] == [{"error": "bad_request: input.text must be a non-empty string"}]
        async with session.post(base + "/runsync", json={"input": {"text": "Still serving."}}) as r:
            assert (await r.json())["status"] == "COMPLETED"
    batches = [orjson.loads(line) for line in log.read_text().splitlines()
               if line.startswith("{") and '"msg":"batch"' in line]
    assert max(b["size"] for b in batches) > 1  # concurrent jobs shared model batches


@pytest.mark.parametrize(("data", "message"), [
    (None, "JSON object"),
    ({"text": "hi", "colour": 1}, "unknown input field(s): colour"),
    ({"text": "   "}, "non-empty string"),
    ({"text": "hi", "speed": "fast"}, "input.speed must be a number"),
    ({"text": "hi", "nfe_steps": 1.5}, "input.nfe_steps must be an integer"),
    ({"text": "hi", "seed": True}, "input.seed must be an integer"),
    ({"text": "hi", "format": "mp3"}, "'pcm' or 'wav'"),
    ({"text": "hi", "voice": {"audio_b64": "!!!", "transcript": "x"}}, "audio_b64"),
    ({"text": "hi", "voice": 3}, "voice id or"),
])
def test_input_validation(data: Any, message: str) -> None:
    with pytest.raises(ServiceError) as info:
        parse_job_input(data)
    assert message in str(info.value)


def test_local_mode_detection() -> None:
    assert local_test_mode(["w", "--test_input", "{}"], {"RUNPOD_WEBHOOK_GET_JOB": "x"})
    assert local_test_mode(["w"], {})  # no RunPod job URL: the SDK reads test_input.json
    assert not local_test_mode(["w", "--rp_serve_api"], {})
    assert not local_test_mode(["w"], {"RUNPOD_WEBHOOK_GET_JOB": "https://api.runpod.ai/v2/x/job-take/$ID"})


@pytest.fixture(scope="module")
def worker(tiny_cache: Path) -> Worker:
    return Worker.boot(Settings(model="tiny", device="cpu", tiny_cache_dir=str(tiny_cache), voices_dir="",
                                warmup=False, default_nfe_steps=4))


def test_inline_voice_and_wav_format(worker: Worker) -> None:
    audio = base64.b64encode(encode(*english_clip(1.0))).decode()
    job = {"id": "j1", "input": {"text": "Inline voice.", "voice": {"audio_b64": audio, "transcript": EN_TRANSCRIPT},
                                 "format": "wav", "seed": 2}}

    async def run() -> list[dict[str, Any]]:
        items = [item async for item in worker.stream(job)]
        await worker.batcher.close()
        return items

    items = asyncio.run(run())
    assert items[-1]["done"] and all(base64.b64decode(i["audio_b64"])[:4] == b"RIFF" for i in items[:-1])


@pytest.mark.slow
def test_cancelled_job_leaves_nothing_queued(tiny_cache: Path) -> None:
    worker = Worker.boot(Settings(model="tiny", device="cpu", tiny_cache_dir=str(tiny_cache), voices_dir="",
                                  warmup=False, default_nfe_steps=8, max_batch_size=1))
    long_text = "A long job that will be cancelled. " * 20

    async def run() -> tuple[int, int]:
        jobs = [worker.stream({"id": f"j{i}", "input": {"text": long_text}}) for i in range(3)]
        firsts = await asyncio.gather(*(job.__anext__() for job in jobs))  # each job is streaming now
        assert all("audio_b64" in f for f in firsts)
        queued_before = worker.batcher.queued
        for job in jobs:  # what RunPod does on cancel: the job's task is cancelled, the generator closed
            await job.aclose()
        await asyncio.sleep(0.05)
        queued_after = worker.batcher.queued
        await worker.batcher.close()
        return queued_before, queued_after

    before, after = asyncio.run(run())
    assert before > 0 and after == 0


@pytest.mark.slow
def test_jobs_move_the_inflight_gauge_and_use_the_shared_outcomes(tiny_cache: Path) -> None:
    """Regression: RunPod jobs are counted in flight like every other transport, and an unknown voice
    is ``unknown_voice`` (it was ``bad_request`` here while the other front ends said ``unknown_voice``)."""
    worker = Worker.boot(Settings(model="tiny", device="cpu", tiny_cache_dir=str(tiny_cache), voices_dir="",
                                  warmup=False, default_nfe_steps=4))

    def sample(name: str, **labels: str) -> float:
        return worker.metrics.registry.get_sample_value(name, labels) or 0.0

    async def run() -> tuple[float, list[dict[str, Any]], list[dict[str, Any]]]:
        job = worker.stream({"id": "j1", "input": {"text": "Counted while it streams."}})
        first = await job.__anext__()
        assert "audio_b64" in first
        during = sample("tts_inflight_requests", transport="runpod")
        rest = [item async for item in job]
        unknown = [item async for item in worker.stream({"id": "j2", "input": {"text": "Hi.", "voice": "nobody"}})]
        await worker.batcher.close()
        return during, rest, unknown

    during, rest, unknown = asyncio.run(run())
    assert during == 1 and rest[-1]["done"]
    assert sample("tts_inflight_requests", transport="runpod") == 0
    assert unknown == [{"error": "unknown_voice: no voice 'nobody'; see GET /v1/voices"}]
    assert sample("tts_requests_total", transport="runpod", outcome="unknown_voice") == 1
    assert sample("tts_requests_total", transport="runpod", outcome="bad_request") == 0
    assert sample("tts_requests_total", transport="runpod", outcome="ok") == 1


def test_an_inline_voice_without_a_transcript_is_the_clients_error(worker: Worker) -> None:
    audio = base64.b64encode(encode(*english_clip(1.0))).decode()

    async def run() -> list[dict[str, Any]]:
        job = {"id": "j3", "input": {"text": "Hi.", "voice": {"audio_b64": audio, "transcript": " "}}}
        return [item async for item in worker.stream(job)]

    [item] = asyncio.run(run())
    assert item["error"].startswith("bad_request: inline voice: ")


def test_the_text_limit_is_the_services(worker: Worker) -> None:
    """Over --max-text-chars a job is text_too_long, as on every front end (it was bad_request here)."""
    async def run() -> list[dict[str, Any]]:
        return [item async for item in worker.stream({"id": "t", "input": {"text": "x" * 5001}})]

    [item] = asyncio.run(run())
    assert item["error"] == "text_too_long: text is 5001 characters; the limit is 5000"


def test_parameter_ranges_are_the_services(worker: Worker) -> None:
    """Ranges are checked once for every front end (engine.params); a job gets the same message."""
    async def run() -> list[dict[str, Any]]:
        return [item async for item in worker.stream({"id": "r", "input": {"text": "hi", "speed": 9}})]

    items = asyncio.run(run())
    assert items == [{"error": "bad_request: speed must be between 0.25 and 4.0, got 9.0"}]
