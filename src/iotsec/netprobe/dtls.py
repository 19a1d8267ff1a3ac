"""DTLS on a UDP port (CoAP over DTLS, ``coaps``, 5684 by convention): identify it and
judge its handshake as the TLS audit does.

The handshakes are OpenSSL's (pyOpenSSL, ``DTLS_CLIENT_METHOD`` over memory BIOs, as the
device SDK's CoAP client), run in a worker thread with a deadline each. The scanner:

1. handshakes with OpenSSL's defaults and no client certificate: the DTLS version and
   cipher suite the server picks, its certificate chain, whether it asks for a client
   certificate (a CertificateRequest seen) and whether it then completes the handshake
   without one (it does not *require* one). When the handshake completes, a CoAP GET for
   ``/.well-known/core`` inside the session tells whether CoAP answers there.
2. offers DTLS 1.0 alone: a server that picks it accepts a version below DTLS 1.2.
3. offers a few weak or non-forward-secret suites, one at a time.

A server that answers with a HelloVerifyRequest (cookie) is followed through it, as a real
client would. Nothing is sent to a port that did not answer the first ClientHello.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import warnings
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.serialization import Encoding

from iotsec.coap.datagrams import pack_records
from iotsec.scan.model import Service
from iotsec.scan.probes import coap_get, parse_coap
from iotsec.scan.tls import TlsObservation

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*DSA.*")
    from OpenSSL import SSL

__all__ = ["DtlsAttempt", "client_auth", "handshake", "identify_dtls", "observe_dtls"]

_MTU = 1200
_DTLS1_0 = 0xFEFF
_DTLS1_2 = 0xFEFD
#: Suites a CoAP server should refuse: static RSA key exchange (no forward secrecy), 3DES.
_RSA_KEX = ("AES128-SHA", "AES256-SHA", "AES128-GCM-SHA256")
_WEAK = ("DES-CBC3-SHA", "ECDHE-RSA-DES-CBC3-SHA")


@dataclass
class DtlsAttempt:
    """What one handshake showed."""

    answered: bool = False
    completed: bool = False
    error: str | None = None
    version: str | None = None
    cipher: str | None = None
    chain: list[bytes] = field(default_factory=list)
    certificate_requested: bool = False
    coap_code: str | None = None


def _context(ciphers: str | None, only: int | None) -> SSL.Context:
    ctx = SSL.Context(SSL.DTLS_CLIENT_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE)
    ctx.set_options(SSL.OP_NO_QUERY_MTU)
    if only is not None:
        ctx.set_min_proto_version(only)
        ctx.set_max_proto_version(only)
    # Level 0: the scanner must be able to *offer* what it looks for; it sends no secrets.
    ctx.set_cipher_list((ciphers or "ALL") .encode() + b":@SECLEVEL=0")
    return ctx


def handshake(host: str, port: int, *, timeout: float, ciphers: str | None = None,
              only: int | None = None, ask_coap: bool = False) -> DtlsAttempt:
    """One DTLS handshake without a client certificate (blocking; run it in a thread)."""
    out = DtlsAttempt()
    try:
        ctx = _context(ciphers, only)
    except SSL.Error as exc:
        out.error = f"not offered by this OpenSSL: {exc}"
        return out
    states: list[str] = []
    ctx.set_info_callback(lambda conn, where, ret: states.append(
        conn.get_state_string().decode("ascii", "replace")))
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    conn.set_ciphertext_mtu(_MTU)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        deadline = time.monotonic() + timeout

        def flush() -> None:
            try:
                data = conn.bio_read(65536)
            except SSL.WantReadError:
                return
            for datagram in pack_records(data, _MTU):
                sock.send(datagram)

        def pump() -> bool:
            wait = max(0.005, deadline - time.monotonic())
            timer = conn.DTLSv1_get_timeout()
            if timer is not None:
                wait = min(wait, max(float(timer), 0.005))
            sock.settimeout(wait)
            try:
                data = sock.recv(65536)
            except (TimeoutError, ConnectionRefusedError, OSError):
                timer = conn.DTLSv1_get_timeout()
                if timer is not None and timer <= 0:
                    conn.DTLSv1_handle_timeout()
                    flush()
                return False
            out.answered = True
            conn.bio_write(data)
            return True

        while True:
            try:
                conn.do_handshake()
                flush()
                out.completed = True
                break
            except SSL.WantReadError:
                flush()
            except SSL.Error as exc:
                flush()
                out.error = f"handshake refused: {exc}"
                break
            if time.monotonic() > deadline:
                out.error = "no handshake within the timeout" if out.answered else \
                    "no answer"
                break
            pump()
        out.certificate_requested = any("certificate request" in s for s in states)
        chain = conn.get_peer_cert_chain(as_cryptography=True) or []
        out.chain = [c.public_bytes(Encoding.DER) for c in chain]
        if out.answered and any("server hello" in s for s in states):
            out.version = conn.get_protocol_version_name() or None
            out.cipher = conn.get_cipher_name() or None
        if out.completed and ask_coap:
            message_id = int.from_bytes(os.urandom(2), "big")
            conn.send(coap_get(message_id, os.urandom(4)))
            flush()
            while time.monotonic() < deadline:
                try:
                    answer = parse_coap(conn.recv(4096))
                except SSL.WantReadError:
                    pump()
                    continue
                except SSL.Error:
                    break
                if answer is not None and answer.message_id == message_id:
                    out.coap_code = answer.code
                    break
        if out.completed:
            try:
                conn.shutdown()
                flush()
            except SSL.Error:
                pass
    return out


async def identify_dtls(host: str, port: int, timeout: float) -> Service | None:
    """A DTLS server on ``host:port``, or None when nothing answered a ClientHello."""
    start = time.perf_counter()
    first = await asyncio.to_thread(handshake, host, port, timeout=timeout, ask_coap=True)
    if not first.answered or first.version is None:
        return None
    details: dict[str, object] = {"dtls": first.version,
                                  "client_certificate": client_auth(first)}
    if first.coap_code is not None:
        details["code"] = first.coap_code
    service = Service(host=host, port=port, transport="udp", protocol="coap", tls=True,
                      details=details, seconds=time.perf_counter() - start)
    if first.coap_code is None:
        service.notes.append("CoAP inside DTLS not confirmed (the handshake needs a client "
                             "certificate)" if not first.completed else
                             "no CoAP answer inside the DTLS session")
    return service


def client_auth(attempt: DtlsAttempt) -> str:
    """``required``, ``optional`` or ``not requested``: the server's client certificate."""
    if not attempt.certificate_requested:
        return "not requested"
    return "optional" if attempt.completed else "required"


async def observe_dtls(service: Service, timeout: float
                       ) -> tuple[TlsObservation, DtlsAttempt]:
    """The DTLS audit of an identified service, as a :class:`TlsObservation`, and what
    its first handshake showed (the client certificate question)."""
    first = await asyncio.to_thread(handshake, service.host, service.port, timeout=timeout)
    obs = TlsObservation(host=service.host, port=service.port, version=first.version,
                         cipher=first.cipher, chain=first.chain, probes=1)
    if first.version is None:
        obs.error = first.error or "no DTLS handshake"
        return obs, first
    old = await asyncio.to_thread(handshake, service.host, service.port, timeout=timeout,
                                  only=_DTLS1_0)
    obs.probes += 1
    if old.version == "DTLSv1":
        obs.accepted_old.append("DTLS 1.0")
    for suite in (*_RSA_KEX, *_WEAK):
        attempt = await asyncio.to_thread(handshake, service.host, service.port,
                                          timeout=timeout, ciphers=suite, only=_DTLS1_2)
        obs.probes += 1
        if attempt.cipher == suite:
            (obs.rsa_kex if suite in _RSA_KEX else obs.weak_suites).append(suite)
    return obs, first
