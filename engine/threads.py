"""Threads that run torch: the model's one thread owns the CPU's parallel team; every helper is single-threaded.

torch on CPU parallelises ops with OpenMP (libgomp in the pip wheels). Each thread that starts a parallel
op gets its own team of worker threads, kept until that thread exits. With more OpenMP threads than cores
every parallel region pays a wake-up (libgomp's "throttled" spin count for oversubscribed processes is the
likely mechanism; the figures below are what is certain). Measured on this 2-core machine (tiny profile,
default voice, 32 steps, ``python -m bench.threads``): one request costs 0.49 s on the model thread
alone, 0.72 s (+46 %) while any other live thread has run a parallel op (loading the model in
``asyncio.to_thread``, ``torchaudio`` resampling an upload, scaling a 128 k-sample tensor), 0.48 s beside
a helper that called ``torch.set_num_threads(1)`` first. ``OMP_WAIT_POLICY=passive`` costs the same as
the slow case.

So: load, warm-up, voice mels and batches run on one thread (``model_executor``), and threads that touch
torch for anything else (decoding uploads, the default voice) come from ``helper_executor``, whose threads
call ``torch.set_num_threads(1)`` first. That call is thread-local for OpenMP and MKL, but it also sets
torch's process-wide default, which any thread not yet initialised picks up at its first parallel op; so
the model thread sets its own count too (``INTRA_OP_THREADS``, read when this module is imported, before
any helper ran).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

MODEL_THREAD = "tts-model"
INTRA_OP_THREADS = torch.get_num_threads()
"""torch's default intra-op thread count for this process (OMP_NUM_THREADS, else the cores)."""


def single_threaded() -> None:
    """Initializer for helper threads: torch ops here run inline, no OpenMP team of their own."""
    torch.set_num_threads(1)


def model_executor() -> ThreadPoolExecutor:
    """The one thread all model work runs on (load, warm-up, voice mels, batches)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=MODEL_THREAD, initializer=torch.set_num_threads,
                              initargs=(INTRA_OP_THREADS,))


def helper_executor(workers: int, name: str) -> ThreadPoolExecutor:
    """A pool for CPU work beside the model (decoding, encoding, file I/O) that may touch torch."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name, initializer=single_threaded)
