"""Protocol probes as bytes: what the scanner sends, and parsers for what comes back.

Pure functions, no I/O. Every parser takes whatever bytes arrived (possibly truncated,
possibly hostile) and returns ``None`` when they are not a complete, well-formed answer of
its protocol; none of them raises on bad input or reads past the buffer it is given.

- MQTT 3.1.1 (OASIS standard, sections 3.1-3.14): CONNECT, CONNACK, SUBSCRIBE, SUBACK.
- HTTP/1.x (RFC 9112) and RTSP/1.0 (RFC 2326): request lines, status lines, headers.
- Modbus/TCP (Modbus Application Protocol v1.1b3): MBAP header and function 3
  (read holding registers), a read that changes nothing on the device.
- Telnet (RFC 854/855): IAC option negotiation, refused option by option.
- CoAP (RFC 7252): a confirmable GET for ``/.well-known/core`` (RFC 6690).
- TLS: a real ClientHello produced by the ssl module, and record-header recognition.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import struct
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

__all__ = [
    "CoapMessage", "HttpResponse", "coap_get", "http_request", "iter_mqtt_packets",
    "looks_like_tls", "modbus_read_request", "mqtt_connect", "mqtt_string", "mqtt_subscribe",
    "parse_coap", "parse_connack", "parse_http_response", "parse_modbus_response", "parse_suback",
    "remaining_length", "rtsp_options", "telnet_negotiate", "tls_client_hello"
]

MQTT_DISCONNECT = b"\xe0\x00"
MAX_HEADERS = 64


# --------------------------------------------------------------------------- MQTT


def mqtt_string(value: str | bytes) -> bytes:
    """An MQTT UTF-8 string (or binary data): a two-byte length, then the bytes."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if len(raw) > 0xFFFF:
        raise ValueError("MQTT strings are at most 65535 bytes")
    return struct.pack(">H", len(raw)) + raw


def remaining_length(n: int) -> bytes:
    """An MQTT variable byte integer (a packet's remaining length)."""
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_connect(client_id: str, *, username: str | None = None, password: str | None = None,
                 keepalive: int = 30, version: Literal[4, 5] = 4) -> bytes:
    """An MQTT CONNECT with a clean session (nothing is left on the broker): MQTT 3.1.1, or
    with ``version=5`` MQTT 5 with no properties (no session expiry: the session ends with
    the connection). A password is sent only with a user name."""
    flags = 0x02
    payload = mqtt_string(client_id)
    if username is not None:
        flags |= 0x80
        payload += mqtt_string(username)
        if password is not None:
            flags |= 0x40
            payload += mqtt_string(password)
    properties = b"\x00" if version == 5 else b""
    body = (mqtt_string("MQTT") + bytes([version, flags]) + struct.pack(">H", keepalive)
            + properties + payload)
    return b"\x10" + remaining_length(len(body)) + body


def mqtt_subscribe(packet_id: int, topic: str, qos: int = 0) -> bytes:
    body = struct.pack(">H", packet_id) + mqtt_string(topic) + bytes([qos])
    return b"\x82" + remaining_length(len(body)) + body


def iter_mqtt_packets(data: bytes) -> list[tuple[int, int, bytes]]:
    """The complete MQTT control packets at the start of ``data`` as (type, flags, body);
    stops at the first incomplete or malformed one."""
    out: list[tuple[int, int, bytes]] = []
    i = 0
    while i + 2 <= len(data) and len(out) < 1000:
        first = data[i]
        length = 0
        shift = 1
        j = i + 1
        for _ in range(4):
            if j >= len(data):
                return out
            byte = data[j]
            j += 1
            length += (byte & 0x7F) * shift
            shift *= 128
            if not byte & 0x80:
                break
        else:
            return out
        if j + length > len(data):
            return out
        out.append((first >> 4, first & 0x0F, data[j:j + length]))
        i = j + length
    return out


def parse_connack(data: bytes) -> int | None:
    """The CONNACK return code (0 accepted, 4 bad user name or password, 5 not
    authorised...), or ``None`` when ``data`` does not start with a CONNACK."""
    packets = iter_mqtt_packets(data)
    if not packets:
        return None
    kind, flags, body = packets[0]
    if kind != 2 or flags != 0 or len(body) < 2 or body[0] & 0xFE:
        return None
    return body[1]


def parse_suback(data: bytes, packet_id: int) -> tuple[int, ...] | None:
    """The granted QoS / failure codes (0x80) of the SUBACK for ``packet_id``, skipping any
    other packets before it (a retained PUBLISH can arrive first)."""
    for kind, _flags, body in iter_mqtt_packets(data):
        if kind == 9 and len(body) >= 3 and struct.unpack(">H", body[:2])[0] == packet_id:
            return tuple(body[2:])
    return None


# --------------------------------------------------------------------------- HTTP / RTSP


def http_request(host: str, path: str = "/", *, authorization: str | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "User-Agent: iotsec-scan",
             "Accept: */*", "Connection: close"]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def rtsp_options(host: str, port: int) -> bytes:
    return (f"OPTIONS rtsp://{host}:{port}/ RTSP/1.0\r\nCSeq: 1\r\n"
            "User-Agent: iotsec-scan\r\n\r\n").encode("latin-1")


@dataclass(frozen=True, slots=True)
class HttpResponse:
    protocol: str  # "HTTP" or "RTSP"
    version: str
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


_STATUS = re.compile(rb"(HTTP|RTSP)/(\d\.\d) (\d{3})(?: ([^\r\n]*))?\r?\n")


def parse_http_response(data: bytes) -> HttpResponse | None:
    """The status line and headers of an HTTP/1.x or RTSP/1.0 response (the headers may be
    cut short by the read limit; what arrived is kept)."""
    m = _STATUS.match(data)
    if m is None:
        return None
    # The status line's own CRLF is put back so that "no headers" is an empty head.
    head, _sep, body = (b"\r\n" + data[m.end():]).partition(b"\r\n\r\n")
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n")[:MAX_HEADERS]:
        name, sep, value = line.partition(b":")
        if sep and name and name.strip() == name:
            key = name.decode("latin-1").lower()
            headers.setdefault(key, value.strip().decode("latin-1"))
    return HttpResponse(protocol=m.group(1).decode(), version=m.group(2).decode(),
                        status=int(m.group(3)), reason=(m.group(4) or b"").decode("latin-1"),
                        headers=headers, body=body[:4096])


_AUTH_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9_-]*)(?:\s+realm=\"([^\"]{0,200})\")?")


def auth_challenge(response: HttpResponse) -> tuple[str, str | None] | None:
    """(scheme, realm) of a 401's ``WWW-Authenticate`` header, lower-case scheme."""
    if response.status != 401:
        return None
    value = response.header("www-authenticate")
    if not value:
        return ("unknown", None)
    m = _AUTH_SCHEME.match(value)
    if m is None:
        return ("unknown", None)
    return (m.group(1).lower(), m.group(2))


_PASSWORD_FIELD = re.compile(rb"<input[^>]{0,300}type\s*=\s*[\"']?password", re.IGNORECASE)


def has_login_form(response: HttpResponse) -> bool:
    """An HTML page with a password field: a login form that posts a password."""
    return bool(_PASSWORD_FIELD.search(response.body))


# --------------------------------------------------------------------------- Modbus/TCP


def modbus_read_request(transaction: int, unit: int = 1) -> bytes:
    """Read one holding register at address 0 (function 3): a read, never a write."""
    pdu = struct.pack(">BHH", 3, 0, 1)
    return struct.pack(">HHHB", transaction, 0, len(pdu) + 1, unit) + pdu


def parse_modbus_response(data: bytes, transaction: int) -> tuple[int, int | None] | None:
    """(function, exception code or ``None``) of the response to ``transaction``."""
    if len(data) < 9:
        return None
    tid, proto, length, _unit, function = struct.unpack(">HHHBB", data[:8])
    if tid != transaction or proto != 0 or not 3 <= length <= 254:
        return None
    if function == 0x83:
        return (3, data[8])
    if function == 3 and data[8] == 2 and length == 5:
        return (3, None)
    return None


# --------------------------------------------------------------------------- Telnet

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240


def telnet_negotiate(data: bytes) -> tuple[bytes, bytes, int]:
    """Split ``data`` into its text and the replies that refuse every option the server
    asks for (DO -> WONT, WILL -> DONT). Returns (text, replies, commands seen)."""
    text = bytearray()
    replies = bytearray()
    commands = 0
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        if b != IAC:
            text.append(b)
            i += 1
            continue
        if i + 1 >= n:
            break
        cmd = data[i + 1]
        if cmd == IAC:
            text.append(IAC)
            i += 2
        elif cmd in (DO, DONT, WILL, WONT):
            if i + 2 >= n:
                break
            option = data[i + 2]
            commands += 1
            if cmd == DO:
                replies += bytes([IAC, WONT, option])
            elif cmd == WILL:
                replies += bytes([IAC, DONT, option])
            i += 3
        elif cmd == SB:
            end = data.find(bytes([IAC, SE]), i + 2)
            commands += 1
            i = n if end < 0 else end + 2
        else:
            commands += 1
            i += 2
    return bytes(text), bytes(replies), commands


def is_telnet_negotiation(data: bytes) -> bool:
    return len(data) >= 3 and data[0] == IAC and data[1] in (DO, DONT, WILL, WONT, SB)


# --------------------------------------------------------------------------- TLS


@cache
def tls_client_hello() -> bytes:
    """A ClientHello as OpenSSL would send it (TLS 1.0 to 1.3, every cipher), taken from
    an in-memory handshake: identification only needs the server's first bytes."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def looks_like_tls(data: bytes) -> bool:
    """A TLS record header: handshake (22) or alert (21), protocol major version 3."""
    return (len(data) >= 5 and data[0] in (21, 22) and data[1] == 3 and data[2] <= 4
            and 2 <= struct.unpack(">H", data[3:5])[0] <= 18432)


# --------------------------------------------------------------------------- CoAP


def coap_get(message_id: int, token: bytes, path: tuple[str, ...] = (".well-known",
                                                                       "core")) -> bytes:
    """A confirmable GET (RFC 7252 section 3) with Uri-Path options."""
    if not 0 <= len(token) <= 8:
        raise ValueError("a CoAP token is 0 to 8 bytes")
    out = bytearray([0x40 | len(token), 0x01]) + struct.pack(">H", message_id) + token
    last = 0
    for segment in path:
        raw = segment.encode("utf-8")
        delta = 11 - last
        last = 11
        if len(raw) < 13:
            out.append((delta << 4) | len(raw))
        else:
            out.append((delta << 4) | 13)
            out.append(len(raw) - 13)
        out += raw
    return bytes(out)


@dataclass(frozen=True, slots=True)
class CoapMessage:
    type: int  # 0 CON, 1 NON, 2 ACK, 3 RST
    code_class: int
    code_detail: int
    message_id: int
    token: bytes
    payload: bytes

    @property
    def code(self) -> str:
        return f"{self.code_class}.{self.code_detail:02d}"


def parse_coap(data: bytes) -> CoapMessage | None:
    if len(data) < 4 or data[0] >> 6 != 1:
        return None
    tkl = data[0] & 0x0F
    if tkl > 8 or len(data) < 4 + tkl:
        return None
    code = data[1]
    message_id = struct.unpack(">H", data[2:4])[0]
    token = data[4:4 + tkl]
    i = 4 + tkl
    n = len(data)
    while i < n and data[i] != 0xFF:  # options: skipped, only checked for shape
        delta, length = data[i] >> 4, data[i] & 0x0F
        i += 1
        if delta == 15 or length == 15:
            return None
        i += {13: 1, 14: 2}.get(delta, 0)
        if length == 13:
            if i >= n:
                return None
            length = data[i] + 13
            i += 1
        elif length == 14:
            if i + 2 > n:
                return None
            length = struct.unpack(">H", data[i:i + 2])[0] + 269
            i += 2
        i += length
        if i > n:
            return None
    payload = data[i + 1:] if i < n else b""
    return CoapMessage(type=(data[0] >> 4) & 0x03, code_class=code >> 5,
                       code_detail=code & 0x1F, message_id=message_id, token=token,
                       payload=payload[:4096])
