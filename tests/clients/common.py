"""What the client scripts share: the server's base URL from argv, and one JSON line of results on stdout.
These scripts run in .venv-clients (tests/clients/constraints.txt), never in the server's environment."""

from __future__ import annotations

import json
import sys
from typing import Any


def base_url() -> str:
    return sys.argv[1]


def report(**results: Any) -> None:
    print("RESULT " + json.dumps(results), flush=True)
