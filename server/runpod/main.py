"""``python -m server.runpod_worker``: boot the worker, then hand it to the runpod SDK."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
from collections.abc import Mapping, Sequence

from engine import EngineError
from observability.logs import configure_logging
from observability.startup import CLOCK
from server.core.settings import Settings, load_settings
from server.runpod.worker import Worker

log = logging.getLogger("server.runpod_worker")


def local_test_mode(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Will the SDK run one job and exit (``--test_input`` / ``test_input.json``) rather than serve?"""
    if "--rp_serve_api" in argv:
        return False
    return any(a == "--test_input" or a.startswith("--test_input=") for a in argv) \
        or "RUNPOD_WEBHOOK_GET_JOB" not in environ


def log_diagnostics(settings: Settings) -> None:
    disk = shutil.disk_usage("/")
    log.info("worker starting", extra={
        "python": platform.python_version(), "executable": sys.executable, "model": settings.model,
        "device": settings.device, "disk_free_gb": round(disk.free / 1e9, 1), "pid": os.getpid(),
    })


def main() -> int:
    CLOCK.entered()  # imports end here; startup phases count from the process's start
    settings = load_settings([])  # TTS_* env only: the command line belongs to the runpod SDK
    configure_logging(settings.log_format, settings.log_level)
    log_diagnostics(settings)
    try:
        worker = Worker.boot(settings)
    except (EngineError, OSError) as exc:  # OSError: e.g. the voices dir cannot be created
        print(f"error: cannot start: {exc}", file=sys.stderr)
        return 1
    import runpod

    handler = worker.aggregate if local_test_mode(sys.argv, os.environ) else worker.stream
    runpod.serverless.start({
        "handler": handler,
        "return_aggregate_stream": True,
        "concurrency_modifier": lambda _current: worker.concurrency,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
