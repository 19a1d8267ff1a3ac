"""Encryption at rest: streaming file encryption (and, re-exported from
:mod:`iotsec.protect.records`, envelope-encrypted records).

Streams (``iotsec data encrypt``) follow the design of Tink's streaming AEAD and age's
STREAM construction. Every file gets a random 256-bit data key (DEK), wrapped by a
key-encryption key (:class:`~iotsec.protect.kek.KeyWrapper`). The header is::

    magic "\\x89IOTSEC\\n" (8) | version 1 (1) | log2 chunk size (1) | KEK id length (1)
    | KEK id | salt (32) | nonce prefix (7) | wrapped DEK length (2, big-endian)
    | wrapped DEK | header MAC (32)

From the DEK and the salt, HKDF-SHA256 derives the payload key and the header key (both
bound to a hash of the caller's associated data). The header MAC is HMAC-SHA256 under the
header key over every header byte before it, and the DEK is wrapped with the header bytes up
to the nonce prefix as associated data, so any change to the header is detected before a
single chunk is read. The plaintext is cut into chunks of exactly the chunk size (the last
one may be shorter; it is empty only when the whole file is), each sealed with AES-256-GCM
under the nonce ``prefix (7) | chunk index (4, big-endian) | last-chunk flag (1)``. Hence:

* a changed, reordered or dropped chunk fails (its index is in its nonce);
* a chunk from another file fails (another DEK, salt and prefix);
* a stream cut at a chunk boundary fails (the new last chunk was not sealed as last), and
  so does a stream extended after its final chunk;
* decryption releases a chunk only after it authenticated, with at most two chunks in
  memory, whatever the file size.

Records (:func:`encrypt_record`, in :mod:`iotsec.protect.records`) are small values in the
store: each gets its own DEK; the associated data of both the DEK wrapping and the value's
AES-GCM names the table, the record id and the field, so a ciphertext copied to another
row or column does not open.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import BinaryIO, Final, NamedTuple

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from iotsec.errors import (
    DataKeyUnwrapError,
    DataProtectionError,
    InvalidInputError,
    StreamChunkError,
    StreamFormatError,
    StreamHeaderError,
    StreamTruncatedError,
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
from iotsec.protect.records import (  # the record envelope is part of this API
    RecordEnvelope,
    decrypt_record,
    encrypt_record,
    record_context,
    record_kek_id,
    rewrap_record,
)

MAGIC: Final = b"\x89IOTSEC\n"
VERSION: Final = 1
MIN_CHUNK_LOG2: Final = 12  # 4 KiB
MAX_CHUNK_LOG2: Final = 22  # 4 MiB: the most a header can make a reader hold (twice)
DEFAULT_CHUNK_SIZE: Final = 1 << 16  # 64 KiB, as age
SALT: Final = 32
NONCE_PREFIX: Final = 7
MAC: Final = 32
TAG: Final = 16
MAX_CHUNKS: Final = 1 << 32
MAX_ASSOCIATED_DATA: Final = 64 * 1024
#: How much plaintext :func:`encrypt_stream` reads and writes at a time from a buffered
#: stream (whole chunks; four of the default size).
IO_BLOCK: Final = 1 << 18
#: Largest header a reader accepts (the longest KEK id and wrapped key).
MAX_HEADER: Final = len(MAGIC) + 3 + 64 + SALT + NONCE_PREFIX + 2 + MAX_WRAPPED_KEY + MAC

_FIXED: Final = len(MAGIC) + 3


def _sha256(data: bytes) -> bytes:
    # cryptography's digests rather than hashlib's: this module is on the path of
    # ``iotsec data encrypt``, whose start-up would otherwise load a second OpenSSL binding.
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


def _hmac_sha256(key: bytes, data: bytes) -> bytes:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


def _hmac_sha256_matches(key: bytes, data: bytes, expected: bytes) -> bool:
    """Whether ``expected`` is the HMAC-SHA256 of ``data`` (compared in constant time)."""
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    try:
        mac.verify(expected)
    except InvalidSignature:
        return False
    return True


def _derive(dek: bytes, salt: bytes, associated_data: bytes) -> tuple[bytes, bytes]:
    """(payload key, header key) from the data key, the file's salt and associated data."""
    if len(associated_data) > MAX_ASSOCIATED_DATA:
        raise InvalidInputError(f"associated data has at most {MAX_ASSOCIATED_DATA} bytes")
    prk = _hmac_sha256(salt, dek)
    bound = _sha256(associated_data)
    payload = HKDFExpand(hashes.SHA256(), 32, b"iotsec stream v1 payload\x00" + bound).derive(prk)
    header = HKDFExpand(hashes.SHA256(), 32, b"iotsec stream v1 header\x00" + bound).derive(prk)
    return payload, header


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


class StreamHeader(NamedTuple):
    """The parsed header of an encrypted stream (not yet authenticated)."""

    version: int
    chunk_size: int
    kek_id: str
    salt: bytes
    nonce_prefix: bytes
    wrapped_key: bytes
    mac: bytes

    def prefix(self) -> bytes:
        """The header up to the nonce prefix: what the wrapped DEK is bound to."""
        kid = self.kek_id.encode("ascii")
        return (MAGIC + bytes((self.version, self.chunk_size.bit_length() - 1, len(kid))) + kid
                + self.salt + self.nonce_prefix)

    def authenticated_part(self) -> bytes:
        """Every header byte before the MAC."""
        return self.prefix() + len(self.wrapped_key).to_bytes(2, "big") + self.wrapped_key

    def encode(self) -> bytes:
        return self.authenticated_part() + self.mac

    @property
    def size(self) -> int:
        return _FIXED + len(self.kek_id) + SALT + NONCE_PREFIX + 2 + len(self.wrapped_key) + MAC

    @classmethod
    def read(cls, src: BinaryIO) -> StreamHeader:
        """Read and parse a header from ``src`` (at most :data:`MAX_HEADER` bytes)."""
        fixed = read_full(src, _FIXED)
        if fixed[:len(MAGIC)] != MAGIC[:len(fixed)] or not fixed:
            raise StreamFormatError("not an iotsec encrypted stream (wrong magic bytes)")
        if len(fixed) < _FIXED:
            raise StreamTruncatedError("the stream ends inside its header")
        version, log2, id_len = fixed[8], fixed[9], fixed[10]
        if version != VERSION:
            raise StreamFormatError(f"unsupported stream version {version}",
                                    hint="this iotsec reads version 1; upgrade iotsec")
        if not MIN_CHUNK_LOG2 <= log2 <= MAX_CHUNK_LOG2:
            raise StreamFormatError(f"invalid chunk size 2**{log2}")
        if not 1 <= id_len <= 64:
            raise StreamFormatError("invalid key-encryption key id length")
        middle = read_full(src, id_len + SALT + NONCE_PREFIX + 2)
        if len(middle) < id_len + SALT + NONCE_PREFIX + 2:
            raise StreamTruncatedError("the stream ends inside its header")
        try:
            kek_id = middle[:id_len].decode("ascii")
        except UnicodeDecodeError:
            raise StreamFormatError("the key-encryption key id is not ASCII") from None
        if not KEK_ID.fullmatch(kek_id):
            raise StreamFormatError("the key-encryption key id is invalid")
        pos = id_len
        salt, prefix = middle[pos:pos + SALT], middle[pos + SALT:pos + SALT + NONCE_PREFIX]
        wrapped_len = int.from_bytes(middle[-2:], "big")
        if not 1 <= wrapped_len <= MAX_WRAPPED_KEY:
            raise StreamFormatError("invalid wrapped data key length")
        tail = read_full(src, wrapped_len + MAC)
        if len(tail) < wrapped_len + MAC:
            raise StreamTruncatedError("the stream ends inside its header")
        return cls(version, 1 << log2, kek_id, salt, prefix, tail[:wrapped_len],
                   tail[wrapped_len:])


def read_full(src: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, or fewer only at the end of the stream (pipes return short reads)."""
    data = src.read(size)
    if data is None:
        raise DataProtectionError("the input is a non-blocking stream with no data ready")
    if len(data) == size or not data:
        return data
    parts, got = [data], len(data)
    while got < size:
        more = src.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _chunks(src: BinaryIO, size: int) -> Iterator[tuple[bytes, bool]]:
    """Each ``size``-byte piece of ``src`` with whether it is the last one; one piece is read
    ahead to know (a stream's last chunk is sealed as such). Only the first piece can be
    empty: that is an empty source."""
    current = read_full(src, size)
    while True:
        following = read_full(src, size) if len(current) == size else b""
        yield current, not following
        if not following:
            return
        current = following


def _check_chunk_size(chunk_size: int) -> int:
    log2 = chunk_size.bit_length() - 1
    if chunk_size != 1 << log2 or not MIN_CHUNK_LOG2 <= log2 <= MAX_CHUNK_LOG2:
        raise InvalidInputError(f"the chunk size must be a power of two from "
                                f"{1 << MIN_CHUNK_LOG2} to {1 << MAX_CHUNK_LOG2} bytes")
    return chunk_size


class StreamSealer:
    """Encrypts one stream chunk by chunk: write :attr:`header`, then each
    :meth:`seal_chunk` result in order (the last one with ``last=True``)."""

    __slots__ = ("_aead", "_done", "_index", "_prefix", "chunk_size", "header")

    def __init__(self, kek: KeyWrapper, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 associated_data: bytes = b"") -> None:
        self.chunk_size = _check_chunk_size(chunk_size)
        dek = os.urandom(32)
        partial = StreamHeader(VERSION, chunk_size, check_kek_id(kek.key_id),
                               os.urandom(SALT), os.urandom(NONCE_PREFIX),
                               b"", b"")
        wrapped = wrap_data_key(kek, dek, b"iotsec stream v1\x00" + partial.prefix())
        payload_key, header_key = _derive(dek, partial.salt, associated_data)
        body = StreamHeader(VERSION, chunk_size, partial.kek_id, partial.salt,
                            partial.nonce_prefix, wrapped, b"").authenticated_part()
        self.header = body + _hmac_sha256(header_key, body)
        self._aead = AESGCM(payload_key)
        self._prefix = partial.nonce_prefix
        self._index = 0
        self._done = False

    def _next_nonce(self, size: int, last: bool) -> bytes:
        """The nonce of the next chunk (of ``size`` bytes), once it may follow."""
        if self._done:
            raise DataProtectionError("the stream is already finished")
        if size > self.chunk_size or (not last and size != self.chunk_size):
            raise DataProtectionError("only the last chunk may be shorter than the chunk size")
        if last and not size and self._index:
            raise DataProtectionError("only an empty stream ends with an empty chunk")
        if self._index >= MAX_CHUNKS:
            raise DataProtectionError("the stream is too long for its chunk size")
        nonce = _nonce(self._prefix, self._index, last)
        self._index += 1
        self._done = last
        return nonce

    def seal_chunk(self, plaintext: bytes, *, last: bool) -> bytes:
        return self._aead.encrypt(self._next_nonce(len(plaintext), last), plaintext, None)

    def seal_chunk_into(self, plaintext: memoryview, out: memoryview, *, last: bool) -> None:
        """:meth:`seal_chunk`, its result written into ``out`` (exactly ``len(plaintext) +
        16`` bytes): no copy of the chunk is made."""
        self._aead.encrypt_into(self._next_nonce(len(plaintext), last), plaintext, None, out)


def _open_header(header: StreamHeader, keks: KeyWrapper | KekResolver,
                 associated_data: bytes) -> tuple[bytes, bytes, bytes]:
    """(data key, payload key, header key) of an authenticated header, or raise."""
    kek = resolve_kek(keks, header.kek_id)
    try:
        dek = kek.unwrap(header.wrapped_key, b"iotsec stream v1\x00" + header.prefix())
    except DataKeyUnwrapError:
        raise StreamHeaderError(
            "the stream header does not authenticate (its data key does not unwrap): the "
            "header was altered, or the file was encrypted under another key-encryption "
            f"key named {header.kek_id!r}") from None
    payload_key, header_key = _derive(dek, header.salt, associated_data)
    if not _hmac_sha256_matches(header_key, header.authenticated_part(), header.mac):
        raise StreamHeaderError("the stream header does not authenticate: it was altered, "
                                "or the associated data differs")
    return dek, payload_key, header_key


def rewrap_header(header: StreamHeader, keks: KeyWrapper | KekResolver, target: KeyWrapper,
                  *, associated_data: bytes = b"") -> bytes:
    """The header of the same stream with its data key wrapped under ``target`` instead.

    The old header is authenticated first. Salt, nonce prefix and data key stay, so every
    chunk after the header is unchanged and still opens: nothing is encrypted again (no
    nonce is used twice), only the key wrapping and the header MAC are new."""
    dek, _, header_key = _open_header(header, keks, associated_data)
    partial = StreamHeader(header.version, header.chunk_size, check_kek_id(target.key_id),
                           header.salt, header.nonce_prefix, b"", b"")
    wrapped = target.wrap(dek, b"iotsec stream v1\x00" + partial.prefix())
    if not 1 <= len(wrapped) <= MAX_WRAPPED_KEY:
        raise DataProtectionError(f"the key-encryption key returned a wrapped key of "
                                  f"{len(wrapped)} bytes; at most {MAX_WRAPPED_KEY} fit")
    body = StreamHeader(header.version, header.chunk_size, partial.kek_id, header.salt,
                        header.nonce_prefix, wrapped, b"").authenticated_part()
    return body + _hmac_sha256(header_key, body)


class StreamOpener:
    """Authenticates a header (on construction) and then opens chunks in order."""

    __slots__ = ("_aead", "_done", "_index", "_prefix", "header")

    def __init__(self, header: StreamHeader, keks: KeyWrapper | KekResolver, *,
                 associated_data: bytes = b"") -> None:
        _, payload_key, _ = _open_header(header, keks, associated_data)
        self.header = header
        self._aead = AESGCM(payload_key)
        self._prefix = header.nonce_prefix
        self._index = 0
        self._done = False

    def _try(self, ciphertext: bytes, last: bool) -> bytes | None:
        try:
            return self._aead.decrypt(_nonce(self._prefix, self._index, last), ciphertext, None)
        except InvalidTag:
            return None

    def open_chunk(self, ciphertext: bytes, *, last: bool) -> bytes:
        """The plaintext of the next chunk, only if it authenticates as chunk number
        ``index`` (and as the final one when ``last``)."""
        index, full = self._index, self.header.chunk_size + TAG
        if self._done:
            raise StreamFormatError("data follows the final chunk")
        if len(ciphertext) > full or (not last and len(ciphertext) != full) \
                or len(ciphertext) < TAG:
            raise StreamTruncatedError(f"chunk {index} is cut short: the stream was truncated")
        if index >= MAX_CHUNKS:
            raise StreamFormatError("the stream has more chunks than its format allows")
        plaintext = self._try(ciphertext, last)
        if plaintext is None:
            # Only on failure: find out whether a whole chunk was sealed with the other flag,
            # to tell a cut or an extended stream from altered data. Nothing is released.
            if len(ciphertext) == full and self._try(ciphertext, not last) is not None:
                if last:
                    raise StreamTruncatedError(
                        f"the stream ends after chunk {index} but that is not its final "
                        "chunk: the stream was truncated")
                raise StreamFormatError(f"chunk {index} is the final chunk, but data follows it")
            raise StreamChunkError(
                f"chunk {index} does not authenticate: it was altered, reordered, truncated or "
                "taken from another file")
        if last and not plaintext and index:
            raise StreamFormatError("an empty final chunk follows data")
        self._index = index + 1
        self._done = last
        return plaintext


class StreamInfo(NamedTuple):
    kek_id: str
    chunk_size: int
    chunks: int
    plaintext_bytes: int
    ciphertext_bytes: int
    #: SHA-256 of the stream's header: unique per stream (random salt and data key).
    header_sha256: str = ""


def _fill(src: io.BufferedIOBase, buffer: bytearray) -> int:
    """Read into ``buffer`` until it is full or the stream ends; how many bytes came."""
    view, got = memoryview(buffer), 0
    while got < len(buffer):
        count = src.readinto(view[got:])
        if count is None:
            raise DataProtectionError("the input is a non-blocking stream with no data ready")
        if not count:
            break
        got += count
    return got


def _seal_blocks(src: io.BufferedIOBase, dst: BinaryIO, sealer: StreamSealer
                 ) -> tuple[int, int, int]:
    """Seal a buffered stream (a file, standard input) a block of whole chunks at a time:
    one read and one write for many chunks, each chunk still sealed on its own, into the
    block's output. The three buffers are made once and reused (no memory allocated, and
    faulted in, per block); one block is read ahead to know which chunk is the last.
    Returns (bytes written, plaintext bytes, chunks)."""
    chunk_size = sealer.chunk_size
    block = max(1, IO_BLOCK // chunk_size) * chunk_size
    buffers = (bytearray(block), bytearray(block))
    sealed = memoryview(bytearray(block + (block // chunk_size) * TAG))
    written, plain, chunks = 0, 0, 0
    current, got = 0, _fill(src, buffers[0])
    while True:
        following = _fill(src, buffers[1 - current]) if got == block else 0
        count = max(1, -(-got // chunk_size))  # an empty stream: one empty chunk
        source, at = memoryview(buffers[current]), 0
        for index in range(count):
            piece = source[index * chunk_size:min(got, (index + 1) * chunk_size)]
            end = at + len(piece) + TAG
            sealer.seal_chunk_into(piece, sealed[at:end],
                                   last=not following and index == count - 1)
            at = end
        dst.write(sealed[:at])
        written, plain, chunks = written + at, plain + got, chunks + count
        if not following:
            return written, plain, chunks
        current, got = 1 - current, following


def encrypt_stream(src: BinaryIO, dst: BinaryIO, kek: KeyWrapper, *,
                   chunk_size: int = DEFAULT_CHUNK_SIZE,
                   associated_data: bytes = b"") -> StreamInfo:
    """Encrypt all of ``src`` to ``dst``, whatever the size: a buffered stream (a file,
    standard input) a block of :data:`IO_BLOCK` bytes at a time, holding three blocks (or
    chunks, when a chunk is larger); any other stream chunk by chunk, holding two."""
    sealer = StreamSealer(kek, chunk_size=chunk_size, associated_data=associated_data)
    dst.write(sealer.header)
    if isinstance(src, io.BufferedIOBase):
        written, plain, chunks = _seal_blocks(src, dst, sealer)
        return StreamInfo(kek.key_id, chunk_size, chunks, plain,
                          len(sealer.header) + written,
                          _sha256(sealer.header).hex())
    written, plain, chunks = len(sealer.header), 0, 0
    for current, last in _chunks(src, chunk_size):
        sealed = sealer.seal_chunk(current, last=last)
        dst.write(sealed)
        written += len(sealed)
        plain += len(current)
        chunks += 1
    return StreamInfo(kek.key_id, chunk_size, chunks, plain, written,
                      _sha256(sealer.header).hex())


def decrypt_stream(src: BinaryIO, dst: BinaryIO, keks: KeyWrapper | KekResolver, *,
                   associated_data: bytes = b"") -> StreamInfo:
    """Decrypt ``src`` to ``dst``, writing each chunk only after it authenticated.

    On any error, what was written to ``dst`` so far is authenticated plaintext of a stream
    that is *not* complete: callers writing a file must discard it (the CLI does).
    """
    header = StreamHeader.read(src)
    opener = StreamOpener(header, keks, associated_data=associated_data)
    read, plain, chunks = header.size, 0, 0
    for current, last in _chunks(src, header.chunk_size + TAG):
        if not current:
            raise StreamTruncatedError("the stream ends after its header: every chunk is missing")
        plaintext = opener.open_chunk(current, last=last)
        dst.write(plaintext)
        read += len(current)
        plain += len(plaintext)
        chunks += 1
    return StreamInfo(header.kek_id, header.chunk_size, chunks, plain, read,
                      _sha256(header.encode()).hex())


__all__ = [
    "DEFAULT_CHUNK_SIZE", "IO_BLOCK", "MAGIC", "RecordEnvelope", "StreamHeader", "StreamInfo",
    "StreamOpener", "StreamSealer", "decrypt_record", "decrypt_stream", "encrypt_record",
    "encrypt_stream", "read_full", "record_context", "record_kek_id", "rewrap_header",
    "rewrap_record"
]
