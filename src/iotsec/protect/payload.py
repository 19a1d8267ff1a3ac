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
authenticated. Taking a message apart (the layout, the header labels) is
:mod:`iotsec.protect.cose`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from typing import Final, NamedTuple

from cryptography.exceptions import InvalidTag

from iotsec.errors import (
    PayloadAlgorithmError,
    PayloadAuthenticationError,
    PayloadError,
    PayloadKeyError,
    PayloadMalformedError,
    PayloadUnknownKeyError,
)
from iotsec.protect import cbor
from iotsec.protect.cose import (
    IV_HEADER,
    IV_LENGTH,
    SEQ_LABEL,
    Parsed,
    parse_canonical,
    parse_generic,
)
from iotsec.protect.pairing import Algorithm, PairKey, SigningKey, VerifyingKey
from iotsec.protect.replay import MAX_SEQ, ReplayWindow, ReplayWindows

__all__ = [
    "MAX_EXTERNAL_AAD", "MAX_MESSAGE", "MAX_PAYLOAD", "Keyring", "Opened", "OpeningKey",
    "SealingKey", "Sender", "open", "open_message", "parse", "seal"
]

#: Largest payload :func:`seal` protects, and largest message :func:`open` parses.
MAX_PAYLOAD: Final = 1024 * 1024
MAX_MESSAGE: Final = MAX_PAYLOAD + 1024
MAX_EXTERNAL_AAD: Final = 64 * 1024

_SEQ_LABEL_BYTES: Final = cbor.uint_or_nint(SEQ_LABEL)
_ENC_PREFIX: Final = b"\x83" + cbor.dumps("Encrypt0")
_SIG_PREFIX: Final = b"\x84" + cbor.dumps("Signature1")
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
        return b"".join((b"\xd0\x83", protected_bstr, IV_HEADER, iv,
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


def parse(message: bytes) -> Parsed:
    """Take a tagged COSE_Encrypt0 / COSE_Sign1 apart, strictly and within size limits."""
    if not isinstance(message, bytes):
        raise PayloadMalformedError("a message is bytes")
    if len(message) > MAX_MESSAGE:
        raise PayloadMalformedError(f"the message is larger than {MAX_MESSAGE} bytes")
    return parse_canonical(message) or parse_generic(message)


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
