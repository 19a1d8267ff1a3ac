"""Strict CBOR (RFC 8949) for COSE: the subset COSE messages use, and nothing more.

The decoder accepts only well-formed items in preferred serialization: unsigned and negative
integers of at most 64 bits, byte and text strings, arrays, maps whose keys are integers or
text (no duplicates), ``false``/``true``/``null``, and the tags the caller allows at the top
level. Indefinite lengths, floats, other simple values, nested tags, over-long integer
encodings and trailing bytes are refused. Every declared length is checked against the bytes
that remain before anything is sliced or allocated, nesting is bounded, and so is the number
of items, so a few hostile bytes can never claim a large allocation or a deep recursion.

The encoder writes preferred serialization; it is what COSE's deterministic structures
(``Enc_structure``, ``Sig_structure``, ``COSE_KDF_Context``) need.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, NamedTuple

from iotsec.errors import CborError

__all__ = [
    "MAX_DEPTH", "MAX_ITEMS", "Tag", "bstr", "dumps", "head", "loads", "loads_first",
    "uint_or_nint"
]

#: Default bounds of :func:`loads`; callers tighten them for what they expect.
MAX_DEPTH = 8
MAX_ITEMS = 1024
_U64 = 1 << 64


class Tag(NamedTuple):
    """A tagged item: ``tag`` number and its ``value``."""

    tag: int
    value: Any


def head(major: int, argument: int) -> bytes:
    """The initial byte(s) of an item of ``major`` type with ``argument``, shortest form."""
    m = major << 5
    if argument < 24:
        return bytes((m | argument,))
    if argument < 0x100:
        return bytes((m | 24, argument))
    if argument < 0x10000:
        return bytes((m | 25,)) + argument.to_bytes(2, "big")
    if argument < 0x100000000:
        return bytes((m | 26,)) + argument.to_bytes(4, "big")
    if argument < _U64:
        return bytes((m | 27,)) + argument.to_bytes(8, "big")
    raise CborError("an integer does not fit in 64 bits")


def bstr(data: bytes) -> bytes:
    """``data`` as an encoded byte string."""
    return head(2, len(data)) + data


def uint_or_nint(value: int) -> bytes:
    return head(0, value) if value >= 0 else head(1, -1 - value)


def dumps(value: Any) -> bytes:
    """Encode ``value`` (int, bytes, str, list/tuple, dict, bool, None, :class:`Tag`)."""
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def _encode(value: Any, out: bytearray, depth: int) -> None:
    if depth > 64:
        raise CborError("the value is nested too deeply to encode")
    if value is None:
        out.append(0xF6)
    elif value is True:
        out.append(0xF5)
    elif value is False:
        out.append(0xF4)
    elif isinstance(value, int):
        out += uint_or_nint(value)
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        out += head(2, len(data))
        out += data
    elif isinstance(value, str):
        data = value.encode("utf-8")
        out += head(3, len(data))
        out += data
    elif isinstance(value, Tag):
        out += head(6, value.tag)
        _encode(value.value, out, depth + 1)
    elif isinstance(value, list | tuple):
        out += head(4, len(value))
        for item in value:
            _encode(item, out, depth + 1)
    elif isinstance(value, dict):
        out += head(5, len(value))
        for key, item in value.items():
            if not isinstance(key, int | str) or isinstance(key, bool):
                raise CborError("map keys must be integers or text")
            _encode(key, out, depth + 1)
            _encode(item, out, depth + 1)
    else:
        raise CborError(f"cannot encode a {type(value).__name__} as CBOR")


def loads(data: bytes, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS,
          tags: Collection[int] = ()) -> Any:
    """Decode exactly one item from ``data``; raise :class:`CborError` for anything else.

    ``tags`` lists the tag numbers allowed on the top-level item (none by default).
    """
    if not isinstance(data, bytes):
        raise CborError("CBOR input must be bytes")
    decoder = _Decoder(data, max_depth, max_items, tags)
    value, pos = decoder.item(0, 0)
    if pos != len(data):
        raise CborError(f"{len(data) - pos} bytes follow the CBOR item")
    return value


def loads_first(data: bytes, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS
                ) -> tuple[Any, int]:
    """Decode the first item of ``data`` (a CBOR sequence) and say how many bytes it took."""
    if not isinstance(data, bytes):
        raise CborError("CBOR input must be bytes")
    value, pos = _Decoder(data, max_depth, max_items, ()).item(0, 0)
    return value, pos


class _Decoder:
    __slots__ = ("data", "end", "items", "max_depth", "tags")

    def __init__(self, data: bytes, max_depth: int, max_items: int,
                 tags: Collection[int]) -> None:
        self.data = data
        self.end = len(data)
        self.max_depth = max_depth
        self.items = max_items
        self.tags = tags

    def _argument(self, pos: int, info: int) -> tuple[int, int]:
        """The argument encoded after an initial byte with additional information ``info``
        (24-27), in shortest form, and the position after it."""
        if info > 27:
            if info == 31:
                raise CborError("indefinite-length items are not accepted")
            raise CborError("reserved additional information in the CBOR data")
        size = 1 << (info - 24)
        stop = pos + size
        if stop > self.end:
            raise CborError("the CBOR data ends in the middle of an item")
        arg = int.from_bytes(self.data[pos:stop], "big")
        if arg < (24 if size == 1 else 1 << (4 * size)):
            raise CborError("an integer or length is not in its shortest form")
        return arg, stop

    def item(self, pos: int, depth: int) -> tuple[Any, int]:
        data = self.data
        if pos >= self.end:
            raise CborError("the CBOR data ends in the middle of an item")
        self.items -= 1
        if self.items < 0:
            raise CborError("the CBOR data has too many items")
        initial = data[pos]
        major = initial >> 5
        info = initial & 0x1F
        pos += 1
        if major == 7:
            if info == 20:
                return False, pos
            if info == 21:
                return True, pos
            if info == 22:
                return None, pos
            raise CborError("floats, undefined and other simple values are not accepted")
        if info < 24:
            arg = info
        else:
            arg, pos = self._argument(pos, info)

        if major == 2 or major == 3:
            stop = pos + arg
            if stop > self.end:
                raise CborError("a string is longer than the CBOR data")
            raw = data[pos:stop]
            if major == 2:
                return raw, stop
            try:
                return raw.decode("utf-8"), stop
            except UnicodeDecodeError:
                raise CborError("a text string is not valid UTF-8") from None
        if major == 0:
            return arg, pos
        if major == 1:
            return -1 - arg, pos
        if depth >= self.max_depth:
            raise CborError("the CBOR data is nested too deeply")
        if major == 4:
            # Every item takes at least one byte: a longer array cannot be in the data.
            if arg > self.end - pos:
                raise CborError("an array is longer than the CBOR data")
            out = []
            for _ in range(arg):
                value, pos = self._leaf_or_item(pos, depth + 1)
                out.append(value)
            return out, pos
        if major == 5:
            if arg > (self.end - pos) // 2:
                raise CborError("a map is longer than the CBOR data")
            result: dict[Any, Any] = {}
            for _ in range(arg):
                key, pos = self._leaf_or_item(pos, depth + 1)
                if type(key) is not int and type(key) is not str:
                    raise CborError("map keys must be integers or text")
                if key in result:
                    raise CborError("a map has a duplicate key")
                result[key], pos = self._leaf_or_item(pos, depth + 1)
            return result, pos
        # major == 6: a tag. Only the caller's tags, only on the outermost item.
        if depth != 0 or arg not in self.tags:
            raise CborError(f"CBOR tag {arg} is not accepted here")
        value, pos = self.item(pos, depth + 1)
        return Tag(arg, value), pos

    def _leaf_or_item(self, pos: int, depth: int) -> tuple[Any, int]:
        """:meth:`item`, with the common leaves (integers, byte strings) decoded inline: the
        same checks, without the generic dispatch."""
        if pos < self.end:
            initial = self.data[pos]
            if initial < 0x5C:  # major 0, 1 or 2 with a definite argument
                self.items -= 1
                if self.items < 0:
                    raise CborError("the CBOR data has too many items")
                info = initial & 0x1F
                pos += 1
                if info < 24:
                    arg = info
                else:
                    arg, pos = self._argument(pos, info)
                if initial < 0x20:
                    return arg, pos
                if initial < 0x40:
                    return -1 - arg, pos
                stop = pos + arg
                if stop > self.end:
                    raise CborError("a string is longer than the CBOR data")
                return self.data[pos:stop], stop
        return self.item(pos, depth)
