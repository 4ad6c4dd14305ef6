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


def fd_budget(max_connections: int) -> int:
    """Raise the soft fd limit to the hard one, and keep the connection cap well inside it (model files,
    log handles and the process's own sockets need descriptors too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    usable = max(16, soft - 64)
    if max_connections > usable:
        log.warning("connection cap lowered to fit the fd limit",
                    extra={"max_connections": max_connections, "fd_limit": soft, "cap": usable})
    return min(max_connections, usable)


class _Refuse(asyncio.Protocol):
    """Answers a connection over the cap with a JSON 503 and closes it, without reading it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSAL)
        transport.close()


def _busy(handler: RequestHandler) -> bool:
    """A request is being served on this connection (a WebSocket counts while its handler runs)."""
    return getattr(handler, "_current_request", None) is not None


class GuardedSite(web.BaseSite):
    """A ``SockSite`` whose protocol factory enforces the connection cap."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, max_connections: int) -> None:
        super().__init__(runner)
        self._sock = sock
        self.max_connections = max_connections
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
        self._server = await loop.create_server(self._protocol, sock=self._sock, backlog=self._backlog)

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        connections = server.connections
        if len(connections) >= self.max_connections and not self._evict(connections):
            self.refused += 1
            self._warn()
            return _Refuse()
        return server()

    def _evict(self, connections: list[RequestHandler]) -> bool:
        """Close the oldest connection that is idle or still sending its headers. Returns False when every
        connection is serving a request (then the newcomer is refused instead)."""
        for handler in connections:  # insertion order: oldest first
            if not _busy(handler):
                handler.force_close()
                transport = handler.transport
                if transport is not None:
                    transport.abort()  # release the fd now, whatever is buffered
                self.evicted += 1
                self._warn()
                return True
        return False

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._last_warning > 10:  # one line per 10 s, not one per connection
            self._last_warning = now
            log.warning("connection cap reached", extra={"max_connections": self.max_connections,
                                                         "evicted": self.evicted, "refused": self.refused})
