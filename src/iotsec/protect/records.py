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

import re
import secrets
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from iotsec.errors import (
    DataKeyUnwrapError,
    DataProtectionError,
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
)

TAG: Final = 16

RECORD_VERSION: Final = 1
MAX_RECORD: Final = 4 * 1024 * 1024
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")
_RECORD_KEY_AAD: Final = b"iotsec record key v1\x00"
_RECORD_AAD: Final = b"iotsec record v1\x00"


def record_context(table: str, record_id: str | int, field: str) -> bytes:
    """The bytes that bind a record's ciphertext to its place: length-prefixed table,
    record id and field (so no choice of values can collide with another)."""
    if not isinstance(table, str) or not _NAME.fullmatch(table):
        raise InvalidInputError(f"invalid table name {table!r}")
    if not isinstance(field, str) or not _NAME.fullmatch(field):
        raise InvalidInputError(f"invalid field name {field!r}")
    if isinstance(record_id, bool) or not isinstance(record_id, int | str):
        raise InvalidInputError("a record id is an integer or text")
    try:
        rid = (f"i:{record_id}" if isinstance(record_id, int) else f"s:{record_id}"
               ).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError("a record id must be valid Unicode text") from None
    if len(rid) > 1024:
        raise InvalidInputError("a record id has at most 1022 bytes")
    return b"".join(len(part).to_bytes(2, "big") + part
                    for part in (table.encode("ascii"), rid, field.encode("ascii")))


@dataclass(frozen=True, slots=True)
class RecordEnvelope:
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
        if not isinstance(blob, bytes) or len(blob) > MAX_RECORD + 2048:
            raise RecordFormatError("an encrypted record is bytes within the size limit")
        if len(blob) < 2 or blob[0] != RECORD_VERSION:
            raise RecordFormatError("not an iotsec encrypted record (unknown version)")
        id_len = blob[1]
        pos = 2 + id_len
        if not 1 <= id_len <= 64 or len(blob) < pos + 2:
            raise RecordFormatError("an encrypted record is malformed")
        try:
            kek_id = blob[2:pos].decode("ascii")
        except UnicodeDecodeError:
            raise RecordFormatError("an encrypted record is malformed") from None
        wrapped_len = int.from_bytes(blob[pos:pos + 2], "big")
        pos += 2
        if not KEK_ID.fullmatch(kek_id) or not 1 <= wrapped_len <= MAX_WRAPPED_KEY \
                or len(blob) < pos + wrapped_len + 12 + TAG:
            raise RecordFormatError("an encrypted record is malformed")
        wrapped = blob[pos:pos + wrapped_len]
        pos += wrapped_len
        return cls(kek_id, wrapped, blob[pos:pos + 12], blob[pos + 12:])


def seal_record(plaintext: bytes, kek: KeyWrapper, *, table: str, record_id: str | int,
                field: str) -> bytes:
    """Encrypt one value under a fresh data key wrapped by ``kek``, bound to its place."""
    if len(plaintext) > MAX_RECORD:
        raise InvalidInputError(f"an encrypted record holds at most {MAX_RECORD} bytes")
    context = record_context(table, record_id, field)
    dek, nonce = secrets.token_bytes(32), secrets.token_bytes(12)
    wrapped = kek.wrap(dek, _RECORD_KEY_AAD + context)
    if not 1 <= len(wrapped) <= MAX_WRAPPED_KEY:
        raise DataProtectionError(f"the key-encryption key returned a wrapped key of "
                                  f"{len(wrapped)} bytes; at most {MAX_WRAPPED_KEY} fit")
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
            "or field, or sealed under another key-encryption key") from None


def open_record(blob: bytes, keks: KeyWrapper | KekResolver, *, table: str,
                record_id: str | int, field: str) -> bytes:
    """Decrypt what :func:`seal_record` made for the same table, record id and field."""
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
    return RecordEnvelope.parse(blob).kek_id


def rewrap_record(blob: bytes, keks: KeyWrapper | KekResolver, new_kek: KeyWrapper, *,
                  table: str, record_id: str | int, field: str) -> bytes:
    """The same record with its data key re-wrapped under ``new_kek``; the value's ciphertext
    is untouched (no bulk decryption when a KEK rotates)."""
    context = record_context(table, record_id, field)
    envelope = RecordEnvelope.parse(blob)
    dek = _record_dek(envelope, keks, context, f"{table}.{field} of record {record_id!r}")
    wrapped = new_kek.wrap(dek, _RECORD_KEY_AAD + context)
    return RecordEnvelope(check_kek_id(new_kek.key_id), wrapped, envelope.nonce,
                          envelope.ciphertext).encode()
