"""The device SDK's CoAP client: CoAP (RFC 7252) over DTLS 1.2 with the device's
certificate, to ``iotsec gateway coap``.

The same files as :class:`iotsec.device.DeviceClient` (the device's certificate and key and
the fleet's CA chain) authenticate both ends; the server's certificate must chain to the CA
and name the host (its IP address or DNS name in subjectAltName). Confirmable requests are
retransmitted with RFC 7252's exponential back-off until ``timeout``. Notifications of an
observed topic (RFC 7641) are queued and read with :meth:`CoapClient.notification`.

Enrolment and renewal are the same as for MQTT: the device enrols over EST
(:func:`iotsec.device.enrol`), :class:`iotsec.device.RenewalAgent` renews the files in
place, and :meth:`CoapClient.reload` (from the agent's ``on_renewed``) makes a new DTLS
session with the new pair and observes again what was observed.

    with CoapClient.from_files("dev.crt", "dev.key", "chain.pem", "gw.example", 5684) as c:
        c.publish("devices/dev-1/temp", b"21.5")
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import time
import warnings
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from iotsec.coap.datagrams import pack_records
from iotsec.coap.message import (
    Code,
    Message,
    MessageType,
    Option,
    code_text,
    encode_uint,
    parse_message,
)
from iotsec.errors import CoapClientError, CoapMessageError, InvalidInputError
from iotsec.pki.serial import format_serial

with warnings.catch_warnings():
    # pyOpenSSL's crypto module names DSA types, which cryptography marks deprecated.
    warnings.filterwarnings("ignore", message=".*DSA.*")
    from OpenSSL import SSL

    # pyOpenSSL has no Connection.session_reused(): OpenSSL's SSL_session_reused is read
    # through pyOpenSSL's own binding (see CoapClient.resumed).
    from OpenSSL._util import lib as _ssl_lib

__all__ = ["ACK_TIMEOUT", "CoapClient"]

#: RFC 7252 4.8: the first retransmission of a confirmable message after 2 s, then doubled.
ACK_TIMEOUT = 2.0
_MTU = 1200


def _names_host(cert: x509.Certificate, host: str) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host.lower() in {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    return ip in san.get_values_for_type(x509.IPAddress)


class CoapClient:
    """One DTLS session to the gateway (not thread-safe: one thread uses it)."""

    def __init__(self, *, cert: Path, key: Path, ca_chain: Path, host: str, port: int = 5684,
                 timeout: float = 10.0, key_password: bytes | None = None) -> None:
        if not 1 <= port <= 65535:
            raise InvalidInputError(f"port {port} is out of range")
        self.host, self.port, self.timeout = host, port, timeout
        self.cert_path, self.key_path, self.ca_chain = cert, key, ca_chain
        self._key_password = key_password
        certificate = _read_certificate(cert)
        self.device_id = _cn(certificate)
        self.not_after = certificate.not_valid_after_utc
        self.serial = format_serial(certificate.serial_number)
        self._conn, self._sock = self._session()
        self._mid = secrets.randbelow(0x10000)
        self._notes: deque[Message] = deque()
        self._observed: list[str] = []
        self.closed = False
        self.connected = False

    def _session(self) -> tuple[SSL.Connection, socket.socket]:
        """A DTLS client connection with the files as they are now, and its socket (the
        context is kept: a later connection made with it can resume the session)."""
        ctx = self._new_context()
        self._ctx = ctx
        return self._connection(ctx)

    def _new_context(self) -> SSL.Context:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*DSA.*")
            ctx = SSL.Context(SSL.DTLS_CLIENT_METHOD)
            ctx.set_min_proto_version(0xFEFD)  # DTLS 1.2
            # The MTU is set on the connection: a memory BIO cannot be asked for it.
            ctx.set_options(SSL.OP_NO_QUERY_MTU)
            try:
                ctx.load_verify_locations(str(self.ca_chain))
                ctx.use_certificate_chain_file(str(self.cert_path))
                if self._key_password is not None:
                    password = self._key_password
                    ctx.set_passwd_cb(lambda *_: password)
                ctx.use_privatekey_file(str(self.key_path))
                ctx.check_privatekey()
            except SSL.Error as exc:
                raise InvalidInputError(f"cannot load the device certificate, key or CA "
                                        f"chain: {exc}") from None
        ctx.set_verify(SSL.VERIFY_PEER, lambda _c, _x, _e, _d, ok: bool(ok))
        return ctx

    def _connection(self, ctx: SSL.Context) -> tuple[SSL.Connection, socket.socket]:
        conn = SSL.Connection(ctx, None)
        conn.set_connect_state()
        conn.set_ciphertext_mtu(_MTU)
        if not _is_ip(self.host):
            conn.set_tlsext_host_name(self.host.encode("idna"))
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        return conn, socket.socket(family, socket.SOCK_DGRAM)

    @classmethod
    def from_files(cls, cert: str | Path, key: str | Path, ca_chain: str | Path, host: str,
                   port: int = 5684, **options: Any) -> CoapClient:
        return cls(cert=Path(cert), key=Path(key), ca_chain=Path(ca_chain), host=host,
                   port=port, **options)

    # --- DTLS --------------------------------------------------------------------------

    def _flush(self) -> None:
        out = b""
        while True:
            try:
                chunk = self._conn.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            out += chunk
        for datagram in pack_records(out, _MTU):
            try:
                self._sock.send(datagram)
            except OSError as exc:
                raise CoapClientError(f"cannot send to {self.host}:{self.port}: {exc}"
                                      ) from None

    def _pump(self, deadline: float) -> None:
        """Feed one datagram (or a DTLS timer expiry) to the connection."""
        wait = max(0.005, deadline - time.monotonic())
        timer = self._conn.DTLSv1_get_timeout()
        if timer is not None:
            wait = min(wait, max(float(timer), 0.005))
        self._sock.settimeout(wait)
        try:
            data = self._sock.recv(4096)
        except (TimeoutError, ConnectionRefusedError):
            timer = self._conn.DTLSv1_get_timeout()
            if timer is not None and timer <= 0:
                self._conn.DTLSv1_handle_timeout()
                self._flush()
            return
        self._conn.bio_write(data)

    @property
    def resumed(self) -> bool:
        """Whether the handshake resumed a session (no certificates exchanged again; the
        gateway still checks the session certificate's standing)."""
        return self.connected and bool(_ssl_lib.SSL_session_reused(self._conn._ssl))

    def reconnect(self) -> None:
        """Close the session and connect again, resuming it (an abbreviated handshake:
        no certificates or key exchange; a gateway that no longer knows the session makes
        a full one). Observations are made again, as :meth:`reload` does."""
        session = self._conn.get_session() if self.connected else None
        conn, sock = self._connection(self._ctx)
        self.close()
        if session is not None:
            conn.set_session(session)
        self._conn, self._sock = conn, sock
        self.closed = False
        self._notes.clear()
        self.connect()
        for topic in list(self._observed):
            self.observe(topic)

    def connect(self) -> None:
        """The DTLS handshake; raises :class:`CoapClientError` when it fails."""
        self._sock.connect((self.host, self.port))
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self._conn.do_handshake()
                self._flush()
                break
            except SSL.WantReadError:
                self._flush()
            except SSL.Error as exc:
                self._flush()
                raise CoapClientError(f"DTLS handshake with {self.host}:{self.port} failed: "
                                      f"{exc}") from None
            if time.monotonic() > deadline:
                raise CoapClientError(f"no DTLS handshake with {self.host}:{self.port} "
                                      f"within {self.timeout:g} s")
            self._pump(deadline)
        peer = self._conn.get_peer_certificate()
        if peer is None or not _names_host(peer.to_cryptography(), self.host):
            self.close()
            raise CoapClientError(f"the gateway's certificate does not name {self.host!r}")
        self.connected = True

    def send_datagram(self, data: bytes) -> None:
        """Send one datagram inside the session as it is (for tests of a server)."""
        try:
            self._conn.send(data)
        except SSL.Error as exc:
            raise CoapClientError(f"the DTLS session is closed: {exc}") from None
        self._flush()

    def receive_datagram(self, timeout: float) -> bytes | None:
        """One decrypted datagram, or None when none came in time or the session closed."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            try:
                return self._conn.recv(4096)
            except SSL.WantReadError:
                if time.monotonic() >= deadline:
                    return None
                self._pump(deadline)
            except SSL.Error:
                self.closed = True
        return None

    # --- CoAP --------------------------------------------------------------------------

    def request(self, code: int, path: str, payload: bytes = b"", *,
                observe: int | None = None, timeout: float | None = None) -> Message | None:
        """Send a confirmable request and return its response; None when none came within
        ``timeout`` (retransmitted meanwhile) or the session closed."""
        self._mid = (self._mid + 1) & 0xFFFF
        token = secrets.token_bytes(4)
        options = [(int(Option.URI_PATH), p.encode()) for p in path.strip("/").split("/")]
        if observe is not None:
            options.append((int(Option.OBSERVE), encode_uint(observe)))
        request = Message(MessageType.CON, code, self._mid, token, tuple(options), payload)
        data = request.encode()
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        backoff = ACK_TIMEOUT
        while time.monotonic() < deadline:
            self.send_datagram(data)
            resend = min(deadline, time.monotonic() + backoff)
            while (left := resend - time.monotonic()) > 0:
                raw = self.receive_datagram(left)
                if raw is None:
                    if self.closed:
                        return None
                    continue
                try:
                    msg = parse_message(raw)
                except CoapMessageError:
                    continue
                if msg.token == token and msg.type in (MessageType.ACK, MessageType.NON,
                                                       MessageType.CON):
                    if msg.type is MessageType.ACK and msg.code == Code.EMPTY:
                        continue  # a separate response follows
                    return msg
                self._notes.append(msg)
            backoff *= 2
        return None

    def publish(self, topic: str, payload: bytes) -> None:
        """POST the payload to ``/ps/<topic>``; a response other than 2.04 raises."""
        answer = self.request(Code.POST, f"ps/{topic}", payload)
        if answer is None:
            raise CoapClientError(f"no answer to the publish on {topic!r}")
        if answer.code != Code.CHANGED:
            raise CoapClientError(f"the gateway answered {code_text(answer.code)} to the "
                                  f"publish on {topic!r}: {answer.payload[:200]!r}")

    def observe(self, topic: str) -> Message:
        """Register an observation of ``topic`` (GET with Observe: 0) and return the
        registration's response; a refusal raises."""
        answer = self.request(Code.GET, f"ps/{topic}", observe=0)
        if answer is None or answer.code != Code.CONTENT:
            shown = code_text(answer.code) if answer is not None else "nothing"
            raise CoapClientError(f"the gateway answered {shown} to observing {topic!r}")
        if topic not in self._observed:
            self._observed.append(topic)
        return answer

    def notification(self, timeout: float) -> Message | None:
        """The next notification of an observed topic, or None within ``timeout``."""
        if self._notes:
            return self._notes.popleft()
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            raw = self.receive_datagram(left)
            if raw is None:
                return None
            try:
                return parse_message(raw)
            except CoapMessageError:
                continue
        return None

    def close(self) -> None:
        if not self.closed:
            try:
                self._conn.shutdown()
                self._flush()
            except (SSL.Error, CoapClientError):
                pass
        self.closed = True
        self.connected = False
        self._sock.close()

    # --- certificate renewal -----------------------------------------------------------

    def renewal_due(self, before: timedelta = timedelta(days=30),
                    now: datetime | None = None) -> bool:
        return self.not_after - (now or datetime.now(UTC)) <= before

    def reload(self) -> None:
        """Read the certificate and key files again (after
        :class:`iotsec.device.RenewalAgent` replaced them) and, if the client was connected,
        make a new DTLS session with them and observe again what was observed. A pair that
        does not load, or names another device, raises and changes nothing."""
        certificate = _read_certificate(self.cert_path)
        if _cn(certificate) != self.device_id:
            raise InvalidInputError(f"{self.cert_path} now names another device "
                                    f"({_cn(certificate)!r}, not {self.device_id!r})")
        conn, sock = self._session()  # loads the files: a bad pair changes nothing
        was_connected = self.connected
        self.close()
        self._conn, self._sock = conn, sock
        self.closed = False
        self._notes.clear()
        self.not_after = certificate.not_valid_after_utc
        self.serial = format_serial(certificate.serial_number)
        if was_connected:
            self.connect()
            for topic in list(self._observed):
                self.observe(topic)

    def __enter__(self) -> CoapClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise InvalidInputError(f"cannot read the certificate {path}: {exc.strerror}") from None
    except ValueError:
        raise InvalidInputError(f"{path} is not a PEM certificate") from None


def _cn(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise InvalidInputError("the device certificate has no common name")
    return str(names[0].value)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
