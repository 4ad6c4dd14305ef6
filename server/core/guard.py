"""The listening socket, guarded: bound before the model loads (an occupied port fails at once), and a
cap on open HTTP connections that evicts idle or half-open ones first, so a slowloris crowd can never
starve ``/healthz`` or a real client of file descriptors.

aiohttp's own keep-alive timer (armed when a connection opens and after each response, *not* moved by
partial header bytes) is the header timeout: a connection that has not sent a whole request by then is
closed. This module adds what aiohttp lacks: the cap, and an fd budget checked at start.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            b"Connection: close\r\nContent-Length: 91\r\n\r\n"
            b'{"error":{"message":"too many connections","type":"server_error","code":"too_many_connections"}}')
_REFUSAL = _REFUSAL.replace(b"Content-Length: 91", b"Content-Length: %d" % len(_REFUSAL.split(b"\r\n\r\n", 1)[1]))


def bind(host: str, port: int) -> socket.socket:
    """Bind (not yet listen) the server socket. Raises OSError naming the address when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


BACKLOG = 64
"""Listen backlog, which is also how many connections asyncio accepts in one go. Sockets it accepts get
our protocol factory (which evicts or refuses) only in the next loop iteration, and an evicted socket is
closed one iteration later still: a few bursts' worth of descriptors must stay spare."""


def fd_budget(max_connections: int) -> int:
    """Raise the soft fd limit to the hard one, and keep the connection cap well inside it: model files, log
    handles and the process's own sockets need descriptors, and one accept burst (``BACKLOG``) lands before
    the cap can act. Running out matters beyond the refused client: on EMFILE, CPython 3.11's accept loop
    logs a traceback and schedules another retry loop per failed accept, so the errors multiply."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    usable = max(16, soft - 64 - 3 * BACKLOG)
    if max_connections > usable:
        log.warning("connection cap lowered to fit the fd limit",
                    extra={"max_connections": max_connections, "fd_limit": soft, "cap": usable})
    return min(max_connections, usable)


class _OncePer(logging.Filter):
    """Let a flood of one asyncio error through once per ``interval`` (with a count), not once per event."""

    def __init__(self, fragment: str, interval: float = 10.0) -> None:
        super().__init__()
        self.fragment, self.interval = fragment, interval
        self._last, self._dropped = 0.0, 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.fragment not in str(record.msg):
            return True
        now = time.monotonic()
        if now - self._last < self.interval:
            self._dropped += 1
            return False
        if self._dropped:
            record.msg = f"{record.msg} ({self._dropped} more since the last report)"
        self._last, self._dropped = now, 0
        record.exc_info = None  # the traceback is always the same accept(); the line says what happened
        return True


_accept_errors = _OncePer("socket.accept() out of system resource")


class _Refuse(asyncio.Protocol):
    """Answers a connection over the cap with a JSON 503 and closes it, without reading it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSAL)
        transport.close()


class _Counted(asyncio.Protocol):
    """aiohttp's handler for one connection, counted from the moment it is created. (aiohttp registers a
    connection only in ``connection_made``, a loop iteration after the factory ran, so a burst of accepts
    would all see the old count and slip past the cap.)"""

    def __init__(self, site: GuardedSite, handler: RequestHandler) -> None:
        self.site, self.handler = site, handler
        self.transport: asyncio.Transport | None = None
        self._evicted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.handler.connection_made(transport)
        if self._evicted:
            transport.abort()

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> None:
        self.handler.eof_received()

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.site.live.pop(self, None)
        self.handler.connection_lost(exc)

    @property
    def busy(self) -> bool:
        """A request is being served here (a WebSocket counts while its handler runs)."""
        return getattr(self.handler, "_current_request", None) is not None

    def evict(self) -> None:
        self._evicted = True
        self.site.live.pop(self, None)
        if self.transport is not None:
            self.transport.abort()  # release the fd now, whatever is buffered


class GuardedSite(web.BaseSite):
    """A ``SockSite`` whose protocol factory enforces the connection cap."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, max_connections: int) -> None:
        super().__init__(runner)
        self._sock = sock
        self.max_connections = max_connections
        self.live: dict[_Counted, None] = {}
        """Open connections, oldest first."""
        self.evicted = 0
        self.refused = 0
        self._last_warning = 0.0

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, sock=self._sock, backlog=BACKLOG)
        logging.getLogger("asyncio").addFilter(_accept_errors)

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        if len(self.live) >= self.max_connections and not self._evict():
            self.refused += 1
            self._warn()
            return _Refuse()
        counted = _Counted(self, server())
        self.live[counted] = None
        return counted

    def _evict(self) -> bool:
        """Close the oldest connection that is idle or still sending its headers. Returns False when every
        connection is serving a request (then the newcomer is refused instead)."""
        victim = next((c for c in self.live if not c.busy), None)
        if victim is None:
            return False
        victim.evict()
        self.evicted += 1
        self._warn()
        return True

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._last_warning > 10:  # one line per 10 s, not one per connection
            self._last_warning = now
            log.warning("connection cap reached", extra={"max_connections": self.max_connections,
                                                         "evicted": self.evicted, "refused": self.refused})
