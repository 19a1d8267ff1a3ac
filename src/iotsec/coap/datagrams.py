"""DTLS records packed into datagrams (RFC 6347 4.1.1): what a DTLS stack writes to a
memory BIO is a run of records; each datagram sent carries whole records, at most ``mtu``
bytes unless one record alone is longer (pure)."""

from __future__ import annotations

__all__ = ["RECORD_HEADER", "pack_records"]

#: type (1), version (2), epoch (2), sequence number (6), length (2).
RECORD_HEADER = 13


def pack_records(data: bytes, mtu: int) -> list[bytes]:
    """Split ``data`` into DTLS records and group them into datagrams of at most ``mtu``
    bytes. A trailing fragment shorter than a record header is sent as it is."""
    records, pos = [], 0
    while pos + RECORD_HEADER <= len(data):
        end = pos + RECORD_HEADER + int.from_bytes(data[pos + 11:pos + 13], "big")
        records.append(data[pos:end])
        pos = end
    if pos < len(data):
        records.append(data[pos:])
    datagrams: list[bytes] = []
    current = b""
    for record in records:
        if current and len(current) + len(record) > mtu:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams
