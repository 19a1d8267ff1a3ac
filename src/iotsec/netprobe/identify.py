"""Service identification by probing, never by port number.

For each open TCP port:

1. *Listen* (the null probe): connect and wait briefly. SSH, FTP, SMTP and Telnet speak
   first; their first bytes name them (a Telnet server opens with IAC option negotiation,
   which is refused option by option).
2. *Ask*: if the service stayed silent, send each client-first probe on its own
   connection, all at once, and keep the most specific answer: a TLS ClientHello, an MQTT
   CONNECT, a Modbus read, an RTSP OPTIONS and an HTTP GET. Servers answer a probe of the
   wrong protocol with an error or a close, so the others are not held up.
3. *Look inside TLS*: on a TLS port, HTTP and MQTT probes run again inside a handshake.

UDP ports get a CoAP GET for ``/.well-known/core``. Every step has a deadline and a read
limit, so the worst case per port is ``banner_wait + 2 * probe_timeout`` (1.6 s with the
defaults), whatever the service does.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from iotsec.findings.model import clean_text
from iotsec.netprobe.net import Conversation, open_conversation
from iotsec.netprobe.tls import permissive_context
from iotsec.scan import probes
from iotsec.scan.model import READ_LIMIT, ProbeConfig, Service

__all__ = ["identify_tcp", "identify_udp"]

_PROMPT = re.compile(rb"(login|username|user name|password)\s*:\s*$", re.IGNORECASE)
_FTP_SMTP = re.compile(rb"^220[ -]")


@dataclass(frozen=True, slots=True)
class _Hit:
    protocol: str
    data: bytes
    http: probes.HttpResponse | None = None
    connack: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


_PRIORITY = ("tls", "mqtt", "modbus", "rtsp", "http")


def _first_line(data: bytes) -> str:
    return clean_text(data.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1"), 200)


def _banner_done(data: bytes) -> bool:
    if probes.is_telnet_negotiation(data):
        text, _replies, _n = probes.telnet_negotiate(data)
        return bool(_PROMPT.search(text.rstrip()) or text.rstrip().endswith((b"#", b"$", b">")))
    return b"\n" in data


def classify_banner(data: bytes) -> tuple[str, dict[str, Any]]:
    """Name the protocol of a service that spoke first, from its first bytes."""
    if probes.is_telnet_negotiation(data):
        text, _replies, commands = probes.telnet_negotiate(data)
        return "telnet", {"negotiation_commands": commands,
                          "prompt": _first_line(text.strip()[-80:]) if text.strip() else None}
    if data.startswith(b"SSH-"):
        return "ssh", {"version": _first_line(data)}
    if _FTP_SMTP.match(data):
        head = data[:512].lower()
        if b"smtp" in head or b"mail" in head:
            return "smtp", {}
        return "ftp", {}
    if data.startswith(b"RFB "):
        return "vnc", {"version": _first_line(data)}
    if data.startswith((b"HTTP/1.", b"HTTP/2")):
        return "http", {}
    if _PROMPT.search(data.rstrip()):
        return "telnet", {"negotiation_commands": 0}
    return "unknown", {}


def _http_done(data: bytes) -> bool:
    _head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    response = probes.parse_http_response(data)
    if response is None:
        return True
    length = response.header("content-length")
    if length is not None and length.isdigit():
        return len(body) >= min(int(length), 4096)
    return len(body) >= 4096


async def _ask(host: str, port: int, payload: bytes, cfg: ProbeConfig, until: Any, *,
               tls: bool = False, server_name: str | None = None,
               after: bytes | None = None, closed: list[bool] | None = None) -> bytes:
    """Connect, send ``payload``, read until ``until`` or the timeout; '' on failure.
    ``closed`` receives whether the peer hung up or refused (rather than stayed silent)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.probe_timeout
    conv: Conversation | None = None
    try:
        conv = await open_conversation(host, port, cfg.probe_timeout,
                                       tls=permissive_context() if tls else None,
                                       server_hostname=server_name, limit=cfg.read_limit)
        left = max(0.01, deadline - loop.time())
        await conv.send(payload, left)
        await conv.read(max(0.01, deadline - loop.time()), until=until)
        if after is not None and conv.received:
            conv.writer.write(after)
        if closed is not None:
            closed.append(conv.reader.at_eof())
        return bytes(conv.received)
    except TimeoutError:
        if closed is not None:
            closed.append(False)
        return bytes(conv.received) if conv is not None else b""
    except Exception:  # a refused handshake, a reset: the peer hung up
        if closed is not None:
            closed.append(True)
        return bytes(conv.received) if conv is not None else b""
    finally:
        if conv is not None:
            await conv.close()


async def _probe_tls(host: str, port: int, cfg: ProbeConfig) -> _Hit | None:
    data = await _ask(host, port, probes.tls_client_hello(), cfg, lambda d: len(d) >= 5)
    if probes.looks_like_tls(data):
        return _Hit("tls", data, details={"first_record": "alert" if data[0] == 21
                                           else "handshake"})
    return None


def _http_hit(data: bytes) -> _Hit | None:
    response = probes.parse_http_response(data)
    if response is None:
        return None
    protocol = "rtsp" if response.protocol == "RTSP" else "http"
    details: dict[str, Any] = {"status": response.status}
    server = response.header("server")
    if server:
        details["server"] = clean_text(server, 120)
    return _Hit(protocol, data, http=response, details=details)


async def _probe_http(host: str, port: int, cfg: ProbeConfig, *, tls: bool = False,
                      server_name: str | None = None,
                      seen: list[bytes] | None = None) -> _Hit | None:
    shown = server_name or (f"[{host}]" if ":" in host else host)
    outcome: list[bool] = []
    data = await _ask(host, port, probes.http_request(f"{shown}:{port}"), cfg, _http_done,
                      tls=tls, server_name=server_name, closed=outcome)
    if seen is not None:
        # What the service did: b"" = silence until the timeout, b"x" = it answered or
        # hung up (anything but silence).
        seen.append(b"x" if data or (outcome and outcome[0]) else b"")
    return _http_hit(data)


async def _probe_rtsp(host: str, port: int, cfg: ProbeConfig) -> _Hit | None:
    shown = f"[{host}]" if ":" in host else host
    data = await _ask(host, port, probes.rtsp_options(shown, port), cfg,
                      lambda d: b"\r\n\r\n" in d)
    return _http_hit(data)


async def _probe_mqtt(host: str, port: int, cfg: ProbeConfig, *, tls: bool = False,
                      server_name: str | None = None) -> _Hit | None:
    client_id = f"iotsec-scan-{secrets.token_hex(4)}"
    data = await _ask(host, port, probes.mqtt_connect(client_id), cfg,
                      lambda d: probes.parse_connack(d) is not None, tls=tls,
                      server_name=server_name, after=probes.MQTT_DISCONNECT)
    rc = probes.parse_connack(data)
    if rc is None:
        return None
    return _Hit("mqtt", data, connack=rc, details={"connack": rc})


_MODBUS_TID = 0x5A17


async def _probe_modbus(host: str, port: int, cfg: ProbeConfig) -> _Hit | None:
    data = await _ask(host, port, probes.modbus_read_request(_MODBUS_TID), cfg,
                      lambda d: len(d) >= 9)
    parsed = probes.parse_modbus_response(data, _MODBUS_TID)
    if parsed is None:
        return None
    return _Hit("modbus", data, details={"exception": parsed[1]})


async def _first_hit(probes_: list[Coroutine[Any, Any, _Hit | None]]) -> _Hit | None:
    """Run the probes together; the first that recognises its protocol wins and the rest
    are cancelled (their connections closed). Each probe only accepts a well-formed answer
    of its own protocol, so the first hit is the answer, not a guess; when two finish in
    the same turn of the loop, the more specific protocol is kept."""
    pending = {asyncio.ensure_future(p) for p in probes_}
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            hits = [h for h in (t.result() for t in done) if h is not None]
            if hits:
                return min(hits, key=lambda h: _PRIORITY.index(h.protocol))
        return None
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


async def _one_at_a_time(host: str, port: int, cfg: ProbeConfig) -> _Hit | None:
    """The probes again, one connection at a time, for a service that answered none of them
    at once. Many device servers (Python's ``http.server``, small embedded stacks) serve one
    connection at a time: the one they accepted first, while the other probes wait in the
    backlog until every probe has timed out. HTTP goes first, the common case; a service
    that says nothing at all to an HTTP request and does not hang up is silent, not busy,
    and the search ends there (one probe timeout more for a silent port)."""
    answered: list[bytes] = []
    hit = await _probe_http(host, port, cfg, seen=answered)
    if hit is not None or not (answered and answered[0]):
        return hit
    for probe in (_probe_tls, _probe_mqtt, _probe_rtsp, _probe_modbus):
        hit = await probe(host, port, cfg)
        if hit is not None:
            return hit
    return None


def _apply(service: Service, hit: _Hit) -> None:
    service.protocol = hit.protocol if hit.protocol != "tls" else service.protocol
    service.details.update(hit.details)
    if hit.http is not None:
        service.http = hit.http
    if hit.connack is not None:
        service.connack = hit.connack
    if service.banner is None and hit.protocol in ("http", "rtsp"):
        service.banner = _first_line(hit.data)


async def _listen(service: Service, cfg: ProbeConfig) -> bytes | None:
    """The null probe. Returns what the service said unprompted (None: could not
    connect)."""
    try:
        conv = await open_conversation(service.host, service.port, cfg.connect_timeout,
                                       limit=cfg.read_limit)
    except (OSError, TimeoutError) as exc:
        service.notes.append(f"connection failed: {type(exc).__name__}")
        return None
    try:
        await conv.read(cfg.banner_wait, until=_banner_done)
        if probes.is_telnet_negotiation(bytes(conv.received)) and not conv.overflowed:
            _text, replies, _n = probes.telnet_negotiate(bytes(conv.received))
            if replies:
                await conv.send(replies, cfg.banner_wait)
                await conv.read(cfg.banner_wait, until=_banner_done)
    except (OSError, TimeoutError):
        pass
    finally:
        await conv.close()
    if conv.overflowed:
        service.notes.append(f"the service sent more than {cfg.read_limit} bytes unprompted; "
                             "reading stopped there")
        service.details["banner_overflow"] = True
    return bytes(conv.received)


async def identify_tcp(host: str, port: int, cfg: ProbeConfig | None = None, *,
                       server_name: str | None = None) -> Service:
    """Identify the service on an open TCP port (never raises for what the peer does)."""
    cfg = cfg or ProbeConfig()
    start = time.perf_counter()
    service = Service(host=host, port=port, server_name=server_name)
    try:
        await _identify(service, cfg)
    finally:
        service.seconds = time.perf_counter() - start
    return service


async def _identify(service: Service, cfg: ProbeConfig) -> None:
    host, port = service.host, service.port
    banner = await _listen(service, cfg)
    if banner is None:
        return
    if banner:
        protocol, details = classify_banner(banner)
        service.protocol = protocol
        service.details.update(details)
        if protocol == "telnet":
            text, _r, _n = probes.telnet_negotiate(banner)
            service.banner = _first_line(text.strip()) if text.strip() else None
        else:
            service.banner = _first_line(banner)
        return
    best = await _first_hit([
        _probe_tls(host, port, cfg), _probe_mqtt(host, port, cfg),
        _probe_modbus(host, port, cfg), _probe_rtsp(host, port, cfg),
        _probe_http(host, port, cfg)])
    if best is None:
        best = await _one_at_a_time(host, port, cfg)
    if best is None:
        service.notes.append("no answer to any probe (the service accepts connections but "
                             "stays silent, or speaks a protocol iotsec does not probe)")
        return
    if best.protocol != "tls":
        _apply(service, best)
        return
    service.tls = True
    service.details.update(best.details)
    # Inside TLS the probes go one after the other: many TLS servers on devices serve one
    # connection at a time, and an HTTPS server left waiting for a line by an MQTT probe
    # would hold up the HTTP probe. HTTP first (the common case); a server that said
    # nothing at all to an HTTP request is not an MQTT broker either (a broker hangs up on
    # bytes that are not MQTT), so silence ends the search there.
    answered: list[bytes] = []
    inner = await _probe_http(host, port, cfg, tls=True, server_name=service.server_name,
                              seen=answered)
    if inner is None and answered and answered[0]:
        inner = await _probe_mqtt(host, port, cfg, tls=True, server_name=service.server_name)
    if inner is not None:
        _apply(service, inner)


# --------------------------------------------------------------------------- UDP


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        self.refused = False

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.queue.full():
            self.queue.put_nowait(data[:READ_LIMIT])

    def error_received(self, exc: Exception) -> None:
        self.refused = True


async def identify_udp(host: str, port: int, cfg: ProbeConfig | None = None) -> Service | None:
    """CoAP on a UDP port: ``None`` when nothing answered (closed, filtered, or not CoAP)."""
    cfg = cfg or ProbeConfig()
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.create_datagram_endpoint(
            _Datagrams, remote_addr=(host, port))
    except OSError:
        return None
    message_id = int.from_bytes(os.urandom(2), "big")
    token = os.urandom(4)
    request = probes.coap_get(message_id, token)
    deadline = loop.time() + cfg.probe_timeout
    try:
        transport.sendto(request)
        resent = False
        while True:
            left = deadline - loop.time()
            if left <= 0 or proto.refused:
                return None
            # One retransmission half way, as CoAP itself would (RFC 7252 section 4.2).
            wait = left if resent else min(left, cfg.probe_timeout / 2)
            try:
                data = await asyncio.wait_for(proto.queue.get(), wait)
            except TimeoutError:
                if not resent:
                    transport.sendto(request)
                    resent = True
                continue
            message = probes.parse_coap(data)
            if message is None:
                continue
            if message.message_id == message_id or message.token == token:
                payload = message.payload.decode("utf-8", "replace")
                return Service(host=host, port=port, transport="udp", protocol="coap",
                               details={"code": message.code,
                                        "resources": clean_text(payload, 300) or None},
                               seconds=time.perf_counter() - start)
    finally:
        transport.close()
