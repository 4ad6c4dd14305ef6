"""Docker HEALTHCHECK: with TTS_MODE=http, the server's /healthz must answer; the RunPod worker has no port."""

from __future__ import annotations

import os
import sys
import urllib.request

if os.environ.get("TTS_MODE", "runpod") != "http":
    sys.exit(0)
url = f"http://127.0.0.1:{os.environ.get('TTS_PORT', '8000')}/healthz"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:
    print(f"unhealthy: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
