"""Startup shared by the HTTP server and the RunPod worker: load, voices, warm-up, startup metrics.

All model work (load, voice mels, warm-up, batches) runs on one thread, ``engine.threads.model_executor``:
that thread's kernel caches and handles are the warm ones, and no second OpenMP team slows it (see
``engine.threads``: +45 % per request on CPU). The batcher is returned *not started*: its task must live in the
event loop that serves requests, which for the RunPod worker is the SDK's, not this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from batching import MicroBatcher, StepBatcher
from engine import Engine, SynthesisItem, warmup_batch_sizes
from engine.step_adapter import EngineStepModel
from engine.threads import model_executor
from engine.voices import DEFAULT_VOICE_ID
from observability import Metrics
from observability.startup import CLOCK
from server.core.settings import Settings
from server.core.voices import VoiceStore

log = logging.getLogger("server.core.boot")
VERSION = "0.1.0"
AnyBatcher = MicroBatcher[SynthesisItem, np.ndarray] | StepBatcher[SynthesisItem, np.ndarray]


@dataclass(frozen=True)
class Runtime:
    engine: Engine
    batcher: AnyBatcher
    voices: VoiceStore


async def prepare(settings: Settings, metrics: Metrics) -> Runtime:
    """Load the model, prepare voices and warm up. Raises EngineError (or OSError) on failure."""
    started = CLOCK.begin()  # the process's start when an entry point owns it: totals include imports
    log.info("loading model", extra={"model": settings.model, "device": settings.device})
    model_thread = model_executor()
    try:
        engine = await asyncio.get_running_loop().run_in_executor(model_thread, Engine.load,
                                                                  settings.engine_config())
    except BaseException:
        model_thread.shutdown(wait=False)
        raise
    metrics.startup_seconds.labels("load").set(engine.load_seconds)
    dtype = str(engine.dtype).removeprefix("torch.")
    log.info("model loaded", extra={"seconds": round(engine.load_seconds, 3), "device": str(engine.device),
                                    "dtype": dtype})
    batcher: AnyBatcher = (  # step: items join between flow steps (#13); request: whole batches
        StepBatcher(EngineStepModel(engine), settings.batcher_config(), metrics, settings.default_nfe_steps,
                    executor=model_thread, owns_executor=True)
        if settings.scheduler == "step"
        else MicroBatcher(engine, settings.batcher_config(), metrics, executor=model_thread, owns_executor=True))
    voices = VoiceStore(engine, Path(settings.voices_dir) if settings.voices_dir else None,
                        batcher.call_in_worker, sync_s=settings.voices_sync_s)
    await voices.load()
    if settings.warmup:  # timed warm-up passes (default voice) seed the batcher's cost model
        sizes = warmup_batch_sizes(settings.max_batch_size)
        timings = await batcher.call_in_worker(engine.warmup, sizes, 2, voices.get(DEFAULT_VOICE_ID),
                                               settings.default_nfe_steps)
        predicted = batcher.seed_costs(timings)
        if isinstance(batcher, StepBatcher):  # per-step curve: time single step passes, as it learns live
            voice = voices.get(DEFAULT_VOICE_ID) or engine.default_voice()
            warm = [SynthesisItem(text, voice, nfe_steps=settings.default_nfe_steps)  # a short and a long length
                    for text in ("Hello there.", "The quick brown fox jumps over the lazy dog near the river bank.")]
            predicted = await batcher.seed_step_costs(warm, sizes)
        log.info("model warm", extra={"seconds": round(engine.warmup_seconds, 3), "batch_sizes": sizes,
                                      "predicted_batch_s": predicted})
    metrics.startup_seconds.labels("warmup").set(engine.warmup_seconds)
    metrics.queue_capacity.set(settings.max_queue)
    if engine.device.type == "cuda":
        device = engine.device
        metrics.watch_gpu_memory(lambda: torch.cuda.memory_allocated(device),
                                 lambda: torch.cuda.memory_reserved(device))
    metrics.build_info.info({"model": settings.model, "device": str(engine.device), "version": VERSION,
                             "dtype": dtype})
    _return_freed_memory()
    phases = metrics.startup_finished(CLOCK.import_seconds(), engine.load_seconds, engine.warmup_seconds,
                                      time.perf_counter() - started)
    log.info("startup", extra={f"{phase}_seconds": round(s, 3) for phase, s in phases.items()})
    return Runtime(engine, batcher, voices)


def _return_freed_memory() -> None:
    """Hand the heap that loading and warm-up freed back to the OS (glibc keeps it per thread arena):
    ~80 MB of idle RSS on the tiny profile. A no-op where the C library has no ``malloc_trim``."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
