"""Routes of the agent endpoints (Cartesia- and ElevenLabs-compatible); ``setup`` adds them to the app."""

from __future__ import annotations

from aiohttp import web

from server.agents import cartesia, elevenlabs, http

AUTH_PREFIX = "/v1/text-to-speech/"
"""Paths under /v1/ that check the API key themselves, as their protocol names it (``xi-api-key``)."""


def setup(app: web.Application) -> None:
    router = app.router
    router.add_get("/tts/websocket", cartesia.websocket)
    router.add_post("/tts/bytes", http.cartesia_bytes)
    router.add_post("/tts/sse", http.cartesia_sse)
    router.add_get("/v1/text-to-speech/{voice_id}/stream-input", elevenlabs.websocket)
    router.add_get("/v1/text-to-speech/{voice_id}/multi-stream-input", elevenlabs.websocket)
    router.add_post("/v1/text-to-speech/{voice_id}", http.elevenlabs_speech)
    router.add_post("/v1/text-to-speech/{voice_id}/stream", http.elevenlabs_speech)
