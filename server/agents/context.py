"""One synthesis context of an agent protocol (a Cartesia or ElevenLabs ``context_id``): its stream on the
one request path, the pacing of its incremental text, and its audio in the client's format.

Agent frameworks send LLM output as it comes: a sentence at a time (Pipecat, LiveKit) or token by token
(SDK users). Text becomes speakable at a sentence end, on a flush, at the end of input, or after
``buffer_delay_s`` without new text (Cartesia's ``max_buffer_delay_ms``): a slow LLM still gets audio.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

from server.agents.formats import AudioOutput
from server.core.events import Event
from server.core.service import Service, StreamRequest
from server.core.stream import Stream

_STOP = re.compile(r"(?<!\d)[.!?;。！？；…]['\")\]]*\s*$")
"""Text that ends a sentence when it ends a message: pipecat sends whole sentences without a trailing
space. A digit before the stop may be "3." of "3.5" still to come: wait for more."""

EventHandler = Callable[["AgentContext", Event], Awaitable[None]]


class AgentContext:
    """Owns one stream; its events go to ``handler`` (the protocol's encoder) with this context."""

    def __init__(self, context_id: str, output: AudioOutput, handler: EventHandler,
                 buffer_delay_s: float | None = None) -> None:
        self.id = context_id
        self.output = output
        self.handler = handler
        self.buffer_delay_s = buffer_delay_s
        self.stream: Stream | None = None
        self.task: asyncio.Task[None] | None = None
        self.cancelled = False
        self.samples_sent = 0
        """Samples at the engine's rate whose audio went to the client."""
        self._timer: asyncio.TimerHandle | None = None

    def open(self, service: Service, request: StreamRequest, transport: str) -> None:
        """Validate and start (raises ``ServiceError``, counted by the service)."""
        self.stream = service.open(request, transport, self)
        self.task = service.start(self.stream)

    @property
    def sample_rate(self) -> int:
        assert self.stream is not None
        return self.stream.engine.sample_rate

    @property
    def ended(self) -> bool:
        return self.stream is None or self.stream.feed.ended

    @property
    def done(self) -> bool:
        return self.task is None or self.task.done()

    async def emit(self, stream: Stream, event: Event) -> None:
        if not self.cancelled:
            await self.handler(self, event)

    def append(self, text: str) -> None:
        assert self.stream is not None
        if not text:
            return
        self.stream.feed.append(text)
        if _STOP.search(text) or self.buffer_delay_s == 0:
            self.flush()
        elif self.buffer_delay_s is not None:
            self._arm()

    def flush(self) -> None:
        self._disarm()
        if self.stream is not None and not self.stream.feed.ended:
            self.stream.feed.flush()

    def end(self) -> None:
        self._disarm()
        if self.stream is not None and not self.stream.feed.ended:
            self.stream.feed.end()

    def cancel(self, outcome: str = "cancelled") -> None:
        """Stop now: queued chunks leave the batcher, nothing more is sent for this context. ``outcome``
        is what the request counts as (``cancelled``, or the error code that ended it)."""
        self._disarm()
        self.cancelled = True
        if self.stream is not None:
            self.stream.cancel(outcome)
        if self.task is not None:
            self.task.cancel()

    def _arm(self) -> None:
        self._disarm()
        assert self.buffer_delay_s is not None
        self._timer = asyncio.get_running_loop().call_later(self.buffer_delay_s, self.flush)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def nonspace(text: str) -> int:
    """Characters that are not whitespace: the text feed keeps exactly these when it cuts chunks."""
    return sum(1 for c in text if not c.isspace())
