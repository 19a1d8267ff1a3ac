"""Connection deadlines and a connection cap for ``iotsec serve``.

uvicorn closes a keep-alive connection left idle after an answer, and nothing else: a
connection that never sends a request, one that sends its request headers a byte at a time,
and a TCP connection that never starts its TLS handshake (asyncio waits 60 s for it) each
hold a file descriptor for as long as their peer likes; enough of them exhaust the process's
file limit and nobody else is served. uvicorn has no setting for these, so ``iotsec serve``
brings its own pieces, given to uvicorn's ``Config``:

- :class:`GuardedHttp` (``http=``) builds the HTTP protocol of each connection, a subclass
  of uvicorn's httptools (or h11) protocol that closes a connection idle from its start
  (``timeout_keep_alive``, as uvicorn does after an answer), aborts one whose request
  headers are not complete within ``header_timeout`` of their first byte however slowly
  they trickle in, and aborts a connection beyond ``limit_concurrency`` at once.
- :class:`GuardedLoop` (``loop=``) makes the event loop, whose servers drop a TLS handshake
  (and a TLS closing handshake) that takes longer than ``handshake_timeout``.

Both are picklable values (not classes made on the fly): with ``--workers`` each serving
process is handed the options they are part of (:class:`iotsec.api.listeners.ServePlan`).
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

__all__ = ["GuardedHttp", "GuardedLoop", "H11Guarded", "HttpToolsGuarded", "raise_file_limit"]


class _Deadline:
    """A timer that aborts a connection unless it is disarmed in time."""

    __slots__ = ("_handle", "_loop", "_seconds")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self._loop = loop
        self._seconds = seconds
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, transport: asyncio.Transport) -> None:
        """Start the clock, unless it already runs: more bytes do not buy more time."""
        if self._handle is None:
            self._handle = self._loop.call_later(self._seconds, _abort, transport)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _abort(transport: asyncio.Transport) -> None:
    # Abort, not close: closing a TLS connection waits for the peer's close_notify, and a
    # peer that was too slow to send its headers would hold the descriptor a while longer.
    transport.abort()


def _over_capacity(connections: set[Any], limit: int | None,
                   transport: asyncio.Transport) -> bool:
    """Abort ``transport`` when it takes the server over its connection cap."""
    if limit is not None and len(connections) > limit:
        _abort(transport)
        return True
    return False



def _admit(protocol: HttpToolsGuarded | H11Guarded, transport: asyncio.Transport) -> None:
    """After uvicorn's ``connection_made``: abort a connection over the cap, or start its
    idle clock (idle until the first byte, like a keep-alive connection after an answer)."""
    if not _over_capacity(protocol.connections, protocol.limit_concurrency, transport):
        protocol.timeout_keep_alive_task = protocol.loop.call_later(
            protocol.timeout_keep_alive, protocol.timeout_keep_alive_handler)


def _release(protocol: HttpToolsGuarded | H11Guarded) -> None:
    """Before uvicorn's ``connection_lost``: no timer outlives its connection."""
    protocol.header_deadline.disarm()
    protocol._unset_keepalive_if_required()


class HttpToolsGuarded(HttpToolsProtocol):
    """uvicorn's httptools protocol with an idle deadline from the connection's start, a
    header deadline per request and the connection cap (see the module's documentation)."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *,
                 header_timeout: float) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_deadline = _Deadline(self.loop, header_timeout)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _admit(self, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        _release(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        # The parser saw the first byte of a request: its headers are due.
        self.header_deadline.arm(self.transport)
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.header_deadline.disarm()
        super().on_headers_complete()


class H11Guarded(H11Protocol):
    """uvicorn's h11 protocol with the deadlines and the cap of :class:`HttpToolsGuarded`."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *,
                 header_timeout: float) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_deadline = _Deadline(self.loop, header_timeout)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _admit(self, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        _release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_headers()

    def _watch_headers(self) -> None:
        # h11 has no "message begin" callback: a request has begun and its headers are
        # incomplete while the peer is between requests with bytes buffered.
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self.header_deadline.arm(self.transport)
        else:
            self.header_deadline.disarm()


@dataclass(frozen=True)
class GuardedHttp:
    """uvicorn's ``http=``: makes the protocol of each connection (httptools' parser, or
    h11's), with ``header_timeout`` seconds for a request's headers. A subclass serves its
    own subclasses of the guarded protocols by naming them in :attr:`protocols`."""

    header_timeout: float
    parser: Literal["httptools", "h11"] = "httptools"
    #: The protocol class of each parser.
    protocols: ClassVar[Mapping[str, type[HttpToolsGuarded | H11Guarded]]] = {
        "httptools": HttpToolsGuarded, "h11": H11Guarded}

    def __call__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
        return self.protocols[self.parser](config, server_state, app_state, _loop,
                                           header_timeout=self.header_timeout)


def _tls_deadlines(kwargs: dict[str, Any], seconds: float) -> dict[str, Any]:
    if kwargs.get("ssl") is not None:
        kwargs.setdefault("ssl_handshake_timeout", seconds)
        kwargs.setdefault("ssl_shutdown_timeout", seconds)
    return kwargs


class _AsyncioLoop(asyncio.SelectorEventLoop):
    def __init__(self, handshake_timeout: float) -> None:
        super().__init__()
        self.handshake_timeout = handshake_timeout

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        return await super().create_server(
            *args, **_tls_deadlines(kwargs, self.handshake_timeout))


try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency wherever it builds
    _UvLoop: type[asyncio.AbstractEventLoop] | None = None
else:
    class _UvLoopImpl(uvloop.Loop):
        def __init__(self, handshake_timeout: float) -> None:
            super().__init__()
            self.handshake_timeout = handshake_timeout

        async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
            # uvloop's stubs type its server as the abstract one; asyncio's says Server.
            return await super().create_server(  # type: ignore[return-value]
                *args, **_tls_deadlines(kwargs, self.handshake_timeout))

    _UvLoop = _UvLoopImpl


@dataclass(frozen=True)
class GuardedLoop:
    """uvicorn's ``loop=``: makes the event loop (uvloop's where it is installed, as
    uvicorn's default does), whose TLS servers drop a handshake not done within
    ``handshake_timeout`` seconds."""

    handshake_timeout: float

    def __call__(self) -> asyncio.AbstractEventLoop:
        if _UvLoop is not None:
            return _UvLoop(self.handshake_timeout)  # type: ignore[call-arg]
        return _AsyncioLoop(self.handshake_timeout)


def raise_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (serving processes
    started from it inherit it) and return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # an unlimited hard limit the kernel refuses: keep the soft one
    return soft if soft != resource.RLIM_INFINITY else 1 << 20
