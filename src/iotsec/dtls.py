"""A DTLS 1.2 server on one UDP socket (OpenSSL through pyOpenSSL, memory BIOs).

Every peer address gets its own ``SSL.Connection`` whose records go in and out through
memory BIOs, so one socket serves every peer. What a peer costs is bounded:

- No state before a cookie round trip: a ClientHello is answered by ``DTLSv1_listen`` with
  a HelloVerifyRequest carrying an HMAC of the peer's address (RFC 6347 4.2.1) from a fresh
  connection that is then dropped. Only a ClientHello that returns the cookie creates a
  peer, so a spoofed source address cannot make the server keep anything.
- At most ``max_peers`` peers at once; beyond that new peers are not answered.
- A handshake that is not done within ``handshake_timeout`` seconds is dropped, and an
  established peer silent for ``idle_timeout`` seconds is evicted.
- Handshake flights are retransmitted on OpenSSL's DTLS timer (``DTLSv1_get_timeout``,
  ``DTLSv1_handle_timeout``).

A client certificate is required and verified by OpenSSL against the given trust anchors
(``VERIFY_PEER | VERIFY_FAIL_IF_NO_PEER_CERT``); what the application decides about it
(revocation, the device's state) is the handler's ``established`` answer. Everything runs
on the thread that calls :meth:`DtlsServer.serve`; other threads hand work to it with
:meth:`DtlsServer.call_soon`. Other connections can be driven by the same loop
(:class:`IoSource`, :meth:`DtlsServer.add_source`): their socket is in the same ``select``,
and what they queued while a batch of datagrams was handled is written after the batch's
answers went out, with no other thread woken.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
import select
import socket
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iotsec.coap.datagrams import pack_records

with warnings.catch_warnings():
    # pyOpenSSL's crypto module names DSA types, which cryptography marks deprecated.
    warnings.filterwarnings("ignore", message=".*DSA.*")
    from OpenSSL import SSL, crypto

__all__ = ["CIPHERS", "DtlsLimits", "DtlsServer", "IoSource", "Peer", "PeerHandler",
           "server_context"]

log = logging.getLogger(__name__)

#: ECDHE with ECDSA only (the fleet's certificates are P-256): AEAD suites, and AES-CCM-8
#: which RFC 7252 9.1.3.3 names for constrained CoAP devices.
CIPHERS = (b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
           b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-CCM")
_DTLS1_2_VERSION = 0xFEFD
_MAX_DATAGRAM = 2048
#: Datagrams read in one turn of the serving loop at most, before the other sources (the
#: MQTT bridge: its writes, and the acknowledgements that free its in-flight window),
#: the queued calls and the timers get their turn.
_BATCH = 64


@dataclass(frozen=True, slots=True)
class DtlsLimits:
    max_peers: int = 1000
    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0
    #: Largest datagram sent (records are packed up to it; handshake messages fragmented).
    mtu: int = 1200


@dataclass(eq=False)
class Peer:
    """One peer address and its DTLS connection."""

    address: tuple[str, int]
    conn: SSL.Connection
    created: float
    last_seen: float
    established: bool = False
    #: Set by the handler: close the session once the replies just returned are sent.
    closing: bool = False
    certificate: x509.Certificate | None = None
    #: The application's state for this peer.
    state: dict[str, Any] = field(default_factory=dict)


class PeerHandler(Protocol):
    def established(self, peer: Peer) -> bool:
        """The handshake is done: keep the peer (True) or close it (False)."""

    def received(self, peer: Peer, data: bytes) -> Sequence[bytes]:
        """One decrypted datagram; returns the datagrams to send back."""

    def closed(self, peer: Peer) -> None:
        """The peer is gone (closed, evicted, refused)."""


class IoSource(Protocol):
    """Another connection driven by the serving thread's loop (see :meth:`DtlsServer.serve`)."""

    def attach(self, wake: Callable[[], None]) -> None:
        """Called once on the serving thread before it serves; ``wake`` (any thread) makes
        the loop look at the source again (something was queued from another thread)."""

    def fileno(self) -> int | None:
        """The socket to wait on for reading, or None while there is none."""

    def want_write(self) -> bool:
        """Something is queued to be written."""

    def readable(self) -> None:
        """The socket is readable: read what is there (not blocking)."""

    def flush(self) -> None:
        """Write what is queued, as much as the socket takes (not blocking)."""

    def tick(self, now: float) -> None:
        """Timers (keep-alives, reconnection); called at least every half second."""


def server_context(chain_file: Path, key_file: Path, key_password: bytes,
                   trust: Sequence[x509.Certificate], cookie_secret: bytes) -> SSL.Context:
    """A DTLS 1.2 server context: the server's chain and key, client certificates required
    and verified against ``trust``, cookies bound to the peer's address."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*DSA.*")  # see the import above
        return _server_context(chain_file, key_file, key_password, trust, cookie_secret)


def _server_context(chain_file: Path, key_file: Path, key_password: bytes,
                    trust: Sequence[x509.Certificate], cookie_secret: bytes) -> SSL.Context:
    ctx = SSL.Context(SSL.DTLS_SERVER_METHOD)
    ctx.set_min_proto_version(_DTLS1_2_VERSION)
    ctx.set_cipher_list(CIPHERS)
    # The MTU is set per connection (a memory BIO cannot be asked for it).
    ctx.set_options(SSL.OP_NO_QUERY_MTU)
    ctx.use_certificate_chain_file(str(chain_file))
    key = serialization.load_pem_private_key(key_file.read_bytes(), key_password)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("the DTLS server key must be an EC key")
    ctx.use_privatekey(key)
    ctx.check_privatekey()
    store = ctx.get_cert_store()
    assert store is not None
    for cert in trust:
        store.add_cert(crypto.X509.from_cryptography(cert))
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                   lambda _c, _x, _e, _d, ok: bool(ok))
    ctx.set_session_id(b"iotsec-coap")

    def cookie(conn: SSL.Connection) -> bytes:
        return hmac.new(cookie_secret, bytes(conn.get_app_data()), hashlib.sha256).digest()[:16]

    ctx.set_cookie_generate_callback(cookie)
    ctx.set_cookie_verify_callback(lambda conn, got: hmac.compare_digest(cookie(conn), got))
    return ctx


class DtlsServer:
    """The DTLS endpoint: call :meth:`serve` on one thread until ``stop`` is set."""

    def __init__(self, sock: socket.socket, ctx: SSL.Context, handler: PeerHandler,
                 limits: DtlsLimits | None = None) -> None:
        self.sock = sock
        self.ctx = ctx
        self.handler = handler
        self.limits = limits or DtlsLimits()
        self.peers: dict[tuple[str, int], Peer] = {}
        self._calls: deque[Callable[[], None]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sources: list[IoSource] = []
        self._serving: int | None = None
        self.counts = {"cookies": 0, "handshakes": 0, "refused": 0, "full": 0, "dropped": 0}
        sock.setblocking(False)

    @staticmethod
    def new_cookie_secret() -> bytes:
        return secrets.token_bytes(32)

    def add_source(self, source: IoSource) -> None:
        """Drive ``source`` from the serving loop (before :meth:`serve`)."""
        self._sources.append(source)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the serving thread (from any thread)."""
        self._calls.append(fn)
        if threading.get_ident() != self._serving:  # the loop runs the calls before waiting
            self.wake()

    def wake(self) -> None:
        """Make the serving loop return from its wait (any thread)."""
        with contextlib.suppress(BlockingIOError):
            self._wake_w.send(b"\0")

    def send(self, peer: Peer, data: bytes) -> None:
        """Encrypt and send one datagram to an established peer (serving thread only)."""
        if self.peers.get(peer.address) is not peer or not peer.established:
            return
        try:
            peer.conn.send(data)
        except SSL.Error:
            self._drop(peer)
            return
        self._flush(peer.conn, peer.address)

    def close_peer(self, peer: Peer) -> None:
        """Send close_notify and forget the peer (serving thread only)."""
        if self.peers.get(peer.address) is not peer:
            return
        with contextlib.suppress(SSL.Error):
            peer.conn.shutdown()
        self._flush(peer.conn, peer.address)
        self._drop(peer)

    def serve(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set. Each turn: the datagrams waiting (a batch, each
        answered as it is handled), the sources' input, the queued calls, then what the
        sources queued meanwhile (a publish is written after the answer went out)."""
        self._serving = threading.get_ident()
        for source in self._sources:
            source.attach(self.wake)
        sources = self._sources
        try:
            while not stop.is_set():
                rlist: list[Any] = [self.sock, self._wake_r]
                wlist: list[int] = []
                for source in sources:
                    fd = source.fileno()
                    if fd is not None:
                        rlist.append(fd)
                        if source.want_write():
                            wlist.append(fd)
                wait = 0.0 if self._calls else self._wait()
                ready, _, _ = select.select(rlist, wlist, [], wait)
                if self.sock in ready:
                    self._read_socket()
                if self._wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        self._wake_r.recv(4096)
                for source in sources:
                    fd = source.fileno()
                    if fd is not None and fd in ready:
                        source.readable()
                while self._calls:
                    self._calls.popleft()()
                now = time.monotonic()
                for source in sources:
                    if source.want_write():
                        source.flush()
                    source.tick(now)
                self._timers(now)
        finally:
            self._serving = None
            for peer in list(self.peers.values()):
                self.close_peer(peer)
            self._wake_r.close()
            self._wake_w.close()

    def _wait(self) -> float:
        wait = 0.5
        for peer in self.peers.values():
            if not peer.established:
                timer = peer.conn.DTLSv1_get_timeout()
                if timer is not None:
                    wait = min(wait, max(float(timer), 0.0))
        return wait

    def _read_socket(self) -> None:
        for _ in range(_BATCH):  # then let the sources, queued calls and timers run
            try:
                data, address = self.sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP unreachable reported on the socket: ignore
                log.debug("recvfrom: %s", exc)
                continue
            key = (str(address[0]), int(address[1]))
            peer = self.peers.get(key)
            if peer is None:
                self._new_peer(key, data)
            else:
                self._datagram(peer, data)

    def _flush(self, conn: SSL.Connection, address: tuple[str, int]) -> None:
        out = b""
        while True:
            try:
                chunk = conn.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            out += chunk
        for datagram in pack_records(out, self.limits.mtu):
            self._sendto(datagram, address)

    def _sendto(self, datagram: bytes, address: tuple[str, int]) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendto(datagram, address)

    def _new_peer(self, address: tuple[str, int], data: bytes) -> None:
        conn = SSL.Connection(self.ctx, None)
        conn.set_app_data(f"{address[0]}|{address[1]}".encode())
        conn.set_ciphertext_mtu(self.limits.mtu)
        try:
            conn.bio_write(data)
            conn.DTLSv1_listen()
        except SSL.WantReadError:
            # A ClientHello without the right cookie: answer it and keep nothing.
            self.counts["cookies"] += 1
            self._flush(conn, address)
            return
        except SSL.Error:
            return
        if len(self.peers) >= self.limits.max_peers:
            self.counts["full"] += 1
            return
        now = time.monotonic()
        peer = Peer(address, conn, now, now)
        self.peers[address] = peer
        self._handshake(peer)

    def _handshake(self, peer: Peer) -> None:
        try:
            peer.conn.do_handshake()
        except SSL.WantReadError:
            self._flush(peer.conn, peer.address)
            return
        except SSL.Error as exc:
            log.debug("DTLS handshake with %s failed: %s", peer.address, exc)
            self.counts["refused"] += 1
            self._flush(peer.conn, peer.address)  # the alert
            self._drop(peer)
            return
        self._flush(peer.conn, peer.address)
        cert = peer.conn.get_peer_certificate()
        peer.certificate = cert.to_cryptography() if cert is not None else None
        peer.established = True
        self.counts["handshakes"] += 1
        if peer.certificate is None or not self.handler.established(peer):
            self.counts["refused"] += 1
            self.close_peer(peer)
            return
        self._application(peer)  # records that came with the last flight

    def _datagram(self, peer: Peer, data: bytes) -> None:
        peer.last_seen = time.monotonic()
        try:
            peer.conn.bio_write(data)
        except SSL.Error:
            self._drop(peer)
            return
        if not peer.established:
            self._handshake(peer)
        else:
            self._application(peer)

    def _application(self, peer: Peer) -> None:
        while self.peers.get(peer.address) is peer:
            try:
                plain = peer.conn.recv(_MAX_DATAGRAM)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self.close_peer(peer)
                return
            except SSL.Error:
                self._drop(peer)
                return
            for reply in self.handler.received(peer, plain):
                self.send(peer, reply)
            if peer.closing:
                self.close_peer(peer)
                return
        if self.peers.get(peer.address) is peer:
            self._flush(peer.conn, peer.address)

    def _timers(self, now: float) -> None:
        for peer in list(self.peers.values()):
            if not peer.established:
                if now - peer.created > self.limits.handshake_timeout:
                    self.counts["dropped"] += 1
                    self._drop(peer)
                    continue
                timer = peer.conn.DTLSv1_get_timeout()
                if timer is not None and timer <= 0:
                    with contextlib.suppress(SSL.Error):
                        peer.conn.DTLSv1_handle_timeout()
                    self._flush(peer.conn, peer.address)
            elif now - peer.last_seen > self.limits.idle_timeout:
                self.counts["dropped"] += 1
                self.close_peer(peer)

    def _drop(self, peer: Peer) -> None:
        if self.peers.get(peer.address) is peer:
            del self.peers[peer.address]
            if peer.established:
                self.handler.closed(peer)
