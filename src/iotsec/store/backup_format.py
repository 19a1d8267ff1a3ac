"""The backup file: a small versioned header, then one encrypted, authenticated stream.

The file is::

    magic "\\x89IOTBAK\\n" (8) | version 1 (1) | scrypt log2 N (1) | r (1) | p (1) | salt (16)
    | an encrypted stream (:mod:`iotsec.protect.atrest`, 64 KiB chunks of AES-256-GCM)

The stream's key-encryption key is derived with scrypt from the backup passphrase and the
salt; the header above is the stream's associated data, so a changed cost or salt fails like
a wrong passphrase. Inside the stream, the plaintext is a sequence of records::

    kind (1 byte) | length (4 bytes, big-endian) | body

``H`` (first, JSON :class:`BackupInfo`), then per table ``T`` (JSON :class:`TableStart`)
followed by ``R`` records (a CBOR array of rows, each an array of column values), then per
file ``F`` (JSON :class:`FileStart`) followed by ``D`` records (its bytes), and ``M`` (last,
JSON :class:`Manifest`: row counts, sizes and SHA-256 of every part). Every length is checked
against the limit of its kind before the body is read, every JSON body against its model,
and a stream cut anywhere, reordered or altered fails authentication (see atrest): a reader
never acts on a record before it authenticated, and learns that the file is whole only at
its end, so restores stage everything and commit last.

Memory stays bounded whatever the size of the backup: one record (rows are written in
batches; files in 1 MiB pieces) and two chunks.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO, Final, Literal

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from iotsec.errors import (
    BackupAuthenticationError,
    BackupFormatError,
    BackupTruncatedError,
    CborError,
    InvalidInputError,
    StreamChunkError,
    StreamFormatError,
    StreamHeaderError,
    StreamTruncatedError,
)
from iotsec.protect import cbor
from iotsec.protect.atrest import TAG, StreamHeader, StreamOpener, StreamSealer, read_full
from iotsec.protect.kek import FileKek

__all__ = [
    "MAGIC", "MIN_PASSPHRASE", "SCRYPT_COST", "BackupCost", "BackupInfo", "BackupReader",
    "BackupWriter", "FileDigest", "FileStart", "Manifest", "RowDigest", "TableDigest",
    "TableStart", "check_passphrase", "safe_relative_path"
]

MAGIC: Final = b"\x89IOTBAK\n"
VERSION: Final = 1
SALT: Final = 16
OUTER_SIZE: Final = len(MAGIC) + 4 + SALT
CHUNK: Final = 1 << 16
KEK_LABEL: Final = "iotsec-backup"
MIN_PASSPHRASE: Final = 12

HEADER, TABLE, ROWS, FILE, DATA, MANIFEST = b"H", b"T", b"R", b"F", b"D", b"M"
#: The largest body of each record kind: a reader refuses more before reading it.
MAX_BODY: Final = {HEADER: 64 * 1024, TABLE: 64 * 1024, ROWS: 64 * 1024 * 1024,
                   FILE: 64 * 1024, DATA: 1 << 20, MANIFEST: 16 * 1024 * 1024}
#: Rows per ``R`` record and columns per table, the bounds of the CBOR a reader decodes.
MAX_BATCH_ROWS: Final = 1000
MAX_COLUMNS: Final = 64
MAX_FILE_SIZE: Final = 1 << 32
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_PART = re.compile(r"^[A-Za-z0-9._+@=-]{1,128}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class BackupCost:
    """The scrypt cost of a backup's key (stored in its header)."""

    log2_n: int
    r: int
    p: int

    def check(self) -> BackupCost:
        # The bounds keep a hostile header from asking for more than 256 MiB or a long wait.
        if not (10 <= self.log2_n <= 18 and 1 <= self.r <= 16 and 1 <= self.p <= 4
                and (1 << self.log2_n) * 128 * self.r <= 256 * 1024 * 1024):
            raise BackupFormatError("the backup's key-derivation cost is out of bounds")
        return self


#: About 128 MiB and half a second: a backup leaves the machine, so its passphrase must
#: withstand offline guessing (OWASP's scrypt recommendation).
SCRYPT_COST = BackupCost(17, 8, 1)


def check_passphrase(passphrase: bytes) -> bytes:
    """``passphrase``, or an error when it is too short to protect a backup."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise InvalidInputError(f"the backup passphrase needs at least {MIN_PASSPHRASE} "
                                "characters", hint="set a longer IOTSEC_BACKUP_PASSPHRASE")
    return passphrase


def _kek(passphrase: bytes, salt: bytes, cost: BackupCost) -> FileKek:
    key = Scrypt(salt=salt, length=32, n=1 << cost.log2_n, r=cost.r, p=cost.p).derive(
        check_passphrase(passphrase))
    return FileKek(KEK_LABEL, key)


def safe_relative_path(text: str) -> PurePosixPath:
    """``text`` as a relative path inside a home: plain names only, no ``..``, no absolute
    path, at most 16 levels; anything else is refused."""
    path = PurePosixPath(text)
    if (not text or len(text) > 512 or path.is_absolute() or str(path) != text
            or len(path.parts) > 16 or not all(_PART.fullmatch(p) for p in path.parts)
            or any(p in (".", "..") for p in path.parts)):
        raise BackupFormatError(f"the backup names an unsafe file path {text[:80]!r}")
    return path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class BackupInfo(_Strict):
    """The first record: what made the backup and what it holds."""

    format: Literal["iotsec-backup"] = "iotsec-backup"
    version: Literal[1] = 1
    created_at: int = Field(ge=0, le=2**40)
    schema_revision: str = Field(pattern=r"^[0-9A-Za-z_]{1,32}$")
    dialect: Literal["sqlite", "postgresql"]
    iotsec_version: str = Field(max_length=64)
    keystore: Literal["file", "pkcs11"]
    #: False when the CA passphrase came from IOTSEC_CA_PASSPHRASE (then it is not inside).
    ca_passphrase_included: bool


class TableStart(_Strict):
    name: str = Field(pattern=_NAME.pattern)
    columns: list[str] = Field(min_length=1, max_length=MAX_COLUMNS)


class FileStart(_Strict):
    path: str = Field(max_length=512)
    mode: int = Field(ge=0, le=0o777)
    size: int = Field(ge=0, le=MAX_FILE_SIZE)

    @field_validator("path")
    @classmethod
    def _safe(cls, value: str) -> str:
        safe_relative_path(value)
        return value


class TableDigest(_Strict):
    name: str = Field(pattern=_NAME.pattern)
    rows: int = Field(ge=0, le=2**48)
    sha256: str = Field(pattern=_SHA256.pattern)


class FileDigest(_Strict):
    path: str = Field(max_length=512)
    size: int = Field(ge=0, le=MAX_FILE_SIZE)
    sha256: str = Field(pattern=_SHA256.pattern)


class Manifest(_Strict):
    """The last record: what every part held, checked by the reader against what it read."""

    tables: list[TableDigest] = Field(max_length=256)
    files: list[FileDigest] = Field(max_length=100_000)
    #: Paths in the home that were not backed up (symbolic links, sockets...).
    skipped: list[str] = Field(max_length=10_000)


def parse_json(model: type[Any], kind: bytes, body: bytes) -> Any:
    """A JSON record body as ``model``, or :class:`BackupFormatError`."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "record"
        raise BackupFormatError(f"the backup's {kind.decode()!r} record is invalid at "
                                f"{where}: {exc.errors()[0]['msg']}") from None


class RowDigest:
    """Row count and SHA-256 over the CBOR encoding of each row, in primary-key order: the
    same value for a table in a store, in a backup and in a restored store."""

    __slots__ = ("_hash", "rows")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.rows = 0

    def add(self, encoded_row: bytes) -> None:
        self._hash.update(encoded_row)
        self.rows += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def encode_row(row: Sequence[Any]) -> bytes:
    """One row as CBOR (ints, text, bytes, booleans and nulls only)."""
    return cbor.dumps([bytes(v) if isinstance(v, memoryview) else v for v in row])


def decode_rows(body: bytes, columns: int) -> list[list[Any]]:
    """An ``R`` record: at most :data:`MAX_BATCH_ROWS` rows of exactly ``columns`` values."""
    try:
        rows = cbor.loads(body, max_depth=3, max_items=MAX_BATCH_ROWS * (columns + 1) + 1)
    except CborError as exc:
        raise BackupFormatError(f"a batch of rows in the backup is malformed: {exc}") from None
    if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_BATCH_ROWS or not all(
            isinstance(r, list) and len(r) == columns for r in rows):
        raise BackupFormatError("a batch of rows in the backup does not match its table")
    return rows


class BackupWriter:
    """Writes a backup to ``dst``: records in order, then :meth:`finish`."""

    def __init__(self, dst: BinaryIO, passphrase: bytes, *, cost: BackupCost | None = None
                 ) -> None:
        cost = (cost or SCRYPT_COST).check()
        salt = secrets.token_bytes(SALT)
        outer = MAGIC + bytes((VERSION, cost.log2_n, cost.r, cost.p)) + salt
        self._sealer = StreamSealer(_kek(passphrase, salt, cost), chunk_size=CHUNK,
                                    associated_data=outer)
        dst.write(outer + self._sealer.header)
        self._dst = dst
        self._buf = bytearray()
        self.size = len(outer) + len(self._sealer.header)

    def record(self, kind: bytes, body: bytes) -> None:
        if len(body) > MAX_BODY[kind]:
            raise BackupFormatError(f"a {kind.decode()!r} record of {len(body)} bytes is over "
                                    f"the format's limit of {MAX_BODY[kind]}")
        buf = self._buf
        buf += kind + len(body).to_bytes(4, "big")
        buf += body
        # Seal every full chunk but keep at least one byte back: the final chunk must not
        # be empty (atrest allows an empty final chunk only for an empty stream).
        pos = 0
        while len(buf) - pos > CHUNK:
            self._write(self._sealer.seal_chunk(bytes(buf[pos:pos + CHUNK]), last=False))
            pos += CHUNK
        del buf[:pos]

    def model(self, kind: bytes, value: BaseModel) -> None:
        self.record(kind, value.model_dump_json().encode("utf-8"))

    def rows(self, encoded_rows: Sequence[bytes]) -> None:
        """One ``R`` record of already encoded rows (see :func:`encode_row`)."""
        self.record(ROWS, cbor.head(4, len(encoded_rows)) + b"".join(encoded_rows))

    def _write(self, data: bytes) -> None:
        self._dst.write(data)
        self.size += len(data)

    def finish(self) -> None:
        self._write(self._sealer.seal_chunk(bytes(self._buf), last=True))
        self._buf.clear()


class BackupReader:
    """Reads a backup from ``src``: the header is checked and the passphrase proven on
    construction; :meth:`records` then yields ``(kind, body)`` pairs, each authenticated."""

    def __init__(self, src: BinaryIO, passphrase: bytes) -> None:
        outer = read_full(src, OUTER_SIZE)
        if not outer or outer[:len(MAGIC)] != MAGIC[:len(outer)]:
            raise BackupFormatError("the file is not an iotsec backup (wrong magic bytes)")
        if len(outer) < OUTER_SIZE:
            raise BackupTruncatedError("the backup ends inside its header")
        if outer[8] != VERSION:
            raise BackupFormatError(f"unsupported backup version {outer[8]}",
                                    hint="this iotsec reads version 1; restore with the "
                                    "iotsec that made the backup")
        cost = BackupCost(outer[9], outer[10], outer[11]).check()
        try:
            header = StreamHeader.read(src)
        except StreamTruncatedError:
            raise BackupTruncatedError("the backup ends inside its header") from None
        except StreamFormatError as exc:
            raise BackupFormatError(f"the backup's stream header is invalid: {exc}") from None
        if header.kek_id != KEK_LABEL or header.chunk_size != CHUNK:
            raise BackupFormatError("the backup's stream header is not a backup's")
        try:
            self._opener = StreamOpener(header, _kek(passphrase, outer[12:], cost),
                                        associated_data=outer)
        except StreamHeaderError:
            raise BackupAuthenticationError(
                "the backup does not open with this passphrase (or its header was "
                "altered)") from None
        self._src = src

    def _chunks(self) -> Iterator[bytes]:
        size = CHUNK + TAG
        current = read_full(self._src, size)
        if not current:
            raise BackupTruncatedError("the backup ends after its header")
        while True:
            following = read_full(self._src, size) if len(current) == size else b""
            try:
                yield self._opener.open_chunk(current, last=not following)
            except StreamTruncatedError:
                raise BackupTruncatedError("the backup was cut short: its end is "
                                           "missing") from None
            except (StreamChunkError, StreamFormatError):
                # A final chunk cut in its middle fails like an altered one: AES-GCM cannot
                # tell them apart, so the message names both.
                raise BackupAuthenticationError(
                    "part of the backup does not authenticate: the file was altered or cut "
                    "short after it was made", hint="use another copy of the backup") from None
            if not following:
                return
            current = following

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        chunks = self._chunks()
        buf, pos = bytearray(), 0

        def fill(n: int) -> bool:
            while len(buf) - pos < n:
                chunk = next(chunks, None)
                if chunk is None:
                    return False
                buf.extend(chunk)
            return True

        while fill(1):
            if not fill(5):
                raise BackupFormatError("the backup's last record is incomplete")
            kind, length = bytes(buf[pos:pos + 1]), int.from_bytes(buf[pos + 1:pos + 5], "big")
            limit = MAX_BODY.get(kind)
            if limit is None:
                raise BackupFormatError(f"unknown record kind {kind!r} in the backup")
            if length > limit:
                raise BackupFormatError(f"a {kind.decode()!r} record of {length} bytes is over "
                                        f"the limit of {limit}")
            if not fill(5 + length):
                raise BackupFormatError("the backup's last record is incomplete")
            body = bytes(buf[pos + 5:pos + 5 + length])
            pos += 5 + length
            if pos > CHUNK:
                del buf[:pos]
                pos = 0
            yield kind, body
