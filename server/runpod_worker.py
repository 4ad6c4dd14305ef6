"""``python -m server.runpod_worker``: kept as the documented entry point; the worker lives in
``server.runpod``."""

from __future__ import annotations

import sys

from server.runpod.main import main

if __name__ == "__main__":
    sys.exit(main())
