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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from batching import CostSample, MicroBatcher, StepBatcher
from batching.step_worker import time_steps
from engine import Engine, SynthesisItem, Voice, warmup_batch_sizes
from engine.step_adapter import EngineStepModel
from engine.threads import model_executor
from engine.voices import DEFAULT_VOICE_ID
from observability import Metrics
from observability.startup import Phases
from server.core import seed_cache
from server.core.settings import Settings
from server.core.voices import VoiceStore
from text.normalize import prepare as prepare_text

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
    phases = Phases()  # from the process's start when an entry point owns it: totals include imports
    phases.mark("setup")
    log.info("loading model", extra={"model": settings.model, "device": settings.device})
    model_thread = model_executor()
    try:
        engine = await asyncio.get_running_loop().run_in_executor(model_thread, Engine.load,
                                                                  settings.engine_config())
    except BaseException:
        model_thread.shutdown(wait=False)
        raise
    phases.mark("load")
    dtype = str(engine.dtype).removeprefix("torch.")
    log.info("model loaded", extra={"seconds": round(engine.load_seconds, 3), "device": str(engine.device),
                                    "dtype": dtype})
    batcher: AnyBatcher = (  # step: items join between flow steps; request: whole batches
        StepBatcher(EngineStepModel(engine), settings.batcher_config(), metrics, settings.default_nfe_steps,
                    executor=model_thread, owns_executor=True)
        if settings.scheduler == "step"
        else MicroBatcher(engine, settings.batcher_config(), metrics, executor=model_thread, owns_executor=True))
    voices = VoiceStore(engine, Path(settings.voices_dir) if settings.voices_dir else None,
                        batcher.call_in_worker)
    await voices.load()
    phases.mark("voices")
    if settings.warmup:
        await _warm(settings, engine, batcher, voices.get(DEFAULT_VOICE_ID) or engine.default_voice(), phases)
    _publish(settings, metrics, engine, dtype)
    _return_freed_memory()
    phases.mark("ready")
    timed = metrics.startup_finished(phases.finished())
    log.info("startup", extra={f"{phase}_seconds": round(s, 3) for phase, s in timed.items()})
    return Runtime(engine, batcher, voices)


async def _warm(settings: Settings, engine: Engine, batcher: AnyBatcher, voice: Voice, phases: Phases) -> None:
    """One real pass (every kernel the model runs, the vocoder's included, is then hot), then the cost
    model's seed: from the previous start on this machine when it matches (``seed_cache``), else timed
    now (step mode: single step passes; request mode: the engine's whole-batch warm-up) and kept."""
    short = SynthesisItem("Warming up the model.", voice, nfe_steps=2, seed=0)
    await batcher.call_in_worker(engine.synthesize, [short])
    prepare_text()  # the normaliser's rules, compiled before the first request instead of during it
    phases.mark("warmup")
    folder = seed_cache.cache_dir(settings.cost_seed_dir)
    key = seed_cache.seed_key(
        model=settings.model, files=[settings.ckpt_file, settings.vocab_file, settings.vocoder_path],
        device=str(engine.device), dtype=str(engine.dtype), scheduler=settings.scheduler,
        max_batch_size=settings.max_batch_size, nfe_steps=settings.default_nfe_steps, voice_frames=voice.ref_frames)
    samples = seed_cache.load(folder, key)
    source = "kept" if samples is not None else "timed"
    if samples is None:
        samples = await _time_costs(settings, engine, batcher, voice)
        seed_cache.save(folder, key, samples)
    predicted = (batcher.planner.seed_passes(samples) if isinstance(batcher, StepBatcher)
                 else batcher.seed_costs(samples))
    phases.mark("seed")
    log.info("model warm", extra={"seed": source, "samples": len(samples), "predicted_batch_s": predicted})


async def _time_costs(settings: Settings, engine: Engine, batcher: AnyBatcher, voice: Voice) -> list[CostSample]:
    sizes = warmup_batch_sizes(settings.max_batch_size)
    steps = settings.default_nfe_steps
    if isinstance(batcher, MicroBatcher):
        timed = await batcher.call_in_worker(engine.warmup, sizes, 2, voice, steps)
        return [CostSample(*sample) for sample in timed]
    # Step mode: a short chunk at every size, a long one at the ends (how a step grows with length).
    short = SynthesisItem("Hello there.", voice, nfe_steps=steps)
    long = SynthesisItem("The quick brown fox jumps over the lazy dog near the river bank.", voice, nfe_steps=steps)
    model = batcher.model
    return (await batcher.call_in_worker(time_steps, model, [short], sizes)
            + await batcher.call_in_worker(time_steps, model, [long], sorted({sizes[0], sizes[-1]})))


def _publish(settings: Settings, metrics: Metrics, engine: Engine, dtype: str) -> None:
    metrics.queue_capacity.set(settings.max_queue)
    if engine.device.type == "cuda":
        device = engine.device
        metrics.watch_gpu_memory(lambda: torch.cuda.memory_allocated(device),
                                 lambda: torch.cuda.memory_reserved(device))
    metrics.build_info.info({"model": settings.model, "device": str(engine.device), "version": VERSION,
                             "dtype": dtype})


def _return_freed_memory() -> None:
    """Hand the heap that loading and warm-up freed back to the OS (glibc keeps it per thread arena):
    ~80 MB of idle RSS on the tiny profile. A no-op where the C library has no ``malloc_trim``."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
