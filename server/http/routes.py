"""HTTP routes: health, readiness, metrics, voices."""

from __future__ import annotations

from aiohttp import BodyPartReader, web
from prometheus_client.aiohttp import make_aiohttp_handler

from server.core.state import STATE
from server.core.voices import VoiceError, describe
from server.http.errors import error_response

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.ready and not state.shutting_down:
        return web.json_response({"status": "ready"})
    reason = "shutting_down" if state.shutting_down else "starting"
    return web.json_response({"status": reason}, status=503)


@routes.get("/v1/voices")
async def list_voices(request: web.Request) -> web.Response:
    _, _, voices = request.app[STATE].serving()
    return web.json_response({"voices": [describe(v, builtin=v.id == "default") for v in voices.all()]})


@routes.get("/v1/voices/{voice_id}")
async def get_voice(request: web.Request) -> web.Response:
    _, _, voices = request.app[STATE].serving()
    voice = voices.get(request.match_info["voice_id"])
    if voice is None:
        return error_response(404, "unknown_voice", f"no voice {request.match_info['voice_id']!r}")
    return web.json_response(describe(voice, builtin=voice.id == "default"))


@routes.delete("/v1/voices/{voice_id}")
async def delete_voice(request: web.Request) -> web.Response:
    _, _, voices = request.app[STATE].serving()
    try:
        voices.delete(request.match_info["voice_id"])
    except VoiceError as exc:
        return error_response(exc.status, exc.code, str(exc))
    return web.Response(status=204)


@routes.post("/v1/voices")
async def create_voice(request: web.Request) -> web.Response:
    _, _, voices = request.app[STATE].serving()
    if not request.content_type.startswith("multipart/"):
        return error_response(400, "bad_request", "send multipart/form-data with fields audio, transcript, id")
    fields: dict[str, bytes | str] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        data = await part.read()
        fields[part.name] = bytes(data) if part.name == "audio" else data.decode("utf-8", errors="replace")
    audio, transcript, voice_id = fields.get("audio"), fields.get("transcript"), fields.get("id")
    if not isinstance(audio, bytes) or not audio:
        return error_response(400, "bad_request", "the form field 'audio' (the reference recording) is required")
    if not isinstance(transcript, str) or not transcript.strip():
        return error_response(400, "bad_request", "the form field 'transcript' (what the audio says) is required")
    try:
        voice = await voices.add(str(voice_id) if voice_id else None, audio, transcript)
    except VoiceError as exc:
        return error_response(exc.status, exc.code, str(exc))
    return web.json_response(describe(voice), status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_routes(routes)
    app.router.add_get("/metrics", make_aiohttp_handler(app[STATE].metrics.registry))
