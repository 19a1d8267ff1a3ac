"""A minimal, strict DER encoder for the X.509 structures iotsec emits.

iotsec encodes its own TBSCertificate and TBSCertList so that the signature can come from
any ``Signer`` (a file key today, a PKCS#11 token later) and so that a CRL for a million
revoked certificates is a byte join rather than a million Python objects. Only the small
subset of DER that RFC 5280 structures need is here; everything produced is parsed back
by pyca/cryptography and OpenSSL in the tests. :func:`element` is the one reader of an
element's header, for the few places that walk DER themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache

__all__ = [
    "BIT_STRING", "BOOLEAN", "ENUMERATED", "GENERALIZED_TIME", "IA5_STRING", "INTEGER", "NULL",
    "OBJECT_IDENTIFIER", "OCTET_STRING", "SEQUENCE", "SET", "UTC_TIME", "UTF8_STRING",
    "bit_string", "boolean", "element", "enumerated", "epoch_time", "explicit", "ia5_string",
    "implicit_primitive", "integer", "length", "null", "octet_string", "oid", "sequence", "set_of",
    "time", "tlv", "utf8_string"
]

# Universal tags.
BOOLEAN = 0x01
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
ENUMERATED = 0x0A
UTF8_STRING = 0x0C
SEQUENCE = 0x30
SET = 0x31
IA5_STRING = 0x16
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18


def length(n: int) -> bytes:
    """Definite-form length octets (X.690 8.1.3), shortest form as DER requires."""
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def element(data: bytes, pos: int, end: int, *, minimal: bool,
            error: Callable[[str], Exception]) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the element at ``pos``, which must end by
    ``end``: a one-byte tag and a definite length of at most four octets. ``minimal``
    refuses a length not in its shortest form, as DER requires (a reader that only
    classifies what it is given lets BER's longer forms pass). Each refusal is raised as
    ``error(message)``, so every reader keeps its own error."""
    if end - pos < 2:
        raise error("truncated DER element")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise error("multi-byte DER tags are not supported")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        size = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or end - pos < count:
            raise error("invalid DER length")
        size = int.from_bytes(data[pos:pos + count], "big")
        if minimal and (size < 0x80 or data[pos] == 0):
            raise error("non-minimal DER length")
        pos += count
    if size > end - pos:
        raise error("a DER element runs past the end of its container")
    return tag, pos, pos + size


def tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + length(len(content)) + content


def sequence(*parts: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(parts))


def set_of(*parts: bytes) -> bytes:
    # DER sorts SET OF elements by their encodings (X.690 11.6).
    return tlv(SET, b"".join(sorted(parts)))


def integer(value: int) -> bytes:
    """Two's-complement INTEGER in the minimum number of octets."""
    size = (value.bit_length() + 8) // 8 if value >= 0 else ((-value - 1).bit_length() + 8) // 8
    return tlv(INTEGER, value.to_bytes(max(size, 1), "big", signed=True))


def enumerated(value: int) -> bytes:
    return tlv(ENUMERATED, integer(value)[2:])


def boolean(value: bool) -> bytes:
    return tlv(BOOLEAN, b"\xff" if value else b"\x00")


def null() -> bytes:
    return b"\x05\x00"


def octet_string(data: bytes) -> bytes:
    return tlv(OCTET_STRING, data)


def bit_string(data: bytes, unused_bits: int = 0) -> bytes:
    return tlv(BIT_STRING, bytes((unused_bits,)) + data)


@lru_cache(maxsize=256)
def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2 or min(arcs) < 0 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39):
        raise ValueError(f"invalid object identifier {dotted!r}")
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(OBJECT_IDENTIFIER, bytes(body))


def utf8_string(text: str) -> bytes:
    return tlv(UTF8_STRING, text.encode("utf-8"))


def ia5_string(text: str) -> bytes:
    return tlv(IA5_STRING, text.encode("ascii"))


def explicit(number: int, inner: bytes) -> bytes:
    """[number] EXPLICIT: a constructed context-specific tag around ``inner``."""
    return tlv(0xA0 | number, inner)


def implicit_primitive(number: int, content: bytes) -> bytes:
    """[number] IMPLICIT over a primitive type: context tag, the type's content octets."""
    return tlv(0x80 | number, content)


def time(moment: datetime) -> bytes:
    """RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050, always Zulu,
    always with seconds and never with fractions."""
    moment = moment.astimezone(UTC)
    year = moment.year
    # Formatted from the fields (strftime costs three times as much, and pads no year
    # below 1000 to the four digits GeneralizedTime has).
    rest = (moment.month, moment.day, moment.hour, moment.minute, moment.second)
    if 1950 <= year <= 2049:
        return tlv(UTC_TIME, b"%02d%02d%02d%02d%02d%02dZ" % (year % 100, *rest))
    return tlv(GENERALIZED_TIME, b"%04d%02d%02d%02d%02d%02dZ" % (year, *rest))


def epoch_time(seconds: int) -> bytes:
    return time(datetime.fromtimestamp(seconds, UTC))
