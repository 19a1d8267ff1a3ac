"""COSE_Encrypt0 and COSE_Sign1 messages as iotsec's protected payloads use them (RFC 9052),
taken apart strictly and within size limits; nothing here verifies or decrypts.

:func:`parse_canonical` reads the one layout :func:`iotsec.protect.payload.seal` writes
without the general CBOR decoder (the common case); :func:`parse_generic` reads every
layout and refuses anything else with a :class:`~iotsec.errors.PayloadMalformedError`.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from iotsec.errors import CborError, PayloadMalformedError
from iotsec.protect import cbor
from iotsec.protect.pairing import Algorithm

__all__ = [
    "H_ALG", "H_IV", "H_KID", "IV_HEADER", "IV_LENGTH", "MAX_PROTECTED_HEADER", "SEQ_LABEL",
    "TAG_ENCRYPT0", "TAG_SIGN1", "Parsed", "parse_canonical", "parse_generic"
]

MAX_PROTECTED_HEADER: Final = 256
IV_LENGTH: Final = 12
TAG_ENCRYPT0: Final = 16
TAG_SIGN1: Final = 18
#: Private-use header label carrying the sender's sequence number.
SEQ_LABEL: Final = -65537
H_ALG: Final = 1
H_KID: Final = 4
H_IV: Final = 5
#: The unprotected header of an Encrypt0 as iotsec writes it: ``{5: h'<12 bytes>'}``.
IV_HEADER: Final = b"\xa1\x05\x4c"


class Parsed(NamedTuple):
    """A COSE message taken apart (nothing verified yet)."""

    kind: str
    alg: int
    kid: bytes
    seq: int
    protected: bytes
    iv: bytes | None
    body: bytes  # ciphertext (Encrypt0) or payload (Sign1)
    signature: bytes | None

    @property
    def algorithm_name(self) -> str:
        try:
            return Algorithm(self.alg).cose_name
        except ValueError:
            return str(self.alg)


def _malformed(message: str) -> PayloadMalformedError:
    return PayloadMalformedError(message)


def _bstr_at(data: bytes, pos: int) -> tuple[int, int] | None:
    """(start, end) of a byte string in preferred serialization at ``pos`` (length < 2**32),
    or ``None``."""
    if pos >= len(data):
        return None
    initial = data[pos]
    if 0x40 <= initial <= 0x57:
        start, size = pos + 1, initial - 0x40
    elif 0x58 <= initial <= 0x5A:
        width = 1 << (initial - 0x58)
        start = pos + 1 + width
        size = int.from_bytes(data[pos + 1:start], "big")
        if start > len(data) or size < (24 if width == 1 else 1 << (4 * width)):
            return None
    else:
        return None
    end = start + size
    return None if end > len(data) else (start, end)


def _uint_at(data: bytes, pos: int) -> tuple[int, int] | None:
    """An unsigned integer in preferred serialization at ``pos``, and the position after."""
    if pos >= len(data):
        return None
    initial = data[pos]
    if initial < 0x18:
        return initial, pos + 1
    if initial > 0x1B:
        return None
    width = 1 << (initial - 0x18)
    stop = pos + 1 + width
    value = int.from_bytes(data[pos + 1:stop], "big")
    if stop > len(data) or value < (24 if width == 1 else 1 << (4 * width)):
        return None
    return value, stop


_SEQ_KEY: Final = cbor.uint_or_nint(SEQ_LABEL)


def parse_canonical(m: bytes) -> Parsed | None:
    """The layout :func:`~iotsec.protect.payload.seal` writes (the common case), read
    without the general decoder: ``{1: alg, 4: kid, -65537: seq}`` protected; ``{5: iv}``
    or ``{}`` unprotected.

    Returns ``None`` for any other layout (and for anything malformed), which
    :func:`parse_generic` then reads or refuses; for every input this function accepts, it
    returns exactly what :func:`parse_generic` returns (a test checks this differentially).
    """
    if len(m) < 4 or m[1] != (0x83 if m[0] == 0xD0 else 0x84 if m[0] == 0xD2 else 0):
        return None
    sign1 = m[0] == 0xD2
    span = _bstr_at(m, 2)
    if span is None:
        return None
    p = m[span[0]:span[1]]
    pos = span[1]
    # Protected header: a3 01 <alg> 04 <kid> 3a00010000 <seq>, and nothing after.
    if len(p) < 8 or len(p) > MAX_PROTECTED_HEADER or p[0] != 0xA3 or p[1] != 0x01:
        return None
    first = p[2]
    if first < 0x18:
        alg, i = first, 3
    elif 0x20 <= first < 0x38:
        alg, i = 0x1F - first, 3
    elif first == 0x18 and p[3] >= 24:
        alg, i = p[3], 4
    else:
        return None
    if p[i] != 0x04 or not 0x41 <= p[i + 1] <= 0x57:
        return None
    kid_end = i + 2 + p[i + 1] - 0x40
    kid = p[i + 2:kid_end]
    if p[kid_end:kid_end + 5] != _SEQ_KEY:
        return None
    seq_at = _uint_at(p, kid_end + 5)
    if seq_at is None or seq_at[1] != len(p):
        return None
    if sign1:
        if m[pos:pos + 1] != b"\xa0":
            return None
        body = _bstr_at(m, pos + 1)
        if body is None:
            return None
        sig = _bstr_at(m, body[1])
        if sig is None or sig[1] != len(m):
            return None
        return Parsed("sign1", alg, kid, seq_at[0], p, None, m[body[0]:body[1]],
                      m[sig[0]:sig[1]])
    if m[pos:pos + 3] != IV_HEADER:
        return None
    iv = m[pos + 3:pos + 15]
    body = _bstr_at(m, pos + 15)
    if body is None or body[1] != len(m) or len(iv) != IV_LENGTH:
        return None
    return Parsed("encrypt0", alg, kid, seq_at[0], p, iv, m[body[0]:body[1]], None)


def parse_generic(message: bytes) -> Parsed:
    """:func:`~iotsec.protect.payload.parse` through the general CBOR decoder (every layout,
    every error)."""
    try:
        outer = cbor.loads(message, max_depth=3, max_items=64,
                           tags=(TAG_ENCRYPT0, TAG_SIGN1))
    except CborError as exc:
        raise _malformed(f"not a COSE message: {exc}") from None
    if not isinstance(outer, cbor.Tag):
        raise _malformed("the message is not a tagged COSE_Encrypt0 (16) or COSE_Sign1 (18)")
    items = outer.value
    sign1 = outer.tag == TAG_SIGN1
    kind = "sign1" if sign1 else "encrypt0"
    if not isinstance(items, list) or len(items) != (4 if sign1 else 3):
        raise _malformed(f"a COSE_{'Sign1' if sign1 else 'Encrypt0'} is an array of "
                         f"{4 if sign1 else 3} items")
    protected, unprotected, body = items[0], items[1], items[2]
    if not isinstance(protected, bytes) or not isinstance(unprotected, dict):
        raise _malformed("the headers are not a protected bstr and an unprotected map")
    if not isinstance(body, bytes):
        raise _malformed("the " + ("payload" if sign1 else "ciphertext") +
                         " is missing or not a byte string (detached content is not accepted)")
    signature = items[3] if sign1 else None
    if sign1 and not isinstance(signature, bytes):
        raise _malformed("the signature is not a byte string")
    if not protected or len(protected) > MAX_PROTECTED_HEADER:
        raise _malformed("the protected header is empty or too large")
    try:
        header = cbor.loads(protected, max_depth=2, max_items=32)
    except CborError as exc:
        raise _malformed(f"the protected header is not valid CBOR: {exc}") from None
    if not isinstance(header, dict):
        raise _malformed("the protected header is not a map")
    return Parsed(kind, *_headers(header, unprotected, sign1), protected,
                  _iv(unprotected, sign1), body, signature)


def _headers(header: dict[Any, Any], unprotected: dict[Any, Any],
             sign1: bool) -> tuple[int, bytes, int]:
    allowed_unprotected = {H_KID} if sign1 else {H_KID, H_IV}
    unknown = [k for k in header if k not in (H_ALG, H_KID, SEQ_LABEL)]
    unknown += [k for k in unprotected if k not in allowed_unprotected]
    if unknown:
        raise _malformed(f"unsupported header parameter {unknown[0]!r}")
    alg, seq = header.get(H_ALG), header.get(SEQ_LABEL)
    if type(alg) is not int:
        raise _malformed("the protected header has no integer algorithm (1)")
    if type(seq) is not int or seq < 0:
        raise _malformed("the protected header has no sequence number")
    if H_KID in header and H_KID in unprotected:
        raise _malformed("the kid appears in both header buckets")
    kid = header.get(H_KID, unprotected.get(H_KID))
    if not isinstance(kid, bytes) or not 1 <= len(kid) <= 32:
        raise _malformed("the message has no kid of 1 to 32 bytes")
    return alg, kid, seq


def _iv(unprotected: dict[Any, Any], sign1: bool) -> bytes | None:
    if sign1:
        return None
    iv = unprotected.get(H_IV)
    if not isinstance(iv, bytes) or len(iv) != IV_LENGTH:
        raise _malformed(f"the unprotected header has no {IV_LENGTH}-byte IV (5)")
    return iv
