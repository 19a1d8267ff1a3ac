"""End-to-end payload protection between a device and an application, through any broker.

Messages are COSE (RFC 9052/9053) over CBOR:

* ``COSE_Encrypt0`` (tag 16) with AES-256-GCM (alg 3) or ChaCha20/Poly1305 (alg 24), under
  a pair key from :func:`iotsec.protect.pairing.establish`;
* ``COSE_Sign1`` (tag 18) with ES256 (alg -7) or EdDSA (alg -8), for telemetry that needs
  integrity only.

The protected header is ``{1: alg, 4: kid, -65537: seq}``: the algorithm, the key id and the
sender's sequence number (a private-use label, RFC 9052 section 3.1), all authenticated.
Encrypt0 carries a random 96-bit IV in the unprotected header (label 5): a random IV keeps
AES-GCM safe even when a device loses its counter, which a nonce built from the sequence
number would not. ``external_aad`` (e.g. the MQTT topic) is authenticated but not sent.

The receiver looks the kid up in its :class:`Keyring` (so several keys can be valid while
keys rotate and messages are in flight), checks the algorithm against the key's, checks the
sequence number against the sender's :class:`~iotsec.protect.replay.ReplayWindow`, then
decrypts or verifies, and only then marks the number as seen. Every refusal is its own
:class:`~iotsec.errors.PayloadError` subclass; nothing of the payload is returned unless it
authenticated.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Final, NamedTuple

from cryptography.exceptions import InvalidTag

from iotsec.errors import (
    CborError,
    PayloadAlgorithmError,
    PayloadAuthenticationError,
    PayloadError,
    PayloadKeyError,
    PayloadMalformedError,
    PayloadUnknownKeyError,
)
from iotsec.protect import cbor
from iotsec.protect.pairing import Algorithm, PairKey, SigningKey, VerifyingKey
from iotsec.protect.replay import MAX_SEQ, ReplayWindow, ReplayWindows

#: Largest payload :func:`seal` protects, and largest message :func:`open` parses.
MAX_PAYLOAD: Final = 1024 * 1024
MAX_MESSAGE: Final = MAX_PAYLOAD + 1024
MAX_EXTERNAL_AAD: Final = 64 * 1024
MAX_PROTECTED_HEADER: Final = 256
IV_LENGTH: Final = 12
TAG_ENCRYPT0: Final = 16
TAG_SIGN1: Final = 18
#: Private-use header label carrying the sender's sequence number.
SEQ_LABEL: Final = -65537
H_ALG: Final = 1
H_KID: Final = 4
H_IV: Final = 5

_SEQ_LABEL_BYTES: Final = cbor.uint_or_nint(SEQ_LABEL)
_ENC_PREFIX: Final = b"\x83" + cbor.dumps("Encrypt0")
_SIG_PREFIX: Final = b"\x84" + cbor.dumps("Signature1")
_IV_HEADER: Final = b"\xa1\x05\x4c"  # {5: h'<12 bytes>'}
_EMPTY_BSTR: Final = b"\x40"

OpeningKey = PairKey | VerifyingKey
SealingKey = PairKey | SigningKey


class Opened(NamedTuple):
    """An authenticated message: its payload and who sent it under which key."""

    payload: bytes
    kind: str  # "encrypt0" or "sign1"
    alg: Algorithm
    kid: bytes
    sender_id: str
    recipient_id: str | None  # None for COSE_Sign1 (signed, not addressed)
    seq: int

    def __repr__(self) -> str:
        return (f"Opened({self.kind}, {self.alg.cose_name}, kid={self.kid.hex()}, "
                f"from {self.sender_id}, seq {self.seq}, {len(self.payload)} bytes)")


class Keyring:
    """The keys a receiver accepts, by kid: pair keys (Encrypt0) and verifying keys (Sign1)."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[OpeningKey] = ()) -> None:
        self._keys: dict[bytes, OpeningKey] = {}
        for key in keys:
            self.add(key)

    def add(self, key: OpeningKey) -> None:
        if not isinstance(key, PairKey | VerifyingKey):
            raise PayloadKeyError(f"a keyring holds pair keys and verifying keys, not "
                                  f"{type(key).__name__}")
        present = self._keys.get(key.kid)
        if present is not None and present is not key:
            raise PayloadKeyError(f"the keyring already holds a key with kid {key.kid.hex()}",
                                  hint="retire the old key first, or derive with a new salt")
        self._keys[key.kid] = key

    def retire(self, kid: bytes) -> None:
        """Stop accepting messages under ``kid``."""
        if self._keys.pop(kid, None) is None:
            raise PayloadUnknownKeyError(f"no key with kid {kid.hex()} in the keyring")

    def get(self, kid: bytes) -> OpeningKey:
        key = self._keys.get(kid)
        if key is None:
            raise PayloadUnknownKeyError(f"no key with kid {kid.hex()}")
        return key

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __iter__(self) -> Iterator[OpeningKey]:
        return iter(list(self._keys.values()))

    def __len__(self) -> int:
        return len(self._keys)


def _check_common(payload: bytes, seq: int, external_aad: bytes) -> None:
    if not isinstance(payload, _BYTES_LIKE) or len(payload) > MAX_PAYLOAD:
        raise PayloadError(f"a payload is bytes of at most {MAX_PAYLOAD} bytes")
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise PayloadError("the sequence number must be an integer from 0 to 2**64 - 1")
    if not isinstance(external_aad, bytes) or len(external_aad) > MAX_EXTERNAL_AAD:
        raise PayloadError(f"external associated data is bytes of at most {MAX_EXTERNAL_AAD} "
                           "bytes")


_BYTES_LIKE: Final = (bytes, bytearray, memoryview)


def seal(payload: bytes, key: SealingKey, *, seq: int, external_aad: bytes = b"") -> bytes:
    """Protect ``payload``: COSE_Encrypt0 under a :class:`PairKey`, COSE_Sign1 under a
    :class:`SigningKey`. ``seq`` must grow with every message of this sender."""
    _check_common(payload, seq, external_aad)
    if not isinstance(key, PairKey | SigningKey):
        raise PayloadKeyError(f"cannot seal with a {type(key).__name__}",
                              hint="seal with a pair key (encryption) or a signing key")
    protected = key._protected_prefix + _SEQ_LABEL_BYTES + cbor.head(0, seq)
    protected_bstr = cbor.bstr(protected)
    external = cbor.bstr(external_aad) if external_aad else _EMPTY_BSTR
    if isinstance(key, PairKey):
        iv = os.urandom(IV_LENGTH)
        ciphertext = key._aead.encrypt(iv, payload, _ENC_PREFIX + protected_bstr + external)
        return b"".join((b"\xd0\x83", protected_bstr, _IV_HEADER, iv,
                         cbor.head(2, len(ciphertext)), ciphertext))
    body = cbor.bstr(bytes(payload))
    signature = key.sign(_SIG_PREFIX + protected_bstr + external + body)
    return b"\xd2\x84" + protected_bstr + b"\xa0" + body + cbor.bstr(signature)


class Sender:
    """A sealing key with its next sequence number (persist :attr:`next_seq`)."""

    __slots__ = ("_lock", "key", "next_seq")

    def __init__(self, key: SealingKey, *, next_seq: int = 0) -> None:
        self.key = key
        self.next_seq = next_seq
        self._lock = threading.Lock()

    def seal(self, payload: bytes, *, external_aad: bytes = b"") -> bytes:
        with self._lock:
            seq = self.next_seq
            self.next_seq = seq + 1
        return seal(payload, self.key, seq=seq, external_aad=external_aad)


# --- parsing ---------------------------------------------------------------------------------


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


def parse(message: bytes) -> Parsed:
    """Take a tagged COSE_Encrypt0 / COSE_Sign1 apart, strictly and within size limits."""
    if not isinstance(message, bytes):
        raise _malformed("a message is bytes")
    if len(message) > MAX_MESSAGE:
        raise _malformed(f"the message is larger than {MAX_MESSAGE} bytes")
    return _parse_canonical(message) or parse_generic(message)


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


def _parse_canonical(m: bytes) -> Parsed | None:
    """The layout :func:`seal` writes (the common case), read without the general decoder:
    ``{1: alg, 4: kid, -65537: seq}`` protected; ``{5: iv}`` or ``{}`` unprotected.

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
    if m[pos:pos + 3] != _IV_HEADER:
        return None
    iv = m[pos + 3:pos + 15]
    body = _bstr_at(m, pos + 15)
    if body is None or body[1] != len(m) or len(iv) != IV_LENGTH:
        return None
    return Parsed("encrypt0", alg, kid, seq_at[0], p, iv, m[body[0]:body[1]], None)


def parse_generic(message: bytes) -> Parsed:
    """:func:`parse` through the general CBOR decoder (every layout, every error)."""
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


def open(message: bytes, keys: Keyring, replay: ReplayWindow | ReplayWindows, *,
         external_aad: bytes = b"") -> Opened:
    """Authenticate (and decrypt) ``message``; raise a :class:`PayloadError` subclass if it is
    malformed, names an unknown kid, uses the wrong algorithm or key type, was already seen or
    is too old, or does not authenticate. ``replay`` is the sender's window, or one
    :class:`ReplayWindows` for all senders of the keyring."""
    if not isinstance(external_aad, bytes) or len(external_aad) > MAX_EXTERNAL_AAD:
        raise PayloadError(f"external associated data is bytes of at most {MAX_EXTERNAL_AAD} "
                           "bytes")
    p = parse(message)
    key = keys.get(p.kid)
    if p.kind == "encrypt0" and not isinstance(key, PairKey):
        raise PayloadAlgorithmError(f"key {p.kid.hex()} is a signing key; it cannot decrypt "
                                    "a COSE_Encrypt0")
    if p.kind == "sign1" and not isinstance(key, VerifyingKey):
        raise PayloadAlgorithmError(f"key {p.kid.hex()} is an encryption key; it cannot "
                                    "verify a COSE_Sign1")
    if p.alg != key.alg:
        raise PayloadAlgorithmError(f"the message uses algorithm {p.algorithm_name} but key "
                                    f"{p.kid.hex()} is for {key.alg.cose_name}")
    window = replay.for_sender(key.sender_id) if isinstance(replay, ReplayWindows) else replay
    window.check(p.seq)
    protected_bstr = cbor.bstr(p.protected)
    external = cbor.bstr(external_aad) if external_aad else _EMPTY_BSTR
    if isinstance(key, PairKey):
        assert p.iv is not None
        try:
            payload = key._aead.decrypt(p.iv, p.body, _ENC_PREFIX + protected_bstr + external)
        except InvalidTag:
            raise PayloadAuthenticationError(
                f"message under key {p.kid.hex()} does not authenticate: altered, sealed for "
                "another recipient, or bound to other external data") from None
        recipient: str | None = key.recipient_id
    else:
        assert p.signature is not None
        key.verify(p.signature, _SIG_PREFIX + protected_bstr + external + cbor.bstr(p.body))
        payload, recipient = p.body, None
    window.accept(p.seq)
    # Positional: the fields in Opened's order (payload, kind, alg, kid, sender, recipient, seq).
    return Opened(payload, p.kind, key.alg, p.kid, key.sender_id, recipient, p.seq)


open_message = open
