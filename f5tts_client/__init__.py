"""Python client for the server's WebSocket streaming API (``/v1/stream``); needs neither torch nor the server.

    async with TTSClient("ws://127.0.0.1:8000/v1/stream") as client:
        result = await client.synthesize("Hello there.")
"""

from __future__ import annotations

from f5tts_client.client import HEADER, Cue, StreamError, StreamResult, TTSClient, cues, srt, vtt

__all__ = ["HEADER", "Cue", "StreamError", "StreamResult", "TTSClient", "cues", "srt", "vtt"]
