"""Network edges the scanner shares: name resolution and bounded TCP conversations.

Every read here has a byte limit and a deadline: a host that sends an endless banner is cut
off at the limit, one that accepts and never answers at the deadline. Nothing waits on the
network without a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from iotsec.errors import ScanResolveError
from iotsec.scan.model import READ_LIMIT

__all__ = ["Conversation", "open_conversation", "resolve_names"]


async def _resolve_one(name: str, timeout: float) -> tuple[str, ...]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(name, None, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP),
            timeout)
    except TimeoutError:
        raise ScanResolveError(f"host name {name} did not resolve within {timeout:g} s") \
            from None
    except (socket.gaierror, UnicodeError, OSError):
        raise ScanResolveError(f"host name {name} does not resolve") from None
    out: list[str] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = str(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
            if address not in out:
                out.append(address)
    if not out:
        raise ScanResolveError(f"host name {name} has no IPv4 or IPv6 address")
    return tuple(out)


async def resolve_names(names: Iterable[str], timeout: float = 5.0,
                        concurrency: int = 32) -> dict[str, tuple[str, ...]]:
    """Resolve every name (at most ``concurrency`` at once); the first that fails raises
    :class:`ScanResolveError` naming it."""
    todo = sorted(set(names))
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str) -> tuple[str, tuple[str, ...]]:
        async with gate:
            return name, await _resolve_one(name, timeout)

    results = await asyncio.gather(*(one(n) for n in todo), return_exceptions=True)
    out: dict[str, tuple[str, ...]] = {}
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        first = failed[0]
        if isinstance(first, ScanResolveError) and len(failed) > 1:
            raise ScanResolveError(f"{first} (and {len(failed) - 1} more names do not "
                                   "resolve)", hint=first.hint)
        raise first
    for r in results:
        assert not isinstance(r, BaseException)
        out[r[0]] = r[1]
    return out


@dataclass
class Conversation:
    """One TCP (or TLS) connection to a service, with bounded reads."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    #: Everything read so far (up to the read limit).
    received: bytearray
    limit: int = READ_LIMIT
    #: Set when the service sent more than ``limit`` bytes without pause.
    overflowed: bool = False

    async def send(self, data: bytes, timeout: float) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), timeout)

    async def read(self, timeout: float, *,
                   until: Callable[[bytes], bool] | None = None) -> bytes:
        """Read what arrives within ``timeout`` seconds, stopping early once ``until``
        accepts what was read so far (across calls), the peer closes, or the limit is hit.
        Returns what this call read."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        start = len(self.received)
        while len(self.received) < self.limit:
            if until is not None and until(bytes(self.received)):
                break
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                chunk = await asyncio.wait_for(
                    self.reader.read(min(4096, self.limit - len(self.received))), left)
            except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
                break
            if not chunk:
                break
            self.received += chunk
        if len(self.received) >= self.limit:
            self.overflowed = True
        return bytes(self.received[start:])

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 0.2)


async def open_conversation(host: str, port: int, timeout: float, *,
                            tls: ssl.SSLContext | None = None,
                            server_hostname: str | None = None,
                            limit: int = READ_LIMIT) -> Conversation:
    """Connect (and complete a TLS handshake when ``tls`` is given) within ``timeout``.
    Raises ``OSError`` (including ``TimeoutError``) or ``ssl.SSLError``."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=tls,
                                server_hostname=(server_hostname or "") if tls else None,
                                ssl_handshake_timeout=timeout if tls else None,
                                limit=limit),
        timeout)
    return Conversation(reader, writer, bytearray(), limit)
