"""Docker HEALTHCHECK: with TTS_MODE=server (or its old name http), the server's /healthz must answer on
TTS_PORT (else RunPod's PORT, else 8000); the queue worker (TTS_MODE=queue) has no port."""

from __future__ import annotations

import os
import sys
import urllib.request

if os.environ.get("TTS_MODE", "queue") not in ("server", "http"):
    sys.exit(0)
port = os.environ.get("TTS_PORT") or os.environ.get("PORT") or "8000"
url = f"http://127.0.0.1:{port}/healthz"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:
    print(f"unhealthy: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
