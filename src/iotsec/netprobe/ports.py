"""The TCP connect scanner: asyncio, bounded concurrency, a rate limit, short timeouts.

Each probe is a non-blocking ``connect()``. Rather than one coroutine and one event-loop
registration per port (which costs more Python work per port than the kernel spends on the
whole handshake), the scanner keeps its sockets in a private ``epoll`` set whose single
descriptor is registered with the running loop: one wake-up collects every connection
that finished since the last one. Where ``epoll`` is missing the same logic runs on the
loop's own writer callbacks.

A port is *open* when the handshake completes, *closed* on a reset, *filtered* when
nothing answers within the timeout. On the scanning host's own addresses TCP allows a
socket to connect to itself (or two of the scanner's sockets to connect to each other,
"simultaneous open"); those results are checked again one by one before being reported.
"""

from __future__ import annotations

import _socket
import asyncio
import collections
import errno
import itertools
import select
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator

from iotsec.scan.model import PortScanConfig, PortScanResult

__all__ = ["tcp_connect_scan"]


_CLOSED = {errno.ECONNREFUSED, errno.ECONNRESET}
#: Connections started per event-loop callback at most: a few milliseconds of work, so
#: that what else runs on the loop meanwhile (the services found open so far being
#: identified) is not held up.
BATCH = 256
_AF4, _AF6 = socket.AF_INET, socket.AF_INET6
_STREAM = socket.SOCK_STREAM | getattr(socket, "SOCK_NONBLOCK", 0)


def _new_socket(family: int, kind: int) -> _socket.socket:
    sock = _socket.socket(family, kind)
    sock.setblocking(False)
    return sock


# Sockets for the scan are the C-level objects: socket.socket adds a Python __init__ and
# bookkeeping that cost more than the connect itself on a fast path of 65,535 ports.
if getattr(socket, "SOCK_NONBLOCK", 0):
    _new_socket = _socket.socket  # type: ignore[assignment]
_RETRY_LATER = {errno.EADDRNOTAVAIL, errno.EAGAIN, errno.ENOBUFS, errno.EMFILE, errno.ENFILE}
#: Linux returns a socket whose connection was refused to the unconnected state (the error
#: read by a second connect()), so that it can connect again; other systems do not promise
#: it, and there every port gets a socket of its own.
_REUSE = sys.platform.startswith("linux")


def _fd_budget(wanted: int) -> int:
    """Concurrency that fits the process's descriptor limit (raising the soft limit to the
    hard one when that helps), leaving room for everything else the process holds."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted + 256:
            target = hard if hard == resource.RLIM_INFINITY else min(hard, wanted + 256)
            if target > soft:
                try:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                    soft = target
                except (ValueError, OSError):
                    pass
        if soft == resource.RLIM_INFINITY:
            return wanted
        return max(1, min(wanted, soft - 256))
    except ImportError:  # pragma: no cover - not POSIX
        return min(wanted, 256)


class _Scanner:
    def __init__(self, items: Iterator[tuple[str, int]], config: PortScanConfig,
                 loop: asyncio.AbstractEventLoop,
                 on_open: Callable[[str, int], None] | None = None) -> None:
        self.items = items
        self.on_open = on_open
        self.retry: collections.deque[tuple[str, int]] = collections.deque()
        self.config = config
        self.loop = loop
        self.limit = _fd_budget(config.concurrency)
        self.result = PortScanResult()
        # fd -> (socket, address, port, sequence number)
        self.inflight: dict[int, tuple[_socket.socket, str, int, int]] = {}
        self.deadlines: collections.deque[tuple[float, int, int]] = collections.deque()
        self.suspect: list[tuple[str, int]] = []
        self.seq = 0
        self.exhausted = False
        self.done: asyncio.Future[None] = loop.create_future()
        # The bucket holds a tenth of a second of attempts: the largest burst allowed.
        self.burst = max(config.rate / 10, 1.0)
        self.tokens = self.burst if config.rate else 0.0
        self.last_refill = loop.time()
        self.wake_at: float | None = None
        self.epoll = select.epoll() if hasattr(select, "epoll") else None
        #: By address family, a socket whose last connection was refused, for the next.
        self.spare: dict[int, _socket.socket] = {}
        self.paused_until = 0.0

    # -- starting connections ------------------------------------------------------

    def _next_item(self) -> tuple[str, int] | None:
        if self.retry:
            return self.retry.popleft()
        if self.exhausted:
            return None
        item = next(self.items, None)
        if item is None:
            self.exhausted = True
        return item

    def _tokens(self, wanted: int) -> int:
        """How many connections the rate limit lets start now (at most ``wanted``); the
        caller takes the ones it used from ``self.tokens``."""
        rate = self.config.rate
        if not rate:
            return wanted
        now = self.loop.time()
        self.tokens = min(self.burst, self.tokens + (now - self.last_refill) * rate)
        self.last_refill = now
        return min(wanted, int(self.tokens))

    def _schedule(self, delay: float) -> None:
        """Run the timeout sweep and refill ``delay`` seconds from now (or sooner)."""
        at = self.loop.time() + delay
        if self.wake_at is None or at < self.wake_at:
            self.wake_at = at
            self.loop.call_at(at, self._wake)

    def _wake(self) -> None:
        self.wake_at = None
        self.sweep()
        self.fill()

    def fill(self) -> None:
        """Start connections until the concurrency or rate limit is reached (at most
        :data:`BATCH` per call, so that the loop keeps turning)."""
        if self.done.done():
            return
        loop = self.loop
        now = loop.time()
        if now < self.paused_until:
            self._schedule(self.paused_until - now)
            return
        inflight = self.inflight
        limit = self.limit
        allowed = self._tokens(BATCH)
        deadline = now + self.config.timeout
        result = self.result
        next_item = self._next_item
        new_socket = _new_socket
        spare = self.spare
        in_progress, already = errno.EINPROGRESS, errno.EALREADY
        refused = errno.ECONNREFUSED if _REUSE else None
        started = 0
        # The common case (nothing to retry) takes items straight from the iterator.
        source = (itertools.islice(self.items, allowed) if not self.retry
                  else iter(next_item, None))
        for item in source:
            address = item[0]
            family = _AF6 if ":" in address else _AF4
            sock = spare.pop(family, None)
            if sock is None:
                try:
                    sock = new_socket(family, _STREAM)
                except OSError as exc:
                    if exc.errno in _RETRY_LATER:
                        self._back_off(item)
                        break
                    raise
            started += 1
            code = sock.connect_ex(item)
            if code == in_progress:
                # On the scanning host's own addresses (and sometimes on a fast LAN) the
                # kernel has often decided before connect() returns. A second connect()
                # asks: EALREADY while the handshake is pending, 0 once it completed, the
                # error once it failed. A refusal read this way also leaves the socket
                # unconnected, ready for the next port: creating and closing a socket
                # for every port costs the kernel more than the probe itself.
                code = sock.connect_ex(item)
                if code == errno.EISCONN:
                    code = 0
                if code == already:
                    self._watch(sock, item, deadline)
                    if started >= allowed or len(inflight) >= limit:
                        break
                    continue
            if code == refused:
                result.closed += 1
                spare[family] = sock
            elif code == 0:
                self._connected(sock, address, item[1])
            else:
                sock.close()
                if code in _CLOSED:
                    result.closed += 1
                elif code in _RETRY_LATER:
                    started -= 1
                    self._back_off(item)
                    break
                else:
                    result.unreachable += 1
            if started >= allowed or len(inflight) >= limit:
                break
        else:
            if not self.retry and started < allowed:
                self.exhausted = True
        result.attempted += started
        if self.config.rate:
            self.tokens -= started
        if self.retry:
            self._schedule(max(0.0, self.paused_until - loop.time()))
        elif not self.exhausted and len(inflight) < limit:
            # More to start: now if this call stopped at its batch size, else when the
            # rate limit has a token again.
            if started >= allowed and allowed == BATCH:
                loop.call_soon(self.fill)
            else:
                self._schedule(1.0 / self.config.rate if self.config.rate else 0.0)
        if inflight:
            # Keep the timeout sweep running while connections are pending.
            self._schedule(min(0.05, self.config.timeout / 4))
        elif self.exhausted and not self.retry:
            self._finish()

    def _watch(self, sock: _socket.socket, item: tuple[str, int], deadline: float) -> None:
        fd = sock.fileno()
        self.seq += 1
        self.inflight[fd] = (sock, item[0], item[1], self.seq)
        self.deadlines.append((deadline, fd, self.seq))
        if self.epoll is not None:
            self.epoll.register(fd, select.EPOLLOUT)
        else:
            self.loop.add_writer(fd, self._on_writable, fd)

    def _back_off(self, item: tuple[str, int]) -> None:
        """Out of local ports or descriptors: retry this probe once some have drained."""
        self.retry.append(item)
        self.paused_until = self.loop.time() + 0.01

    # -- finishing connections -----------------------------------------------------

    def _connected(self, sock: _socket.socket, address: str, port: int) -> None:
        """``sock`` completed its handshake with ``address``: the port is open, unless the
        socket may have reached itself or another of the scan's sockets (a peer on this
        host), which is checked again later."""
        try:
            local = sock.getsockname()[0] == sock.getpeername()[0]
        except OSError:  # reset already: nothing listens there after all
            self.result.closed += 1
        else:
            self._opened(address, port, local=local)
        finally:
            sock.close()

    def _opened(self, address: str, port: int, *, local: bool) -> None:
        if self.on_open is not None:
            self.on_open(address, port)
        if local:
            self.suspect.append((address, port))
        else:
            self.result.open.append((address, port))

    def _complete(self, fd: int, failed: bool) -> None:
        entry = self.inflight.pop(fd, None)
        if entry is None:
            return
        sock, address, port, _seq = entry
        if self.epoll is None:
            self.loop.remove_writer(fd)
        try:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if failed else 0
            if err == 0:
                try:
                    local = sock.getsockname()[0] == sock.getpeername()[0]
                except OSError:
                    err = errno.ECONNRESET
            if err == 0:
                self._opened(address, port, local=local)
            elif err in _CLOSED:
                self.result.closed += 1
            elif err == errno.ETIMEDOUT:
                self.result.filtered += 1
            else:
                self.result.unreachable += 1
        finally:
            sock.close()  # closing also removes it from the epoll set

    def _on_epoll(self) -> None:
        assert self.epoll is not None
        bad = select.EPOLLERR | select.EPOLLHUP
        for fd, events in self.epoll.poll(0, 4096):
            self._complete(fd, failed=bool(events & bad))
        self.fill()

    def _on_writable(self, fd: int) -> None:
        self._complete(fd, failed=True)
        self.fill()

    def sweep(self) -> None:
        now = self.loop.time()
        while self.deadlines and self.deadlines[0][0] <= now:
            _deadline, fd, seq = self.deadlines.popleft()
            entry = self.inflight.get(fd)
            if entry is None or entry[3] != seq:
                continue
            del self.inflight[fd]
            if self.epoll is None:
                self.loop.remove_writer(fd)
            entry[0].close()
            self.result.filtered += 1
        if not self.inflight and self.exhausted and not self.retry:
            self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    async def run(self) -> PortScanResult:
        start = time.perf_counter()
        if self.epoll is not None:
            self.loop.add_reader(self.epoll.fileno(), self._on_epoll)
        try:
            self.fill()
            await self.done
        finally:
            if self.epoll is not None:
                self.loop.remove_reader(self.epoll.fileno())
            for sock, *_rest in self.inflight.values():
                if self.epoll is None:
                    self.loop.remove_writer(sock.fileno())
                sock.close()
            self.inflight.clear()
            for sock in self.spare.values():
                sock.close()
            self.spare.clear()
            if self.epoll is not None:
                self.epoll.close()
        for address, port in self.suspect:
            if await _confirm_open(address, port, self.config.timeout):
                self.result.open.append((address, port))
            else:
                self.result.closed += 1
        self.result.open.sort(key=lambda item: (item[0], item[1]))
        self.result.seconds = time.perf_counter() - start
        return self.result


async def _confirm_open(address: str, port: int, timeout: float) -> bool:
    """Connect once more, alone, and make sure the peer is not this very socket."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (address, port)), timeout)
        return bool(sock.getsockname()[:2] != sock.getpeername()[:2])
    except (OSError, TimeoutError):
        return False
    finally:
        sock.close()


async def tcp_connect_scan(items: Iterable[tuple[str, int]],
                           config: PortScanConfig | None = None, *,
                           on_open: Callable[[str, int], None] | None = None
                           ) -> PortScanResult:
    """Connect to every ``(address, port)`` and report the open ones (sorted), with counts
    of closed, filtered and unreachable ports. ``items`` is consumed lazily.

    ``on_open(address, port)`` is called (on the loop) as soon as a connection completes,
    before the scan ends: a port on the scanning host's own addresses that it names may
    still prove not to be open (see the module's notes); the result is what counts."""
    scanner = _Scanner(iter(items), config or PortScanConfig(), asyncio.get_running_loop(),
                       on_open)
    return await scanner.run()
