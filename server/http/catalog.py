"""What an OpenAI client discovers before it speaks: models (``GET /v1/models``, ``/v1/models/{id}``,
``/v1/audio/models``) and voices (``GET /v1/audio/voices``, Open WebUI's shape), and how OpenAI's model
names — dated snapshots included — resolve to the one served model."""

from __future__ import annotations

import re
import time

from aiohttp import web

from server.core.state import STATE, AppState
from server.http.errors import error_response

routes = web.RouteTableDef()
MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
# OpenAI pins models as "<name>-<MMDD>" (tts-1-1106) or "<name>-<YYYY-MM-DD>" (gpt-4o-mini-tts-2025-12-15);
# a client pinned to a snapshot must still reach us, so every snapshot of an alias is that alias.
_SNAPSHOT = re.compile(r"(?P<base>.+?)-(?:\d{4}|\d{4}-\d{2}-\d{2})")


def model_ids(state: AppState) -> list[str]:
    return [state.settings.model, *MODEL_ALIASES]


def resolve_model(name: str, state: AppState) -> str | None:
    """The served model's id for an accepted model name, else None."""
    ids = model_ids(state)
    if name in ids:
        return state.settings.model
    snapshot = _SNAPSHOT.fullmatch(name)
    if snapshot is not None and snapshot["base"] in MODEL_ALIASES:
        return state.settings.model
    return None


def _model(model_id: str, created: int) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "f5tts-server"}


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    created = int(time.time())
    return web.json_response({"object": "list", "data": [_model(m, created)
                                                         for m in model_ids(request.app[STATE])]})


@routes.get("/v1/models/{model_id}")
async def get_model(request: web.Request) -> web.Response:
    model_id = request.match_info["model_id"]
    if resolve_model(model_id, request.app[STATE]) is None:
        return error_response(404, "model_not_found", f"The model '{model_id}' does not exist", param="model")
    return web.json_response(_model(model_id, int(time.time())))


@routes.get("/v1/audio/models")
async def audio_models(request: web.Request) -> web.Response:
    """Open WebUI's discovery call: ``{"models": [{"id"}]}``."""
    return web.json_response({"models": [{"id": m} for m in model_ids(request.app[STATE])]})


@routes.get("/v1/audio/voices")
async def audio_voices(request: web.Request) -> web.Response:
    """Open WebUI's discovery call: ``{"voices": [{"id", "name"}]}``, voices first, then their aliases."""
    state = request.app[STATE]
    voices = state.runtime.voices
    listed = [{"id": v.id, "name": v.id} for v in voices.all()]
    taken = {v["id"] for v in listed}
    for alias in state.service.aliases.listing():
        if alias["id"] not in taken:  # a real voice with that id wins over the alias
            listed.append({"id": alias["id"], "name": f"{alias['id']} ({alias['voice']})"})
    return web.json_response({"voices": listed})
