"""TLS handshakes against a service: what it offers and accepts, as a
:class:`~iotsec.scan.tls.TlsObservation`
(judged by :func:`iotsec.scan.tls.assess`), and the system's trust anchors."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

from cryptography import x509

from iotsec.netprobe.net import open_conversation
from iotsec.scan import tlsraw as raw
from iotsec.scan.model import TlsConfig
from iotsec.scan.tls import MAX_CHAIN, TlsObservation, load_pem_bundle

__all__ = ["observe", "permissive_context", "system_anchors"]


_OP_LEGACY_SERVER_CONNECT = getattr(ssl, "OP_LEGACY_SERVER_CONNECT", 0x4)


# The DER encoding constant of the private certificate objects Python 3.10-3.12 return.
_ENCODING_DER = getattr(getattr(ssl, "_ssl", None), "ENCODING_DER", 2)


def permissive_context() -> ssl.SSLContext:
    """A client context that completes a handshake with almost anything (no verification,
    every cipher and version the local OpenSSL has): the scanner judges afterwards."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.options |= _OP_LEGACY_SERVER_CONNECT
    return ctx


class _Stalled(Exception):
    pass


class _Session:
    def __init__(self, obs: TlsObservation, config: TlsConfig) -> None:
        self.obs = obs
        self.config = config
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.deadline = loop.time() + config.budget
        self.silences = 0

    def _timeout(self) -> float:
        left = self.deadline - self.loop.time()
        if left <= 0.01:
            raise _Stalled(f"TLS audit budget of {self.config.budget:g} s used up")
        return min(self.config.timeout, left)

    async def handshake(self) -> None:
        obs = self.obs
        obs.probes += 1
        timeout = self._timeout()
        try:
            conv = await open_conversation(obs.host, obs.port, timeout,
                                           tls=permissive_context(),
                                           server_hostname=obs.server_name)
        except TimeoutError:
            raise _Stalled(f"TLS handshake did not complete within {timeout:g} s") from None
        except (ssl.SSLError, OSError) as exc:
            obs.notes.append(f"full handshake failed: {_why(exc)}")
            return
        try:
            tls = conv.writer.get_extra_info("ssl_object")
            if isinstance(tls, ssl.SSLObject):
                obs.version = tls.version()
                cipher = tls.cipher()
                obs.cipher = cipher[0] if cipher else None
                obs.chain = _peer_chain(tls)
        finally:
            conv.writer.transport.abort()

    async def hello(self, version: int, suites: tuple[int, ...]) -> raw.ServerFlight:
        obs = self.obs
        obs.probes += 1
        timeout = self._timeout()
        try:
            conv = await open_conversation(obs.host, obs.port, timeout, limit=raw.MAX_FLIGHT)
        except TimeoutError:
            raise _Stalled(f"no TCP connection within {timeout:g} s") from None
        except OSError as exc:
            obs.notes.append(f"connection failed: {_why(exc)}")
            return raw.ServerFlight(garbage=True)
        try:
            await conv.send(raw.client_hello(version, suites, obs.server_name), timeout)
            await conv.read(timeout, until=raw.flight_complete)
        except (OSError, TimeoutError):
            pass
        finally:
            conv.writer.transport.abort()
        flight = raw.parse_server_flight(bytes(conv.received))
        answered = (flight.done or flight.alert is not None or flight.garbage
                    or conv.reader.at_eof() or conv.overflowed)
        if not answered:
            # Silence, or a flight cut off mid-way: once may be a server that ignores an
            # odd hello; twice (or before anything worked) is a server that stalls.
            self.silences += 1
            if self.silences >= 2 or (obs.version is None and not flight.accepted):
                what = "stalled mid-handshake" if conv.received else "did not answer"
                raise _Stalled(f"the server {what} (timeout {timeout:g} s)")
            obs.notes.append(f"no complete answer to a {raw.VERSION_NAMES.get(version)} "
                             f"ClientHello within {timeout:g} s")
        return flight


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.__class__.__name__
    return exc.strerror or exc.__class__.__name__ if isinstance(exc, OSError) else str(exc)


def _peer_chain(tls: ssl.SSLObject) -> list[bytes]:
    # Python 3.13 has SSLObject.get_unverified_chain(); 3.10-3.12 have it privately.
    getter = getattr(tls, "get_unverified_chain", None)
    if getter is None:
        inner = getattr(tls, "_sslobj", None)
        getter = getattr(inner, "get_unverified_chain", None)
    chain: list[bytes] = []
    if getter is not None:
        with contextlib.suppress(Exception):
            for cert in getter() or []:
                if isinstance(cert, bytes):
                    chain.append(cert)
                else:
                    chain.append(cert.public_bytes(_ENCODING_DER))
    if not chain:
        leaf = tls.getpeercert(binary_form=True)
        if leaf:
            chain.append(leaf)
    return chain[:MAX_CHAIN]


async def observe(host: str, port: int, *, server_name: str | None = None,
                  config: TlsConfig | None = None) -> TlsObservation:
    """Audit the TLS server at ``host``:``port`` (``server_name`` for SNI and the hostname
    check). Never raises for what the server does; see ``error`` and ``notes``."""
    config = config or TlsConfig()
    obs = TlsObservation(host=host, port=port, server_name=server_name)
    session = _Session(obs, config)
    try:
        await session.handshake()
        base = await session.hello(0x0303, raw.ALL_SUITES)
        if base.accepted:
            if not obs.chain:
                obs.chain = base.certificates[:MAX_CHAIN]
            if base.curve is not None:
                obs.curve, obs.curve_bits = base.curve, base.curve_bits
            if obs.version is None:
                obs.version, obs.cipher = base.version_name, base.suite_name
        if obs.version is None and not base.accepted:
            obs.error = "no TLS handshake succeeded" + (
                f" ({obs.notes[0]})" if obs.notes else "")
            return obs
        for version in (0x0300, 0x0301, 0x0302):
            flight = await session.hello(version, raw.ALL_SUITES)
            if flight.accepted and flight.version == version:
                obs.accepted_old.append(raw.VERSION_NAMES[version])
        weak = dict(raw.WEAK_SUITES)
        for _ in range(config.weak_suite_rounds):
            flight = await session.hello(0x0303, tuple(weak))
            if not flight.accepted or flight.suite not in weak:
                break
            obs.weak_suites.append(weak.pop(flight.suite))
        flight = await session.hello(0x0303, tuple(raw.RSA_KEX_SUITES))
        if flight.accepted and flight.suite in raw.RSA_KEX_SUITES:
            obs.rsa_kex.append(raw.RSA_KEX_SUITES[flight.suite])
        flight = await session.hello(0x0303, tuple(raw.DHE_SUITES))
        if flight.accepted and flight.dh_bits is not None:
            obs.dh_bits = flight.dh_bits
    except _Stalled as exc:
        if obs.version is None and not obs.chain:
            obs.error = str(exc)
        else:
            obs.notes.append(f"audit incomplete: {exc}")
    return obs


def system_anchors(limit: int = 4 * 1024 * 1024) -> list[x509.Certificate]:
    """The system's trusted roots (OpenSSL's default CA file), or none when unreadable."""
    paths = ssl.get_default_verify_paths()
    for name in (paths.cafile, paths.openssl_cafile):
        if not name:
            continue
        path = Path(name)
        with contextlib.suppress(OSError):
            if path.is_file() and path.stat().st_size <= limit:
                return load_pem_bundle(path.read_bytes())
    return []
