"""A tiny strict DER reader used to check what iotsec encodes (independent of iotsec.pki.der)."""

from __future__ import annotations


class DerError(ValueError):
    pass


def read_tlv(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """Read one TLV at ``pos``; return ``(tag, content, next_pos)``. Enforces DER lengths."""
    if pos + 2 > len(data):
        raise DerError("truncated header")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("high tag numbers are not used here")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        size = first
    else:
        count = first & 0x7F
        if count == 0:
            raise DerError("indefinite length is not DER")
        if pos + count > len(data):
            raise DerError("truncated length")
        octets = data[pos : pos + count]
        if octets[0] == 0:
            raise DerError("length has a leading zero octet")
        size = int.from_bytes(octets, "big")
        if size < 0x80:
            raise DerError("long form used for a short length")
        pos += count
    if pos + size > len(data):
        raise DerError("content runs past the end")
    return tag, data[pos : pos + size], pos + size


def read_one(data: bytes) -> tuple[int, bytes]:
    """Read exactly one TLV that spans all of ``data``."""
    tag, content, end = read_tlv(data)
    if end != len(data):
        raise DerError("trailing data")
    return tag, content


def children(content: bytes) -> list[tuple[int, bytes]]:
    """The TLVs inside a constructed value's content octets."""
    out = []
    pos = 0
    while pos < len(content):
        tag, inner, pos = read_tlv(content, pos)
        out.append((tag, inner))
    return out


def decode_integer(data: bytes) -> int:
    """Decode a whole DER INTEGER TLV, refusing non-minimal encodings."""
    tag, content = read_one(data)
    if tag != 0x02:
        raise DerError(f"tag {tag:#x} is not INTEGER")
    if not content:
        raise DerError("empty INTEGER")
    if len(content) > 1 and (
        (content[0] == 0x00 and content[1] < 0x80) or (content[0] == 0xFF and content[1] >= 0x80)
    ):
        raise DerError("INTEGER is not minimally encoded")
    return int.from_bytes(content, "big", signed=True)
