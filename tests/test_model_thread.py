"""All torch work of a server runs on one model thread; helpers that touch torch run single-threaded.

A second OpenMP team in the process made every CPU request ~45 % slower (``engine.threads``), and nothing
in the output shows it: only where the work runs does. So these tests spy on where it runs."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch

import server.core.voices as store_module
from engine import Engine
from engine.step_adapter import EngineStepModel
from engine.threads import INTRA_OP_THREADS, MODEL_THREAD, helper_executor, model_executor
from f5tts_client import TTSClient
from server.core.settings import Settings
from tests.conftest import LiveServer, upload_voice

Seen = dict[str, set[tuple[str, int]]]


def _spy(seen: Seen, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        seen.setdefault(name, set()).add((threading.current_thread().name, torch.get_num_threads()))
        return fn(*args, **kwargs)
    return wrapper


def test_helpers_are_single_threaded_and_leave_the_model_thread_its_team() -> None:
    helpers = helper_executor(2, "test-helper")
    model = None
    try:
        in_helper = helpers.submit(lambda: (torch.ones(1 << 17) * 2.0, torch.get_num_threads())[1]).result()
        assert in_helper == 1 < INTRA_OP_THREADS  # (this machine and CI have 2 cores)
        # torch made 1 the default for threads not yet started: a plain new thread gets it...
        with ThreadPoolExecutor(1) as plain:
            assert plain.submit(torch.get_num_threads).result() == 1
        # ...the model thread, started after the helper, still gets the process's own count
        model = model_executor()
        assert model.submit(torch.get_num_threads).result() == INTRA_OP_THREADS
        assert model.submit(lambda: threading.current_thread().name).result().startswith(MODEL_THREAD)
    finally:
        helpers.shutdown()
        if model is not None:
            model.shutdown()


@pytest.mark.slow
async def test_server_runs_model_work_on_one_thread(start_server: Callable[..., Awaitable[LiveServer]],
                                                    test_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: Seen = {}
    monkeypatch.setattr(Engine, "load", classmethod(_spy(seen, "load", Engine.load.__func__)))  # type: ignore[attr-defined]
    for name in ("attach", "synthesize"):
        monkeypatch.setattr(Engine, name, _spy(seen, name, getattr(Engine, name)))
    # The step scheduler times its cost model's seed with step passes at startup.
    monkeypatch.setattr(EngineStepModel, "step_isolating",
                        _spy(seen, "step_isolating", EngineStepModel.step_isolating))
    for name in ("default_voice", "load_reference", "voice_from_reference", "encode_reference"):
        monkeypatch.setattr(store_module, name, _spy(seen, name, getattr(store_module, name)))
    live = await start_server(test_settings.replace(warmup=True, max_batch_size=2, scheduler="step"))
    assert (await upload_voice(live, "en")).status == 201
    async with TTSClient(live.ws_url) as client:
        result = await client.synthesize("Hello there.", voice="en", seed=1)
    assert result.samples > 0

    model_work = {"load", "attach", "step_isolating", "synthesize"}
    assert model_work <= seen.keys()
    threads = {thread for name in model_work for thread, _ in seen[name]}
    assert len(threads) == 1 and threads.pop().startswith(MODEL_THREAD), seen
    assert {count for name in model_work for _, count in seen[name]} == {INTRA_OP_THREADS}
    helper_work = {"default_voice", "load_reference", "voice_from_reference", "encode_reference"}
    assert helper_work <= seen.keys()
    for name in helper_work:
        for thread, count in seen[name]:
            assert thread.startswith("tts-voice") and count == 1, (name, thread, count)


def test_the_spy_sees_a_second_thread() -> None:
    """The spies above would notice model work moved to another thread (the test can fail)."""
    seen: Seen = {}
    probe = _spy(seen, "probe", lambda: None)
    probe()
    with ThreadPoolExecutor(1, thread_name_prefix="elsewhere") as other:
        other.submit(probe).result()
    assert {thread.split("_")[0] for thread, _ in seen["probe"]} == {threading.current_thread().name, "elsewhere"}
