"""Block-wise transfer (RFC 7959): the Block1/Block2 option values, and the bounded
reassembly of a request body sent in Block1 blocks (pure).

A body is accepted only in order (block 0, 1, 2, ... of one size, as RFC 7959 2.5 lets a
server require), and only up to :data:`MAX_BODY` bytes: a block past the limit is answered
4.13 Request Entity Too Large with Size1, a block out of order 4.08 Request Entity
Incomplete. BERT (SZX 7) is for CoAP over TCP only and is refused.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from iotsec.coap.message import Code, Message, Option, decode_uint, encode_uint
from iotsec.errors import CoapMessageError, CoapRequestError

__all__ = ["MAX_ASSEMBLIES", "MAX_BODY", "Assemblies", "Assembly", "Block", "block1_of",
           "parse_block"]

#: The largest body reassembled from Block1 blocks.
MAX_BODY = 64 * 1024
#: The most bodies one peer may be sending in Block1 blocks at once.
MAX_ASSEMBLIES = 4
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


def block1_of(msg: Message, limit: int = MAX_BODY) -> tuple[Block, Message]:
    """The Block1 block of a request, and the request without its Block1 and Size1
    options. A request without Block1 is a 4.02; a Size1 that announces a body over
    ``limit`` bytes is refused at once with 4.13."""
    raw = msg.first(Option.BLOCK1)
    if raw is None:
        raise CoapRequestError("a request without a Block1 option", Code.BAD_OPTION)
    block = parse_block(raw)
    size1 = msg.first(Option.SIZE1)
    try:
        announced = None if size1 is None else decode_uint(size1, 4)
    except CoapMessageError as exc:
        raise CoapRequestError(str(exc), Code.BAD_OPTION) from None
    if announced is not None and announced > limit:
        raise CoapRequestError(f"a body over {limit} bytes", Code.REQUEST_ENTITY_TOO_LARGE)
    bare = Message(msg.type, msg.code, msg.mid, msg.token,
                   tuple((n, v) for n, v in msg.options
                         if n not in (Option.BLOCK1, Option.SIZE1)), msg.payload)
    return block, bare


K = TypeVar("K", bound=Hashable)


class Assemblies(Generic[K]):
    """The bodies being sent in Block1 blocks, by key (a request's method and topic, or a
    peer's address and token): at most ``most`` at once, the oldest dropped first, each at
    most ``limit`` bytes."""

    def __init__(self, most: int = MAX_ASSEMBLIES, limit: int = MAX_BODY) -> None:
        self.most = most
        self.limit = limit
        self._bodies: OrderedDict[K, Assembly] = OrderedDict()

    def __len__(self) -> int:
        return len(self._bodies)

    def start(self, key: K, szx: int) -> None:
        """A new body under ``key`` (its block 0 came, and was allowed): one sent before
        under the same key is dropped."""
        self._bodies.pop(key, None)
        self._bodies[key] = Assembly(szx, self.limit)
        while len(self._bodies) > self.most:
            self._bodies.popitem(last=False)

    def add(self, key: K, block: Block, payload: bytes) -> bytes | None:
        """Take the next block of the body under ``key``: the whole body after its last
        block, else None. A block of a body whose first block was not received is a 4.08;
        a body whose block is refused (see :meth:`Assembly.add`) is dropped."""
        assembly = self._bodies.get(key)
        if assembly is None:
            raise CoapRequestError("a block of a body whose first block was not received",
                                   Code.REQUEST_ENTITY_INCOMPLETE)
        try:
            last = assembly.add(block, payload)
        except CoapRequestError:
            del self._bodies[key]
            raise
        if not last:
            return None
        del self._bodies[key]
        return bytes(assembly.body)
