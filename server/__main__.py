"""``python -m server``: load and warm the model, then serve. Exit 1 with one clear line on failure."""

from __future__ import annotations

import asyncio
import logging
import sys

from engine import EngineError
from observability.logs import configure_logging
from observability.startup import CLOCK
from server.app import serve
from server.core.settings import load_settings

log = logging.getLogger("server")


def main(argv: list[str] | None = None) -> int:
    CLOCK.entered()  # imports end here; startup phases count from the process's start
    settings = load_settings(argv)
    configure_logging(settings.log_format, settings.log_level)
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:
        return 0
    except (EngineError, OSError) as exc:  # a bad checkpoint, hub offline, the port taken...
        print(f"error: cannot start: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything else at startup: still one line (the traceback at debug level)
        log.debug("startup failed", exc_info=exc)
        print(f"error: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
