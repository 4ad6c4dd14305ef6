"""``python -m server``: load and warm the model, then serve. Exit 1 with one clear line on failure."""

from __future__ import annotations

import asyncio
import logging
import sys

from engine import EngineError
from observability.logs import configure_logging
from server.core.app import serve
from server.core.settings import load_settings

log = logging.getLogger("server")


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(argv)
    configure_logging(settings.log_format, settings.log_level)
    try:
        asyncio.run(serve(settings))
    except EngineError as exc:
        print(f"error: cannot start: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the port is taken
        print(f"error: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
