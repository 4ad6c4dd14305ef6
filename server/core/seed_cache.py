"""The cost model's startup timings, kept from one start to the next on the same machine.

Timing passes of every batch size to seed the scheduler's cost curve costs seconds at every start; the
curve depends only on the model, the device and the software doing the arithmetic. So the timings are
written once and read back by a later start whose key matches: model and checkpoint files (path, size,
modification time), device, dtype, torch version, scheduler mode, batch cap, step count and the warm-up
voice. Anything else (a new checkpoint, another GPU, a torch upgrade) is a miss, and the start times the
passes again. Live traffic refines the curve after ``ready`` either way.

A missing, unreadable or foreign file is a miss, never an error: the cache only saves time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from batching import CostSample

log = logging.getLogger(__name__)
VERSION = 1


def cache_dir(configured: str) -> Path | None:
    """The directory (``--cost-seed-dir``): empty = the user's cache, ``off`` = none."""
    if configured == "off":
        return None
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "f5tts-server"


def _file_id(path: str | None) -> list[Any]:
    if not path:
        return []
    with contextlib.suppress(OSError):
        stat = Path(path).stat()
        return [str(Path(path).resolve()), stat.st_size, int(stat.st_mtime)]
    return [path]


def seed_key(*, model: str, files: Sequence[str | None], device: str, dtype: str, scheduler: str,
             max_batch_size: int, nfe_steps: int, voice_frames: int) -> str:
    """What the timings depend on, hashed."""
    # "cuda:0" names a slot, not a GPU: the device's own name tells another GPU model in that slot apart.
    hardware = torch.cuda.get_device_name(device) if device.startswith("cuda") else ""
    parts = {"version": VERSION, "model": model, "files": [_file_id(f) for f in files], "device": device,
             "hardware": hardware,
             "dtype": dtype, "torch": torch.__version__, "scheduler": scheduler, "max_batch_size": max_batch_size,
             "nfe_steps": nfe_steps, "voice_frames": voice_frames}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def load(directory: Path | None, key: str) -> list[CostSample] | None:
    if directory is None:
        return None
    try:
        data = json.loads((directory / f"cost-seed-{key}.json").read_text())
        return [CostSample(int(n), int(f), float(s)) for n, f, s in data["samples"]] or None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(directory: Path | None, key: str, samples: Sequence[CostSample]) -> None:
    if directory is None:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"cost-seed-{key}.json"
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"samples": [list(s) for s in samples]}))
        partial.replace(target)  # atomic: a concurrent start reads the old file or the new one
    except OSError as exc:
        log.warning("cost seed not kept", extra={"error": str(exc)})
