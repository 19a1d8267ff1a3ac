"""Key-encryption keys (KEKs): the interface data keys are wrapped through, and the software KEK.

Envelope encryption gives every file and every record its own random data key; only the
data key's *wrapped* form is stored beside the data. Wrapping goes through
:class:`KeyWrapper`, a deliberately small interface (an id, ``wrap``, ``unwrap``) so that a
KEK held in an HSM can implement it unchanged: with PKCS#11 the KEK is a non-extractable AES
key in the token and ``wrap``/``unwrap`` are ``C_Encrypt``/``C_Decrypt`` with ``CKM_AES_GCM``
(the associated data goes in ``CK_GCM_PARAMS``), so the KEK never leaves the token
(:mod:`iotsec.custody.pkcs11_kek`).

:class:`FileKek` is the software KEK: 32 bytes used with AES-256-GCM. Where its bytes are
kept (an encrypted file per KEK) is key custody's business: :mod:`iotsec.custody.file_keks`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Final, Protocol, cast, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from iotsec.errors import (
    DataKeyUnwrapError,
    DataProtectionError,
    KeyCustodyError,
    UnknownKekError,
)

__all__ = [
    "KEK_ID", "MAX_DATA_KEY", "MAX_WRAPPED_KEY", "MIN_DATA_KEY", "FileKek", "KekResolver",
    "KekRing", "KeyWrapper", "check_data_key", "check_kek_id", "resolve_kek", "wrap_aad",
    "wrap_data_key"
]

KEK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
MIN_DATA_KEY: Final = 16
MAX_DATA_KEY: Final = 64
#: Largest wrapped data key any :class:`KeyWrapper` may return (formats reserve room for it).
MAX_WRAPPED_KEY: Final = 1024

_WRAP_VERSION: Final = 1
_NONCE: Final = 12
_TAG: Final = 16


@runtime_checkable
class KeyWrapper(Protocol):
    """A key-encryption key in custody: wraps and unwraps data keys, never reveals itself.

    ``aad`` binds a wrapped key to where it is used; ``unwrap`` with other ``aad`` fails.
    ``unwrap`` raises :class:`~iotsec.errors.DataKeyUnwrapError` when the wrapped key does not
    authenticate. A wrapped key is at most :data:`MAX_WRAPPED_KEY` bytes.
    """

    @property
    def key_id(self) -> str: ...

    def wrap(self, data_key: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes: ...


class KekResolver(Protocol):
    """Finds the KEK a stored wrapped key names (a ring, or a key store)."""

    def kek(self, key_id: str) -> KeyWrapper: ...


def check_kek_id(key_id: str) -> str:
    if not isinstance(key_id, str) or not KEK_ID.fullmatch(key_id):
        raise KeyCustodyError(f"invalid key-encryption key id {key_id!r}",
                              hint="ids are 1-64 characters from A-Z a-z 0-9 . _ : -")
    return key_id


def _is_wrapper(keks: object) -> bool:
    # What isinstance(keks, KeyWrapper) decides, without the runtime-checkable protocol
    # check's walk over the protocol's members (several microseconds a call, paid per
    # record when many records are opened or re-wrapped).
    return hasattr(keks, "unwrap") and hasattr(keks, "wrap") and hasattr(keks, "key_id")


def resolve_kek(keks: KeyWrapper | KekResolver, key_id: str) -> KeyWrapper:
    """The KEK named ``key_id``: from a resolver, or ``keks`` itself if it is that KEK."""
    if _is_wrapper(keks):
        kek = cast(KeyWrapper, keks)
        if kek.key_id != key_id:
            raise UnknownKekError(f"the data is wrapped under key-encryption key {key_id!r}, "
                                  f"not {kek.key_id!r}")
        return kek
    return cast(KekResolver, keks).kek(key_id)


class KekRing:
    """KEKs by id; :attr:`active` is the one new data keys are wrapped under."""

    __slots__ = ("_by_id", "active")

    def __init__(self, active: KeyWrapper, others: Iterable[KeyWrapper] = ()) -> None:
        self.active = active
        self._by_id: dict[str, KeyWrapper] = {active.key_id: active}
        for kek in others:
            self._by_id.setdefault(kek.key_id, kek)

    def kek(self, key_id: str) -> KeyWrapper:
        found = self._by_id.get(key_id)
        if found is None:
            raise UnknownKekError(f"key-encryption key {key_id!r} is not in custody")
        return found

    def ids(self) -> list[str]:
        return list(self._by_id)


def wrap_aad(key_id: str, aad: bytes) -> bytes:
    """The associated data of a data-key wrap, whichever custody holds the KEK:
    ``"iotsec kek wrap v1" 0x00 key_id 0x00 aad``."""
    return b"iotsec kek wrap v1\x00" + key_id.encode("ascii") + b"\x00" + aad


def check_data_key(data_key: bytes) -> None:
    if not MIN_DATA_KEY <= len(data_key) <= MAX_DATA_KEY:
        raise KeyCustodyError(f"a data key has {MIN_DATA_KEY} to {MAX_DATA_KEY} bytes")


def wrap_data_key(kek: KeyWrapper, data_key: bytes, aad: bytes) -> bytes:
    """``kek.wrap(data_key, aad)``, refused unless the wrapped key fits the room every
    format keeps for it (1 to :data:`MAX_WRAPPED_KEY` bytes)."""
    wrapped = kek.wrap(data_key, aad)
    if not 1 <= len(wrapped) <= MAX_WRAPPED_KEY:
        raise DataProtectionError(f"the key-encryption key returned a wrapped key of "
                                  f"{len(wrapped)} bytes; at most {MAX_WRAPPED_KEY} fit")
    return wrapped


class FileKek:
    """A 256-bit KEK held in process memory; wraps with AES-256-GCM.

    Wrapped form: version (1 byte) || 96-bit random nonce || AES-GCM(data key) || tag.
    The associated data is ``"iotsec kek wrap v1" 0x00 key_id 0x00 aad``, so a wrapped key
    also names the KEK that made it.
    """

    __slots__ = ("_aead", "_id")

    def __init__(self, key_id: str, key: bytes) -> None:
        if len(key) != 32:
            raise KeyCustodyError("a key-encryption key has 32 bytes")
        self._id = check_kek_id(key_id)
        self._aead = AESGCM(key)

    @property
    def key_id(self) -> str:
        return self._id

    def _aad(self, aad: bytes) -> bytes:
        return wrap_aad(self._id, aad)

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        check_data_key(data_key)
        nonce = os.urandom(_NONCE)
        return bytes((_WRAP_VERSION,)) + nonce + self._aead.encrypt(nonce, data_key,
                                                                    self._aad(aad))

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        size = len(wrapped) - 1 - _NONCE - _TAG
        if not MIN_DATA_KEY <= size <= MAX_DATA_KEY or wrapped[0] != _WRAP_VERSION:
            raise DataKeyUnwrapError(f"a data key wrapped by {self._id!r} is malformed")
        try:
            return self._aead.decrypt(wrapped[1:1 + _NONCE], wrapped[1 + _NONCE:], self._aad(aad))
        except InvalidTag:
            raise DataKeyUnwrapError(
                f"a data key does not unwrap under key-encryption key {self._id!r}: it was "
                "altered, moved, or wrapped by another key with the same id") from None

    def __repr__(self) -> str:
        return f"FileKek({self._id!r}, <key hidden>)"
