"""The CoAP message format (RFC 7252 section 3): a strict, bounded parser and its encoder.

A datagram is refused before it is read whole when it is longer than :data:`MAX_MESSAGE`
(RFC 7252 4.6 suggests 1152 bytes as the upper bound of a message); it may carry at most
:data:`MAX_OPTIONS` options. Everything RFC 7252 calls a message format error raises
:class:`~iotsec.errors.CoapMessageError`: version other than 1, a token length of 9-15, an
option delta or length nibble of 15 outside the payload marker, an option running past the
end, a payload marker followed by nothing, an Empty message carrying anything.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from iotsec.errors import CoapMessageError

__all__ = [
    "MAX_MESSAGE", "MAX_OPTIONS", "Code", "Message", "MessageType", "Option", "code_text",
    "decode_uint",
    "encode_uint", "parse_header", "parse_message"
]

#: Largest datagram parsed (RFC 7252 4.6: 1152 bytes when nothing is known of the path).
MAX_MESSAGE = 1152
#: Most options in one message.
MAX_OPTIONS = 40
_PAYLOAD_MARKER = 0xFF


class MessageType(enum.IntEnum):
    CON = 0
    NON = 1
    ACK = 2
    RST = 3


class Option(enum.IntEnum):
    """The option numbers this gateway understands (RFC 7252 5.10, RFC 7641, RFC 7959,
    RFC 8613, RFC 9668)."""

    IF_MATCH = 1
    URI_HOST = 3
    ETAG = 4
    IF_NONE_MATCH = 5
    OBSERVE = 6
    URI_PORT = 7
    LOCATION_PATH = 8
    OSCORE = 9
    URI_PATH = 11
    CONTENT_FORMAT = 12
    MAX_AGE = 14
    URI_QUERY = 15
    ACCEPT = 17
    EDHOC = 21
    LOCATION_QUERY = 20
    BLOCK2 = 23
    BLOCK1 = 27
    SIZE2 = 28
    PROXY_URI = 35
    PROXY_SCHEME = 39
    SIZE1 = 60


class Code(enum.IntEnum):
    """Method and response codes as one byte: class << 5 | detail."""

    EMPTY = 0x00
    GET = 0x01
    POST = 0x02
    PUT = 0x03
    DELETE = 0x04
    CREATED = 0x41
    DELETED = 0x42
    VALID = 0x43
    CHANGED = 0x44
    CONTENT = 0x45
    CONTINUE = 0x5F
    BAD_REQUEST = 0x80
    UNAUTHORIZED = 0x81
    BAD_OPTION = 0x82
    FORBIDDEN = 0x83
    NOT_FOUND = 0x84
    METHOD_NOT_ALLOWED = 0x85
    REQUEST_ENTITY_INCOMPLETE = 0x88
    REQUEST_ENTITY_TOO_LARGE = 0x8D
    INTERNAL_SERVER_ERROR = 0xA0
    NOT_IMPLEMENTED = 0xA1
    SERVICE_UNAVAILABLE = 0xA3


def code_text(code: int) -> str:
    """``c.dd`` as RFC 7252 writes codes (``2.04``)."""
    return f"{code >> 5}.{code & 0x1F:02d}"


@dataclass(frozen=True, slots=True)
class Message:
    """One CoAP message. ``options`` are (number, value) pairs in number order."""

    type: MessageType
    code: int
    mid: int
    token: bytes = b""
    options: tuple[tuple[int, bytes], ...] = ()
    payload: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 0xFF or not 0 <= self.mid <= 0xFFFF:
            raise CoapMessageError("CoAP code or message id out of range")
        if len(self.token) > 8:
            raise CoapMessageError("a CoAP token is at most 8 bytes")
        if len(self.options) > MAX_OPTIONS:
            raise CoapMessageError(f"more than {MAX_OPTIONS} CoAP options")

    @property
    def is_request(self) -> bool:
        return 1 <= self.code <= 31

    def values(self, number: int) -> list[bytes]:
        """The values of every instance of option ``number``, in order."""
        return [v for n, v in self.options if n == number]

    def first(self, number: int) -> bytes | None:
        for n, v in self.options:
            if n == number:
                return v
        return None

    def encode(self) -> bytes:
        """The message on the wire; options are written in number order."""
        out = bytearray(((1 << 6) | (int(self.type) << 4) | len(self.token),
                         self.code, self.mid >> 8, self.mid & 0xFF))
        out += self.token
        previous = 0
        for number, value in sorted(self.options, key=lambda o: o[0]):
            delta, length = number - previous, len(value)
            d_nib, d_ext = _nibble(delta)
            l_nib, l_ext = _nibble(length)
            out.append((d_nib << 4) | l_nib)
            out += d_ext + l_ext
            out += value
            previous = number
        if self.payload:
            out.append(_PAYLOAD_MARKER)
            out += self.payload
        return bytes(out)


def _nibble(value: int) -> tuple[int, bytes]:
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes((value - 13,))
    if value < 65805:
        return 14, (value - 269).to_bytes(2, "big")
    raise CoapMessageError("CoAP option number or length too large")


def encode_uint(value: int) -> bytes:
    """An unsigned option value in the fewest bytes (zero is the empty string)."""
    if value < 0:
        raise CoapMessageError("a CoAP uint option cannot be negative")
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def decode_uint(value: bytes, limit: int = 4) -> int:
    """An unsigned option value of at most ``limit`` bytes."""
    if len(value) > limit:
        raise CoapMessageError(f"a CoAP uint option of {len(value)} bytes (at most {limit})")
    return int.from_bytes(value, "big")


def parse_header(data: bytes, limit: int = MAX_MESSAGE) -> tuple[MessageType, int, int, bytes]:
    """Type, code, message id and token: enough to answer a message whose options are bad
    (RFC 7252 4.2: a CON with a format error is answered with a Reset)."""
    if len(data) > limit:
        raise CoapMessageError(f"CoAP message of {len(data)} bytes (at most {limit})")
    if len(data) < 4:
        raise CoapMessageError("CoAP message shorter than its 4-byte header")
    first = data[0]
    if first >> 6 != 1:
        raise CoapMessageError(f"CoAP version {first >> 6} (only 1 exists)")
    tkl = first & 0x0F
    if tkl > 8:
        raise CoapMessageError(f"CoAP token length {tkl} (at most 8)")
    if len(data) < 4 + tkl:
        raise CoapMessageError("CoAP message shorter than its token")
    return (MessageType((first >> 4) & 0x03), data[1], (data[2] << 8) | data[3],
            bytes(data[4:4 + tkl]))


def _extended(data: bytes, pos: int, nib: int, what: str) -> tuple[int, int]:
    if nib < 13:
        return nib, pos
    if nib == 13:
        if pos >= len(data):
            raise CoapMessageError(f"CoAP option {what} runs past the end")
        return data[pos] + 13, pos + 1
    if nib == 14:
        if pos + 2 > len(data):
            raise CoapMessageError(f"CoAP option {what} runs past the end")
        return ((data[pos] << 8) | data[pos + 1]) + 269, pos + 2
    raise CoapMessageError(f"CoAP option {what} nibble 15 is reserved")


def parse_message(data: bytes, limit: int = MAX_MESSAGE) -> Message:
    """Parse one datagram; raise :class:`CoapMessageError` for anything RFC 7252 refuses
    or over this parser's limits (``limit`` bytes: a datagram's by default, more for an
    OSCORE plaintext whose message was reassembled from outer blocks, already bounded)."""
    mtype, code, mid, token = parse_header(data, limit)
    pos = 4 + len(token)
    if code == Code.EMPTY:
        if token or pos != len(data):
            raise CoapMessageError("a CoAP Empty message carries nothing after its header")
        return Message(mtype, code, mid)
    if (code >> 5) in (1, 6, 7):
        raise CoapMessageError(f"CoAP code {code_text(code)} is reserved")
    options: list[tuple[int, bytes]] = []
    number = 0
    end = len(data)
    while pos < end:
        byte = data[pos]
        pos += 1
        if byte == _PAYLOAD_MARKER:
            if pos == end:
                raise CoapMessageError("CoAP payload marker followed by no payload")
            return Message(mtype, code, mid, token, tuple(options), bytes(data[pos:]))
        delta, pos = _extended(data, pos, byte >> 4, "delta")
        length, pos = _extended(data, pos, byte & 0x0F, "length")
        if pos + length > end:
            raise CoapMessageError("CoAP option value runs past the end")
        if len(options) == MAX_OPTIONS:
            raise CoapMessageError(f"more than {MAX_OPTIONS} CoAP options")
        number += delta
        options.append((number, bytes(data[pos:pos + length])))
        pos += length
    return Message(mtype, code, mid, token, tuple(options))
