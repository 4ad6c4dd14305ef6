"""Threads that run torch: the model's one thread owns the CPU's parallel team; every helper is single-threaded.

torch on CPU parallelises ops with OpenMP (libgomp in the pip wheels). Each thread that starts a parallel
op gets its own team of worker threads, and once a process has more OpenMP threads than cores, libgomp
stops spinning between parallel regions (its "throttled" spin count) and every region pays a wake-up.
Measured on this 2-core machine (tiny profile, default voice, 32 steps): one request costs 0.51 s when the
model's thread is the only one that ever ran a parallel op, 0.74 s (+45 %) once any other thread has run one
(loading the model on a helper thread, ``torchaudio`` resampling an upload, a 128 k-sample RMS scale), and
it stays that slow. ``OMP_WAIT_POLICY=passive`` costs the same.

So: load, warm-up, voice mels and batches run on one thread (``model_executor``), and threads that touch
torch for anything else (decoding uploads, the default voice) come from ``helper_executor``, whose threads
call ``torch.set_num_threads(1)`` first: a thread-local setting (OpenMP ICV, MKL's local count), so the
model thread keeps its team. Do not call ``torch.set_num_threads`` on the main thread: its OpenMP settings
are the defaults every new thread inherits. Reproduce with ``scripts/bench_threads.py``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

MODEL_THREAD = "tts-model"


def single_threaded() -> None:
    """Initializer for helper threads: torch ops here run inline, no OpenMP team of their own."""
    torch.set_num_threads(1)


def model_executor() -> ThreadPoolExecutor:
    """The one thread all model work runs on (load, warm-up, voice mels, batches)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=MODEL_THREAD)


def helper_executor(workers: int, name: str) -> ThreadPoolExecutor:
    """A pool for CPU work beside the model (decoding, encoding, file I/O) that may touch torch."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name, initializer=single_threaded)
