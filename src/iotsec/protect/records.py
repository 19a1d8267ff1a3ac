"""Envelope-encrypted records: small values in the store, each under its own data key.

Every value gets a fresh random 256-bit data key (DEK) and a random 96-bit nonce, and is
sealed with AES-256-GCM; the DEK is wrapped by a key-encryption key
(:class:`~iotsec.protect.kek.KeyWrapper`). The associated data of both the DEK wrapping and
the value's AES-GCM names the table, the record id and the field (length-prefixed), so a
ciphertext copied to another row or column does not open. Re-wrapping the DEK under a new
KEK (:func:`rewrap_record`) leaves the value's ciphertext untouched.

Layout: ``version 1 | KEK id length | KEK id | wrapped DEK length (2, big-endian) |
wrapped DEK | nonce (12) | ciphertext and tag``.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Final, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from iotsec.errors import (
    DataKeyUnwrapError,
    InvalidInputError,
    RecordAuthenticationError,
    RecordFormatError,
)
from iotsec.protect.kek import (
    KEK_ID,
    MAX_WRAPPED_KEY,
    KekResolver,
    KeyWrapper,
    check_kek_id,
    resolve_kek,
    wrap_data_key,
)

__all__ = [
    "MAX_RECORD", "RECORD_VERSION", "TAG", "RecordEnvelope", "RecordRewrapper", "decrypt_record",
    "encrypt_record", "envelope_head", "record_context", "record_kek_id", "rewrap_record"
]

TAG: Final = 16

RECORD_VERSION: Final = 1
MAX_RECORD: Final = 4 * 1024 * 1024
# Compiled (and cached by the re module) on first use, not with the module: the commands
# that import this one for the stream format name no record.
_NAME: Final = r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$"
_RECORD_KEY_AAD: Final = b"iotsec record key v1\x00"
_RECORD_AAD: Final = b"iotsec record v1\x00"


def _name_part(kind: str, name: str) -> bytes:
    if not isinstance(name, str) or not re.fullmatch(_NAME, name):
        raise InvalidInputError(f"invalid {kind} name {name!r}")
    return len(name).to_bytes(2, "big") + name.encode("ascii")


def _record_id_part(record_id: str | int) -> bytes:
    if isinstance(record_id, bool) or not isinstance(record_id, int | str):
        raise InvalidInputError("a record id is an integer or text")
    try:
        rid = (f"i:{record_id}" if isinstance(record_id, int) else f"s:{record_id}"
               ).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError("a record id must be valid Unicode text") from None
    if len(rid) > 1024:
        raise InvalidInputError("a record id has at most 1022 bytes")
    return len(rid).to_bytes(2, "big") + rid


def record_context(table: str, record_id: str | int, field: str) -> bytes:
    """The bytes that bind a record's ciphertext to its place: length-prefixed table,
    record id and field (so no choice of values can collide with another)."""
    table_part = _name_part("table", table)
    field_part = _name_part("field", field)
    return table_part + _record_id_part(record_id) + field_part


class RecordEnvelope(NamedTuple):
    """An encrypted record: ``version | id length | KEK id | wrapped length (2) | wrapped DEK
    | nonce (12) | AES-256-GCM ciphertext and tag``."""

    kek_id: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes

    def encode(self) -> bytes:
        kid = self.kek_id.encode("ascii")
        return (bytes((RECORD_VERSION, len(kid))) + kid + len(self.wrapped_key).to_bytes(2, "big")
                + self.wrapped_key + self.nonce + self.ciphertext)

    @classmethod
    def parse(cls, blob: bytes) -> RecordEnvelope:
        kek_id, start, end = _layout(blob)
        return cls(kek_id, blob[start:end], blob[end:end + 12], blob[end + 12:])


@functools.lru_cache(maxsize=256)
def _kek_id_text(raw: bytes) -> str:
    """The KEK id an envelope names, checked (a rotation reads the same few ids a million
    times, so each distinct one is decoded and matched once; the cache is bounded)."""
    try:
        kek_id = raw.decode("ascii")
    except UnicodeDecodeError:
        raise RecordFormatError("an encrypted record is malformed") from None
    if not KEK_ID.fullmatch(kek_id):
        raise RecordFormatError("an encrypted record is malformed")
    return kek_id


def _layout(blob: bytes) -> tuple[str, int, int]:
    """Check an envelope's framing: its KEK id, and where its wrapped data key starts and
    ends (the nonce and the ciphertext follow)."""
    if not isinstance(blob, bytes) or len(blob) > MAX_RECORD + 2048:
        raise RecordFormatError("an encrypted record is bytes within the size limit")
    size = len(blob)
    if size < 2 or blob[0] != RECORD_VERSION:
        raise RecordFormatError("not an iotsec encrypted record (unknown version)")
    id_len = blob[1]
    pos = 2 + id_len
    if not 1 <= id_len <= 64 or size < pos + 2:
        raise RecordFormatError("an encrypted record is malformed")
    kek_id = _kek_id_text(blob[2:pos])
    wrapped_len = (blob[pos] << 8) | blob[pos + 1]
    pos += 2
    if not 1 <= wrapped_len <= MAX_WRAPPED_KEY or size < pos + wrapped_len + 12 + TAG:
        raise RecordFormatError("an encrypted record is malformed")
    return kek_id, pos, pos + wrapped_len


def encrypt_record(plaintext: bytes, kek: KeyWrapper, *, table: str, record_id: str | int,
                field: str) -> bytes:
    """Encrypt one value under a fresh data key wrapped by ``kek``, bound to its place."""
    if len(plaintext) > MAX_RECORD:
        raise InvalidInputError(f"an encrypted record holds at most {MAX_RECORD} bytes")
    context = record_context(table, record_id, field)
    dek, nonce = os.urandom(32), os.urandom(12)
    wrapped = wrap_data_key(kek, dek, _RECORD_KEY_AAD + context)
    ciphertext = AESGCM(dek).encrypt(nonce, plaintext, _RECORD_AAD + context)
    return RecordEnvelope(check_kek_id(kek.key_id), wrapped, nonce, ciphertext).encode()


def _record_dek(envelope: RecordEnvelope, keks: KeyWrapper | KekResolver, context: bytes,
                where: str) -> bytes:
    kek = resolve_kek(keks, envelope.kek_id)
    try:
        return kek.unwrap(envelope.wrapped_key, _RECORD_KEY_AAD + context)
    except DataKeyUnwrapError:
        raise RecordAuthenticationError(
            f"the encrypted {where} does not open: it was altered, copied from another record "
            "or field, or encrypted under another key-encryption key") from None


def decrypt_record(blob: bytes, keks: KeyWrapper | KekResolver, *, table: str,
                record_id: str | int, field: str) -> bytes:
    """Decrypt what :func:`encrypt_record` made for the same table, record id and field."""
    context = record_context(table, record_id, field)
    envelope = RecordEnvelope.parse(blob)
    where = f"{table}.{field} of record {record_id!r}"
    dek = _record_dek(envelope, keks, context, where)
    try:
        return AESGCM(dek).decrypt(envelope.nonce, envelope.ciphertext, _RECORD_AAD + context)
    except InvalidTag:
        raise RecordAuthenticationError(
            f"the encrypted {where} does not open: it was altered or copied from another "
            "record or field") from None


def record_kek_id(blob: bytes) -> str:
    """The id of the KEK an encrypted record depends on (no key needed)."""
    return _layout(blob)[0]


def envelope_head(kek_id: str) -> bytes:
    """The bytes every envelope under ``kek_id`` starts with (version, id length, id)."""
    kid = check_kek_id(kek_id).encode("ascii")
    return bytes((RECORD_VERSION, len(kid))) + kid


def rewrap_record(blob: bytes, keks: KeyWrapper | KekResolver, new_kek: KeyWrapper, *,
                  table: str, record_id: str | int, field: str) -> bytes:
    """The same record with its data key re-wrapped under ``new_kek``; the value's ciphertext
    is untouched (no bulk decryption when a KEK rotates)."""
    return RecordRewrapper(keks, new_kek, table=table, field=field).rewrap(blob, record_id)


class RecordRewrapper:
    """Re-wraps the data keys of many records of one table and field under ``new_kek``,
    as :func:`rewrap_record` does for one: what does not depend on the record (the names in
    the associated data, the new header, each old KEK looked up by id) is done once.

    A KEK is looked up at its first record and kept for the rewrapper's life; a lookup that
    fails is not kept (each record under that id fails the same way)."""

    __slots__ = ("_field", "_field_part", "_head", "_keks", "_new", "_resolved", "_table",
                 "_table_part")

    def __init__(self, keks: KeyWrapper | KekResolver, new_kek: KeyWrapper, *, table: str,
                 field: str) -> None:
        self._table_part = _name_part("table", table)
        self._field_part = _name_part("field", field)
        self._table, self._field = table, field
        self._keks = keks
        self._new = new_kek
        self._head = envelope_head(new_kek.key_id)
        self._resolved: dict[str, KeyWrapper] = {}

    @property
    def target(self) -> str:
        """The id of the KEK records are re-wrapped under."""
        return self._new.key_id

    def pending(self, blob: bytes) -> bool:
        """Whether ``blob`` still has to be re-wrapped (it is not under the new KEK).
        :class:`RecordFormatError` if it names the new KEK but is malformed."""
        if not blob.startswith(self._head):
            return True  # another KEK (or malformed: :meth:`rewrap` says so)
        _layout(blob)
        return False

    def _kek(self, key_id: str) -> KeyWrapper:
        kek = self._resolved.get(key_id)
        if kek is None:
            kek = resolve_kek(self._keks, key_id)
            self._resolved[key_id] = kek
        return kek

    def rewrap(self, blob: bytes, record_id: str | int) -> bytes:
        """``blob`` (an envelope of record ``record_id``) with its data key unwrapped and
        wrapped again under the new KEK; nonce and ciphertext are carried over unchanged."""
        aad = (_RECORD_KEY_AAD + self._table_part + _record_id_part(record_id)
               + self._field_part)
        kek_id, start, end = _layout(blob)
        kek = self._kek(kek_id)
        try:
            dek = kek.unwrap(blob[start:end], aad)
        except DataKeyUnwrapError:
            raise RecordAuthenticationError(
                f"the encrypted {self._table}.{self._field} of record {record_id!r} does not "
                "open: it was altered, copied from another record or field, or encrypted under "
                "another key-encryption key") from None
        wrapped = wrap_data_key(self._new, dek, aad)
        return b"".join((self._head, len(wrapped).to_bytes(2, "big"), wrapped, blob[end:]))
