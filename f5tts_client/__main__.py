"""``python -m f5tts_client "Hello there." -o hello.wav``: the command-line client."""

from __future__ import annotations

import sys

from f5tts_client.cli import main

sys.exit(main())
