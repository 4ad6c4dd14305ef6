"""HTTP routes: metrics and voices (health and readiness: server/http/health.py)."""

from __future__ import annotations

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client.aiohttp import make_aiohttp_handler

from server.core.errors import ServiceError
from server.core.state import STATE
from server.core.voices import VoiceLimits, describe
from server.http.errors import service_error_response
from server.http.health import routes as health_routes

routes = web.RouteTableDef()


@routes.get("/v1/voices")
async def list_voices(request: web.Request) -> web.Response:
    state = request.app[STATE]
    voices = state.runtime.voices
    # name: OpenAI-style clients (Open WebUI) show it; aliases: the other names that reach these voices
    listed = [{**describe(v, builtin=v.id == "default"), "name": v.id} for v in voices.all()]
    return web.json_response({"voices": listed, "aliases": state.service.aliases.listing()})


@routes.get("/v1/voices/{voice_id}")
async def get_voice(request: web.Request) -> web.Response:
    voices = request.app[STATE].runtime.voices
    voice = await voices.lookup(request.match_info["voice_id"])
    if voice is None:
        return service_error_response(ServiceError("unknown_voice", f"no voice {request.match_info['voice_id']!r}",
                                                   status=404))
    return web.json_response({**describe(voice, builtin=voice.id == "default"), "name": voice.id})


@routes.delete("/v1/voices/{voice_id}")
async def delete_voice(request: web.Request) -> web.Response:
    voices = request.app[STATE].runtime.voices
    try:
        await voices.delete(request.match_info["voice_id"])
    except ServiceError as exc:
        return service_error_response(exc)
    return web.Response(status=204)


@routes.post("/v1/voices")
async def create_voice(request: web.Request) -> web.Response:
    """Multipart fields ``audio``, ``transcript`` and optional ``id``; every refusal is a JSON error."""
    state = request.app[STATE]
    voices, settings = state.runtime.voices, state.settings
    try:
        if not request.content_type.startswith("multipart/"):
            raise ServiceError("bad_request", "send multipart/form-data with fields audio, transcript, id")
        form = await _read_form(request, {"audio": settings.max_upload_bytes, "id": 256,
                                          "transcript": settings.max_transcript_bytes})
        audio, transcript, voice_id = form.get("audio"), form.get("transcript"), form.get("id")
        if not audio:
            raise ServiceError("bad_request", "the form field 'audio' (the reference recording) is required")
        text = transcript.decode("utf-8", errors="replace") if transcript else ""
        if not text.strip():
            raise ServiceError("bad_request", "the form field 'transcript' (what the audio says) is required")
        limits = VoiceLimits(max_transcript_bytes=settings.max_transcript_bytes, max_voices=settings.max_voices,
                             max_bytes=settings.max_voices_bytes)
        voice = await voices.add(voice_id.decode("utf-8", errors="replace") if voice_id else None, audio, text,
                                 limits)
    except ServiceError as exc:
        return service_error_response(exc)
    return web.json_response(describe(voice), status=201)


async def _read_form(request: web.Request, limits: dict[str, int]) -> dict[str, bytes]:
    """The known fields, each read up to its limit (aiohttp's ``client_max_size`` does not bound a
    multipart read); unknown fields are skipped unread. Raises ServiceError on a malformed body."""
    form: dict[str, bytes] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name not in limits:
                continue  # the reader skips an unread part's bytes without keeping them
            form[part.name] = await _read_part(part, part.name, limits[part.name])
    except (ValueError, AssertionError, LookupError, TypeError, HttpProcessingError) as exc:
        # aiohttp reports a bad boundary, header or part with assorted exception types
        raise ServiceError("bad_request", f"malformed multipart body: {exc}") from exc
    return form


async def _read_part(part: BodyPartReader, name: str, limit: int) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > limit:
            if name == "transcript":
                raise ServiceError("transcript_too_long", f"the transcript is over {limit} bytes (UTF-8)")
            raise ServiceError("too_large", f"the form field {name!r} is over {limit} bytes")
    return bytes(data)


def add_routes(app: web.Application) -> None:
    app.router.add_routes(routes)
    app.router.add_routes(health_routes)
    app.router.add_get("/metrics", make_aiohttp_handler(app[STATE].metrics.registry))
