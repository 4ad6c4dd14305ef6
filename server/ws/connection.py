"""One WebSocket client: its open streams (many ids multiplexed), the messages it sends, and the sink that
turns stream events into this protocol's JSON messages and binary frames."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import web

from server.core.errors import ServiceError
from server.core.events import AudioChunk, ChunkMarks, Event, StreamEnd, StreamFailed
from server.core.state import AppState
from server.core.stream import Stream
from server.ws.protocol import (
    FRAME_HEADER,
    Append,
    AudioEnd,
    AudioStart,
    Cancel,
    ClientMessage,
    End,
    ErrorMessage,
    Flush,
    Marks,
    Synthesize,
    parse_client_message,
)

log = logging.getLogger(__name__)


class Connection:
    """One client socket and its open streams; the streams' sink."""

    def __init__(self, ws: web.WebSocketResponse, state: AppState, client: str = "") -> None:
        self.ws = ws
        self.state = state
        self.client = client
        """The peer's address, for the per-address socket cap."""
        self.streams: dict[str, Stream] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._numbers = 0
        self._send_lock = asyncio.Lock()
        self.last_activity = time.monotonic()
        """When synthesis last happened here (audio sent, text accepted): only that keeps a socket open."""

    # -- sending -------------------------------------------------------------------------------------

    async def emit(self, stream: Stream, event: Event) -> None:
        if isinstance(event, AudioChunk):
            await self._send(FRAME_HEADER.pack(stream.number, event.seq) + event.pcm)
        elif isinstance(event, ChunkMarks):
            await self._send(Marks(stream.id, stream.number, event).to_json())
        elif isinstance(event, StreamEnd):
            await self._send(AudioEnd(stream.id, stream.number, event).to_json())
        elif isinstance(event, StreamFailed):
            await self._send(ErrorMessage.from_error(event.error).to_json())

    async def _send(self, data: str | bytes) -> None:
        if self.ws.closed:
            raise ConnectionResetError("the WebSocket is closed")
        async with self._send_lock:
            if isinstance(data, bytes):
                await self.ws.send_bytes(data)
            else:
                await self.ws.send_str(data)
        self.last_activity = time.monotonic()

    async def send_error(self, error: ServiceError) -> None:
        with contextlib.suppress(ConnectionError):
            await self._send(ErrorMessage.from_error(error).to_json())

    # -- messages ------------------------------------------------------------------------------------

    async def handle_text(self, raw: str) -> None:
        message: ClientMessage | None = None
        try:
            message = parse_client_message(raw)
            await self._dispatch(message)
            if not isinstance(message, Cancel):  # a cancel every few seconds must not keep a socket alive
                self.last_activity = time.monotonic()
        except ServiceError as error:
            # An error about an open stream's text ends it: refusing an append but playing on would drop
            # words. A refused synthesize never touches the open stream of the same id (docs/protocol.md).
            synthesize = isinstance(message, Synthesize) or getattr(error, "message_type", None) == "synthesize"
            stream = self.streams.get(error.request_id or "")
            if stream is not None and not synthesize:
                self._cancel(stream.id, outcome=error.code)
            elif synthesize:
                self.state.service.refused("ws", error)  # a refused request still counts as a request
                if stream is not None:  # id null, as for any reuse of an open id: the open stream goes on
                    error = error.for_request(None)
            await self.send_error(error)

    async def _dispatch(self, message: ClientMessage) -> None:
        if isinstance(message, Synthesize):
            await self._open(message)
            return
        if isinstance(message, Cancel):
            self._cancel(message.id)
            return
        stream = self.streams.get(message.id)
        if stream is None:
            raise ServiceError("bad_request", f"no open stream with id {message.id!r}", message.id)
        if stream.feed.ended:
            raise ServiceError("bad_request", f"stream {message.id!r} takes no more text (final or ended)",
                               message.id)
        if isinstance(message, Append):
            self._check_append(message, stream)
            stream.feed.append(message.text)
        elif isinstance(message, Flush):
            stream.feed.flush()
        elif isinstance(message, End):
            stream.feed.end()

    def _check_append(self, message: Append, stream: Stream) -> None:
        settings = self.state.settings
        if len(message.text) > settings.max_append_chars:
            raise ServiceError("text_too_long", f"append text is {len(message.text)} characters; the limit is "
                               f"{settings.max_append_chars}", message.id)
        if stream.feed.total_chars + len(message.text) > settings.max_text_chars:
            raise ServiceError("text_too_long", f"stream text would exceed {settings.max_text_chars} characters",
                               message.id)

    async def _open(self, message: Synthesize) -> None:
        rid, service = message.id, self.state.service
        if rid in self.streams:
            # No id on this error: the open stream of that id is not affected, and nothing is counted.
            raise ServiceError("bad_request", f"id {rid!r} is already open on this socket", None)
        limit = self.state.settings.max_streams_per_socket
        if len(self.streams) >= limit:
            raise ServiceError("too_many_streams", f"at most {limit} streams may be open on one socket", rid)
        request = message.request
        await service.load_voice(request.voice)
        try:
            stream = service.open(request, "ws", self, number=self._numbers + 1)
        except ServiceError as error:
            await self.send_error(error)  # already counted by the service
            return
        self._numbers += 1
        await self._send(AudioStart(id=rid, stream=stream.number, sample_rate=stream.engine.sample_rate,
                                    seed=stream.params.seed).to_json())
        self.streams[rid] = stream
        self.tasks[rid] = service.start(stream)
        self.tasks[rid].add_done_callback(lambda _t: self._closed(rid, stream))

    def _cancel(self, rid: str, outcome: str = "cancelled") -> None:
        """Cancel a stream: its queued chunks leave the queue now and nothing more is sent for it.
        Cancelling an id that is not open (e.g. just finished) is not an error."""
        stream = self.streams.get(rid)
        if stream is not None:
            stream.cancel(outcome)
            self.tasks[rid].cancel()
            self._closed(rid, stream)

    def _closed(self, rid: str, stream: Stream) -> None:
        if self.streams.get(rid) is stream:
            del self.streams[rid]
            self.tasks.pop(rid, None)

    def cancel_all(self) -> None:
        for rid in list(self.streams):
            self._cancel(rid)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())
