"""A DTLS 1.2 client for tests that keep one session open (pyOpenSSL, memory BIOs over a
UDP socket): requests before and after a revocation, raw datagrams inside the session."""

from __future__ import annotations

import socket
import time
import warnings
from pathlib import Path

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*DSA.*")
    from OpenSSL import SSL

from iotsec.coap.message import Code, Message, MessageType, Option, parse_message


class DtlsClient:
    def __init__(self, address: tuple[str, int], cert: Path | None, key: Path | None,
                 ca: Path) -> None:
        ctx = SSL.Context(SSL.DTLS_CLIENT_METHOD)
        ctx.load_verify_locations(str(ca))
        ctx.set_verify(SSL.VERIFY_PEER, lambda _c, _x, _e, _d, ok: bool(ok))
        if cert is not None and key is not None:
            ctx.use_certificate_chain_file(str(cert))
            ctx.use_privatekey_file(str(key))
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_connect_state()
        self.conn.set_ciphertext_mtu(1200)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(address)
        self.sock.settimeout(0.2)
        self.mid = 0x100

    def _flush(self) -> None:
        while True:
            try:
                data = self.conn.bio_read(65536)
            except SSL.WantReadError:
                return
            if not data:
                return
            self.sock.send(data)

    def _pump(self, deadline: float) -> bool:
        """Read one datagram into the connection; False when none came in time."""
        try:
            self.sock.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
            data = self.sock.recv(4096)
        except (TimeoutError, ConnectionRefusedError):
            timer = self.conn.DTLSv1_get_timeout()
            if timer is not None and timer <= 0:
                self.conn.DTLSv1_handle_timeout()
                self._flush()
            return False
        self.conn.bio_write(data)
        return True

    def handshake(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.conn.do_handshake()
                self._flush()
                return
            except SSL.WantReadError:
                self._flush()
            if time.monotonic() > deadline:
                raise TimeoutError("DTLS handshake did not complete")
            self._pump(deadline)

    def send_raw(self, data: bytes) -> None:
        self.conn.send(data)
        self._flush()

    def receive(self, timeout: float = 3.0) -> bytes | None:
        """One decrypted datagram, or None (nothing came, or the session closed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.conn.recv(4096)
            except SSL.WantReadError:
                self._pump(deadline)
            except (SSL.ZeroReturnError, SSL.Error):
                return None
        return None

    def request(self, code: int, path: str, payload: bytes = b"", *,
                observe: int | None = None, token: bytes = b"\x01\x02",
                timeout: float = 3.0) -> Message | None:
        self.mid = (self.mid + 1) & 0xFFFF
        options = [(int(Option.URI_PATH), p.encode()) for p in path.strip("/").split("/")]
        if observe is not None:
            options.append((int(Option.OBSERVE), bytes([observe]) if observe else b""))
        self.send_raw(Message(MessageType.CON, code, self.mid, token, tuple(options),
                              payload).encode())
        data = self.receive(timeout)
        return parse_message(data) if data is not None else None

    def post(self, path: str, payload: bytes) -> Message | None:
        return self.request(Code.POST, path, payload)

    def close(self) -> None:
        try:
            self.conn.shutdown()
            self._flush()
        except SSL.Error:
            pass
        self.sock.close()
