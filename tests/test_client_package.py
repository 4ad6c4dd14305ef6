"""The client package stands alone: importing it (library and CLI) loads neither torch nor the server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a fresh interpreter: the test process has torch loaded already

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import json, sys
import f5tts_client, f5tts_client.cli
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "server", "engine", "batching"})))
"""


def test_client_imports_without_torch_or_server() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True)
    assert json.loads(out.stdout) == []


def test_cli_is_a_module_and_a_console_script() -> None:
    out = subprocess.run([sys.executable, "-m", "f5tts_client", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True)
    assert "--srt" in out.stdout and "--url" in out.stdout
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["f5tts-client"] == "f5tts_client.cli:main"
