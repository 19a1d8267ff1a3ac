"""Block-wise transfer (RFC 7959): the Block1/Block2 option values, and the bounded
reassembly of a request body sent in Block1 blocks (pure).

A body is accepted only in order (block 0, 1, 2, ... of one size, as RFC 7959 2.5 lets a
server require), and only up to :data:`MAX_BODY` bytes: a block past the limit is answered
4.13 Request Entity Too Large with Size1, a block out of order 4.08 Request Entity
Incomplete. BERT (SZX 7) is for CoAP over TCP only and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from iotsec.coap.message import Code, decode_uint, encode_uint
from iotsec.errors import CoapMessageError, CoapRequestError

__all__ = ["MAX_BODY", "Assembly", "Block", "parse_block"]

#: The largest body reassembled from Block1 blocks.
MAX_BODY = 64 * 1024
#: The largest block this endpoint sends or takes (SZX 6: 1024 bytes).
MAX_SZX = 6


@dataclass(frozen=True, slots=True)
class Block:
    """One Block1/Block2 value: block number, more flag, size exponent (size 2**(szx+4))."""

    num: int
    more: bool
    szx: int

    def __post_init__(self) -> None:
        if not 0 <= self.num < (1 << 20) or not 0 <= self.szx <= MAX_SZX:
            raise CoapRequestError("a block option out of range", Code.BAD_OPTION)

    @property
    def size(self) -> int:
        return 16 << self.szx

    def encode(self) -> bytes:
        return encode_uint((self.num << 4) | (int(self.more) << 3) | self.szx)


def parse_block(value: bytes) -> Block:
    """A Block1/Block2 option value (at most 3 bytes); SZX 7 (BERT) is refused."""
    try:
        raw = decode_uint(value, 3)
    except CoapMessageError as exc:
        raise CoapRequestError(str(exc), Code.BAD_OPTION) from None
    szx = raw & 0x07
    if szx == 7:
        raise CoapRequestError("BERT blocks (SZX 7) are for CoAP over TCP", Code.BAD_OPTION)
    return Block(raw >> 4, bool(raw & 0x08), szx)


@dataclass(slots=True)
class Assembly:
    """A request body arriving in Block1 blocks."""

    szx: int
    limit: int = MAX_BODY
    body: bytearray = field(default_factory=bytearray)
    next_num: int = 0

    def add(self, block: Block, payload: bytes) -> bool:
        """Take the next block; True when it was the last one. Raises
        :class:`CoapRequestError` with 4.08 (out of order, wrong size) or 4.13 (too large)."""
        if block.num != self.next_num or block.szx != self.szx:
            raise CoapRequestError(f"block {block.num} of size {block.size} where block "
                                   f"{self.next_num} of size {16 << self.szx} was expected",
                                   Code.REQUEST_ENTITY_INCOMPLETE)
        if block.more and len(payload) != block.size:
            raise CoapRequestError("a block before the last one is not full",
                                   Code.REQUEST_ENTITY_INCOMPLETE)
        if len(payload) > block.size:
            raise CoapRequestError("a block longer than its size", Code.BAD_REQUEST)
        if len(self.body) + len(payload) > self.limit:
            raise CoapRequestError(f"a body over {self.limit} bytes",
                                   Code.REQUEST_ENTITY_TOO_LARGE)
        self.body += payload
        self.next_num += 1
        return not block.more
