"""The one request path shared by every front end: a front end parses its input into a
``StreamRequest`` and maps ``ServiceError`` onto its wire; voice lookup, defaults, validation, seeding,
in-flight accounting and request metrics all happen here."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from engine import EngineError, SynthesisItem, SynthesisParams, Voice
from engine.params import ParameterRangeError
from observability import Metrics
from server.core.aliases import VoiceAliases
from server.core.boot import Runtime
from server.core.errors import OUTCOME_FAULT, ServiceError, classify
from server.core.feed import TextFeed
from server.core.pieces import PieceMaker, chunk_speed, is_ssml
from server.core.request import StreamRequest
from server.core.settings import Settings
from server.core.stream import Sink, Stream
from text.chunking import FIRST_CHUNK_BYTES
from text.errors import InvalidTextError
from text.ssml import SSMLError

log = logging.getLogger(__name__)
_ROUTES = {"ws": "/v1/stream", "http": "/v1/audio/speech", "runpod": "runpod"}
"""Where each transport's requests arrive, for refusal log lines whose front end did not say."""


class Service:
    """Opens streams on the runtime and keeps the books: in-flight gauges, refusals, drain state."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        metrics.set_outcome_faults(OUTCOME_FAULT)  # the error table says who is at fault for each outcome
        self._runtime: Runtime | None = None
        self.draining = False
        self.active = 0
        """Streams running now, over all front ends."""
        self.aliases = VoiceAliases.build(Path(settings.voices_dir) if settings.voices_dir else None,
                                          settings.voice_aliases, recheck_s=settings.voices_sync_s)
        """Other names for voices (OpenAI's voice names), resolved here for every front end."""

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise ServiceError("shutting_down", "the server is not ready", retry_after_ms=1000)
        return self._runtime

    def attach(self, runtime: Runtime | None) -> None:
        self._runtime = runtime
        if runtime is not None:
            self._warn_dangling_aliases(runtime)

    def _warn_dangling_aliases(self, runtime: Runtime) -> None:
        """An alias whose voice does not exist (yet) refuses every request for it: a warning at start."""
        for name, target in self.aliases.mapping.items():
            if runtime.voices.get(target) is None and runtime.voices.get(name) is None:
                log.warning("voice alias %s names voice %s, which does not exist: requests for %s get "
                            "unknown_voice until it is uploaded", name, target, name)

    async def load_voice(self, voice: str | Voice) -> None:
        """Read a voice (or an alias's target) that another replica sharing the voices dir created a
        moment ago into this process, so the ``open`` that follows finds it. Front ends await this first."""
        if isinstance(voice, Voice) or self._runtime is None:
            return
        voices = self._runtime.voices
        if await voices.lookup(voice) is None and (target := self.aliases.target(voice)) is not None:
            await voices.lookup(target)

    def open(self, request: StreamRequest, transport: str, sink: Sink, number: int = 1) -> Stream:
        """A validated stream, not yet started. A refusal is counted and raised as ``ServiceError``."""
        try:
            return self._open(request, transport, sink, number)
        except Exception as exc:
            error = classify(exc, request.id)
            self.refused(transport, error)
            raise error from None

    def busy_error(self, code: str, message: str) -> ServiceError:
        """A capacity refusal that has no request to price (the socket caps), its retry hint the backlog
        now queued (at least a second: a socket frees when a stream ends)."""
        backlog = self.runtime.batcher.backlog_seconds() if self._runtime is not None else 0.0
        return ServiceError(code, message, retry_after_ms=max(1000, int(1000 * backlog)))

    def refused(self, transport: str, error: ServiceError, route: str | None = None) -> None:
        """Count and log (one line) a request refused before it started (front ends call this for their own
        refusals)."""
        self.metrics.request_finished(transport, error.code)
        log.info("request refused", extra={"request_id": error.request_id, "transport": transport,
                                           "route": route or _ROUTES.get(transport), "code": error.code,
                                           "reason": str(error)})

    def start(self, stream: Stream) -> asyncio.Task[None]:
        """Run ``stream``; it counts as in flight until its task ends, however it ends."""
        self.active += 1
        self.metrics.inflight.labels(stream.transport).inc()
        task = asyncio.create_task(stream.run(), name=f"stream-{stream.id}")
        task.add_done_callback(lambda _t: self._finished(stream))
        return task

    def _finished(self, stream: Stream) -> None:
        stream.record_cancelled()  # no-op unless the task was cancelled before it ever ran
        self.active -= 1
        self.metrics.inflight.labels(stream.transport).dec()

    def _open(self, request: StreamRequest, transport: str, sink: Sink, number: int) -> Stream:
        if self.draining:
            raise ServiceError("shutting_down", "the server is shutting down; reconnect elsewhere", retry_after_ms=1000)
        settings, runtime = self.settings, self.runtime
        if len(request.text) > settings.max_text_chars:
            raise ServiceError("text_too_long", f"text is {len(request.text)} characters; the limit is "
                               f"{settings.max_text_chars}", param="input", detail="input_too_long")
        voice = self._voice(request.voice)
        params = self._params(request)
        if request.final and not request.text.strip():
            raise ServiceError("bad_request", "text is empty", param="input")
        # Under overload, refused before its text is prepared: a refusal costs ~nothing. Let in, it counts
        # as work ahead of the next newcomers until its first chunk is queued (the stream closes the entry).
        # When that work already makes its first audio late, its first chunk is not cut short.
        entry = runtime.batcher.refuse_early() if request.final else None
        short_first = entry is None or entry.on_time
        try:
            feed = self._feed(request, voice, params, short_first)
            if request.final and not feed.has_silence:  # a document of pauses only is fine: it is its silence
                self._check_speakable(SynthesisItem.of(feed.spoken, voice, params))
            if not short_first:
                self.metrics.long_first_chunk()
            return Stream(request.id, number, voice, params, feed, runtime, sink, self.metrics,
                          transport=transport, marks=request.marks, entry=entry)
        except BaseException:
            if entry is not None:
                entry.close()
            raise

    def _feed(self, request: StreamRequest, voice: Voice, params: SynthesisParams, short_first: bool) -> TextFeed:
        """Text → pieces (normalisation, SSML, pauses); SSML errors are bad_request (text.ssml).
        ``short_first``: cut a short first chunk (``text.chunking.FIRST_CHUNK_BYTES``)."""
        if not request.final and is_ssml(request.text):
            raise ServiceError("bad_request", "SSML needs the whole document at once (final: true)", param="input")
        if len(request.lang) > 16:
            raise ServiceError("bad_request", "lang must be a language code like 'en' or 'zh'", param="lang")
        engine = self.runtime.engine
        front = PieceMaker(normalize=request.normalize, lang=request.lang,
                           max_spoken_chars=self.settings.spoken_chars_limit,
                           first_chunk_bytes=FIRST_CHUNK_BYTES if short_first else None)
        try:
            return TextFeed.open(request.text, request.final,
                                 lambda rate: engine.chunk_limit(voice, chunk_speed(params.speed, rate)), front)
        except SSMLError as exc:  # the parser's message says what is wrong with the document
            raise ServiceError("bad_request", str(exc), param="input", detail="invalid_input") from None

    def _params(self, request: StreamRequest) -> SynthesisParams:
        try:
            return SynthesisParams.build(request.synthesis, self.settings.default_nfe_steps)
        except ParameterRangeError as exc:
            raise ServiceError("bad_request", str(exc), param=exc.param, detail=f"invalid_{exc.param}") from None

    def _voice(self, voice: str | Voice) -> Voice:
        if isinstance(voice, Voice):
            return voice
        voices = self.runtime.voices
        found = voices.get(voice)  # a real voice wins over an alias of the same name
        target = self.aliases.target(voice) if found is None else None
        if target is not None:
            found = voices.get(target)
            if found is None:
                raise ServiceError("unknown_voice", f"voice {voice!r} is an alias of {target!r}, which does not "
                                   "exist; see GET /v1/voices", param="voice", detail="voice_not_found")
        if found is None:
            raise ServiceError("unknown_voice", f"no voice {voice!r}; see GET /v1/voices", param="voice",
                               detail="voice_not_found")
        return found

    def _check_speakable(self, item: SynthesisItem) -> None:
        try:
            self.runtime.engine.validate(item)
        except (EngineError, InvalidTextError) as exc:  # nothing speakable: text.errors, not the engine's
            raise ServiceError("bad_request", str(exc), param="input", detail="invalid_input") from None
