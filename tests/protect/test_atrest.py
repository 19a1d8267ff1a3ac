"""Encryption at rest: the streaming format (every way a stream can be attacked) and
envelope-encrypted records."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest

from iotsec.errors import (
    DataProtectionError,
    InvalidInputError,
    RecordAuthenticationError,
    RecordFormatError,
    StreamChunkError,
    StreamFormatError,
    StreamHeaderError,
    StreamTruncatedError,
    UnknownKekError,
)
from iotsec.protect import atrest
from iotsec.protect.atrest import (
    MAGIC,
    TAG,
    StreamHeader,
    StreamSealer,
    decrypt_record,
    decrypt_stream,
    encrypt_record,
    encrypt_stream,
    record_kek_id,
    rewrap_record,
)
from iotsec.protect.kek import FileKek, KekRing
from iotsec.protect.records import RecordRewrapper

CHUNK = 4096


@pytest.fixture
def kek() -> FileKek:
    return FileKek("kek-test", os.urandom(32))


def encrypt(data: bytes, kek: FileKek, *, chunk: int = CHUNK, ad: bytes = b"") -> bytes:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, kek, chunk_size=chunk, associated_data=ad)
    return out.getvalue()


def decrypt(blob: bytes, keks: FileKek | KekRing, *, ad: bytes = b"") -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(blob), out, keks, associated_data=ad)
    return out.getvalue()


def split(blob: bytes) -> tuple[bytes, list[bytes]]:
    size = StreamHeader.read(io.BytesIO(blob)).size
    body = blob[size:]
    step = CHUNK + TAG
    return blob[:size], [body[i:i + step] for i in range(0, len(body), step)]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5])
def test_round_trip_and_layout(kek: FileKek, size: int) -> None:
    data = os.urandom(size)
    blob = encrypt(data, kek)
    assert blob.startswith(MAGIC)
    header, chunks = split(blob)
    expected_chunks = max(1, -(-size // CHUNK))
    assert len(chunks) == expected_chunks
    assert len(blob) == len(header) + size + TAG * expected_chunks
    assert decrypt(blob, kek) == data
    info = StreamHeader.read(io.BytesIO(blob))
    assert (info.version, info.chunk_size, info.kek_id) == (1, CHUNK, "kek-test")


BLOCK = atrest.IO_BLOCK


@pytest.mark.parametrize(("size", "chunk"), [
    (BLOCK - 1, CHUNK), (BLOCK, CHUNK), (BLOCK + 1, CHUNK), (2 * BLOCK, CHUNK),
    (3 * BLOCK - CHUNK, CHUNK), (2 * BLOCK + 7, 1 << 16), (BLOCK, 4 * BLOCK),
    (4 * BLOCK + 1, 4 * BLOCK), (0, 4 * BLOCK)])
def test_blocks_of_chunks_are_the_chunks_sealed_one_by_one(kek: FileKek, size: int,
                                                            chunk: int) -> None:
    """encrypt_stream reads and writes many chunks at a time: each is still sealed on its
    own, as chunk number i (the last one as the last), which StreamOpener checks."""
    data = os.urandom(size)
    blob = encrypt(data, kek, chunk=chunk)
    header = StreamHeader.read(io.BytesIO(blob))
    assert header.chunk_size == chunk
    body = blob[header.size:]
    count = max(1, -(-size // chunk))
    assert len(body) == size + TAG * count
    opener = atrest.StreamOpener(header, kek)
    step, plain = chunk + TAG, []
    for index in range(count):
        plain.append(opener.open_chunk(body[index * step:(index + 1) * step],
                                       last=index == count - 1))
    assert b"".join(plain) == data


def test_short_reads_from_a_pipe_are_handled(kek: FileKek) -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data, self._pos, self._rnd = data, 0, random.Random(5)

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            n = min(size, self._rnd.randint(1, 700))
            piece = self._data[self._pos:self._pos + n]
            self._pos += len(piece)
            return piece

    data = os.urandom(5 * CHUNK + 77)
    out = io.BytesIO()
    encrypt_stream(Trickle(data), out, kek, chunk_size=CHUNK)  # type: ignore[arg-type]
    back = io.BytesIO()
    decrypt_stream(Trickle(out.getvalue()), back, kek)  # type: ignore[arg-type]
    assert back.getvalue() == data


def test_associated_data_is_bound(kek: FileKek) -> None:
    blob = encrypt(b"x" * 100, kek, ad=b"backup of 2026-11-26")
    assert decrypt(blob, kek, ad=b"backup of 2026-11-26") == b"x" * 100
    with pytest.raises(StreamHeaderError, match="associated data"):
        decrypt(blob, kek, ad=b"another backup")


def test_truncation_is_detected(kek: FileKek) -> None:
    data = os.urandom(4 * CHUNK)
    blob = encrypt(data, kek)
    header, chunks = split(blob)
    # Cut at a chunk boundary: the new last chunk was not sealed as the last one.
    for keep in (1, 2, 3):
        with pytest.raises(StreamTruncatedError, match=f"after chunk {keep - 1}"):
            decrypt(header + b"".join(chunks[:keep]), kek)
    with pytest.raises(StreamTruncatedError, match="after its header"):
        decrypt(header, kek)
    for cut in (5, len(MAGIC) + 2, len(header) - 1):
        with pytest.raises(StreamTruncatedError, match="header"):
            decrypt(blob[:cut], kek)
    # Cut inside a chunk.
    with pytest.raises(StreamChunkError):
        decrypt(header + chunks[0] + chunks[1][:100], kek)
    with pytest.raises(StreamTruncatedError, match="cut short"):
        decrypt(header + chunks[0] + chunks[1][:TAG - 1], kek)


def test_extension_after_the_final_chunk_is_detected(kek: FileKek) -> None:
    blob = encrypt(os.urandom(2 * CHUNK), kek)
    _, chunks = split(blob)
    with pytest.raises(StreamFormatError, match="data follows"):
        decrypt(blob + chunks[-1], kek)
    with pytest.raises(StreamFormatError, match="data follows"):
        decrypt(blob + os.urandom(CHUNK + TAG), kek)
    with pytest.raises(StreamFormatError, match="data follows"):
        decrypt(blob + b"junk", kek)
    # With a short final chunk, appended bytes shift the chunk boundaries: altered data.
    short = encrypt(os.urandom(CHUNK + 10), kek)
    with pytest.raises(StreamChunkError, match="chunk 1 "):
        decrypt(short + b"junk", kek)


def test_reordered_and_swapped_chunks_fail(kek: FileKek) -> None:
    data = os.urandom(3 * CHUNK)
    header, chunks = split(encrypt(data, kek))
    with pytest.raises(StreamChunkError, match="chunk 0 "):
        decrypt(header + chunks[1] + chunks[0] + chunks[2], kek)
    with pytest.raises(StreamChunkError, match="chunk 1 "):
        decrypt(header + chunks[0] + chunks[0] + chunks[2], kek)
    # Two files under the same KEK: a chunk of one does not fit into the other.
    other_header, other_chunks = split(encrypt(data, kek))
    with pytest.raises(StreamChunkError, match="chunk 1 "):
        decrypt(header + chunks[0] + other_chunks[1] + chunks[2], kek)
    # Nor does the other file's header with this file's chunks.
    with pytest.raises(StreamChunkError, match="chunk 0 "):
        decrypt(other_header + b"".join(chunks), kek)


def test_only_authenticated_plaintext_is_released(kek: FileKek) -> None:
    data = os.urandom(3 * CHUNK)
    header, chunks = split(encrypt(data, kek))
    tampered = bytearray(chunks[2])
    tampered[10] ^= 1
    out = io.BytesIO()
    with pytest.raises(StreamChunkError, match="chunk 2 "):
        decrypt_stream(io.BytesIO(header + chunks[0] + chunks[1] + bytes(tampered)), out, kek)
    assert out.getvalue() == data[:2 * CHUNK]  # chunks 0 and 1 authenticated, 2 never written
    out = io.BytesIO()
    with pytest.raises(StreamChunkError):
        decrypt_stream(io.BytesIO(header + bytes(tampered) + chunks[1]), out, kek)
    assert out.getvalue() == b""


def _header_field_offsets(blob: bytes) -> dict[str, int]:
    h = StreamHeader.read(io.BytesIO(blob))
    base = len(MAGIC) + 3 + len(h.kek_id)
    return {"magic": 0, "version": 8, "log2": 9, "kek_id": 11, "salt": base,
            "prefix": base + 32, "wrapped_len": base + 39, "wrapped": base + 41,
            "mac": h.size - 1}


@pytest.mark.parametrize(("field", "error"), [
    ("magic", StreamFormatError), ("version", StreamFormatError),
    ("log2", StreamHeaderError), ("kek_id", UnknownKekError), ("salt", StreamHeaderError),
    ("prefix", StreamHeaderError), ("wrapped_len", StreamFormatError),
    ("wrapped", StreamHeaderError), ("mac", StreamHeaderError),
])
def test_modified_header_fields(kek: FileKek, field: str, error: type[Exception]) -> None:
    blob = bytearray(encrypt(os.urandom(CHUNK + 1), kek))
    offset = _header_field_offsets(bytes(blob))[field]
    blob[offset] ^= {"kek_id": 0x02, "log2": 0x01, "wrapped_len": 0x80}.get(field, 0x01)
    with pytest.raises(error):
        decrypt(bytes(blob), KekRing(kek, [FileKek("kek-tesv", os.urandom(32))]))


def test_keys_must_match(kek: FileKek) -> None:
    blob = encrypt(b"secret", kek)
    with pytest.raises(UnknownKekError):
        decrypt(blob, FileKek("kek-other", os.urandom(32)))
    with pytest.raises(StreamHeaderError, match="another key-encryption key"):
        decrypt(blob, FileKek("kek-test", os.urandom(32)))  # same id, other key
    ring = KekRing(FileKek("kek-new", os.urandom(32)), [kek])
    assert decrypt(blob, ring) == b"secret"


def test_header_and_chunk_parameters_are_bounded(kek: FileKek) -> None:
    for size in (1000, 3 * 1024, 1 << 23):
        with pytest.raises(InvalidInputError, match="power of two"):
            StreamSealer(kek, chunk_size=size)
    assert StreamHeader.read(io.BytesIO(encrypt(b"", kek, chunk=1 << 22))).chunk_size == 1 << 22
    blob = bytearray(encrypt(b"x", kek))
    blob[9] = 23  # 8 MiB chunks: more than a reader may be made to hold
    with pytest.raises(StreamFormatError, match="chunk size"):
        decrypt(bytes(blob), kek)
    blob[9], blob[10] = 12, 0  # empty KEK id
    with pytest.raises(StreamFormatError, match="id length"):
        decrypt(bytes(blob), kek)
    sealer = StreamSealer(kek, chunk_size=CHUNK)
    with pytest.raises(DataProtectionError, match="shorter"):
        sealer.seal_chunk(b"x", last=False)
    sealer.seal_chunk(b"x" * CHUNK, last=False)
    with pytest.raises(DataProtectionError, match="empty"):
        sealer.seal_chunk(b"", last=True)
    sealer.seal_chunk(b"x", last=True)
    with pytest.raises(DataProtectionError, match="finished"):
        sealer.seal_chunk(b"x", last=True)
    with pytest.raises(InvalidInputError):
        encrypt(b"x", kek, ad=b"a" * (atrest.MAX_ASSOCIATED_DATA + 1))


# --- records ------------------------------------------------------------------------------


def test_record_round_trip_and_binding(kek: FileKek) -> None:
    blob = encrypt_record(b"device secret", kek, table="device_secrets", record_id=42,
                       field="secret")
    assert b"device secret" not in blob
    assert decrypt_record(blob, kek, table="device_secrets", record_id=42,
                       field="secret") == b"device secret"
    assert record_kek_id(blob) == "kek-test"
    # Each record has its own data key: sealing twice gives unrelated ciphertexts.
    assert encrypt_record(b"device secret", kek, table="device_secrets", record_id=42,
                       field="secret")[-40:] != blob[-40:]
    places: list[tuple[str, str | int, str]] = [
        ("device_secrets", 43, "secret"), ("devices", 42, "secret"),
        ("device_secrets", 42, "other"), ("device_secrets", "42", "secret")]
    for table, rid, field in places:
        with pytest.raises(RecordAuthenticationError, match="copied"):
            decrypt_record(blob, kek, table=table, record_id=rid, field=field)


def test_tampered_records_and_wrong_keys(kek: FileKek) -> None:
    blob = encrypt_record(b"v", kek, table="t", record_id="r", field="f")
    env = atrest.RecordEnvelope.parse(blob)
    def flipped(data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 0x01])

    altered_ct = atrest.RecordEnvelope(env.kek_id, env.wrapped_key, env.nonce,
                                       flipped(env.ciphertext)).encode()
    altered_key = atrest.RecordEnvelope(env.kek_id, flipped(env.wrapped_key), env.nonce,
                                        env.ciphertext).encode()
    for bad in (altered_ct, altered_key):
        with pytest.raises(RecordAuthenticationError):
            decrypt_record(bad, kek, table="t", record_id="r", field="f")
    with pytest.raises(UnknownKekError):
        decrypt_record(blob, FileKek("kek-other", os.urandom(32)), table="t", record_id="r",
                    field="f")
    with pytest.raises(RecordAuthenticationError):
        decrypt_record(blob, FileKek("kek-test", os.urandom(32)), table="t", record_id="r",
                    field="f")
    for malformed in (b"", b"\x02" + blob[1:], blob[:20], b"\x01\x00", b"\x01\x41" + blob[2:]):
        with pytest.raises(RecordFormatError):
            decrypt_record(malformed, kek, table="t", record_id="r", field="f")
    with pytest.raises(InvalidInputError):
        encrypt_record(b"v", kek, table="t; drop", record_id="r", field="f")
    with pytest.raises(InvalidInputError):
        encrypt_record(b"v", kek, table="t", record_id=True, field="f")
    with pytest.raises(InvalidInputError, match="Unicode"):
        encrypt_record(b"v", kek, table="t", record_id="\ud800", field="f")


def test_rewrap_keeps_the_ciphertext(kek: FileKek) -> None:
    blob = encrypt_record(b"value", kek, table="t", record_id=1, field="f")
    new = FileKek("kek-next", os.urandom(32))
    moved = rewrap_record(blob, kek, new, table="t", record_id=1, field="f")
    assert record_kek_id(moved) == "kek-next"
    assert atrest.RecordEnvelope.parse(moved).ciphertext == \
        atrest.RecordEnvelope.parse(blob).ciphertext
    assert decrypt_record(moved, KekRing(new, [kek]), table="t", record_id=1, field="f") == b"value"
    with pytest.raises(RecordAuthenticationError):
        rewrap_record(blob, kek, new, table="t", record_id=2, field="f")


def test_rewrapper_moves_many_records_from_several_keys(kek: FileKek) -> None:
    other = FileKek("kek-older", os.urandom(32))
    new = FileKek("kek-next", os.urandom(32))
    records = {rid: encrypt_record(f"value {rid}".encode(), kek if rid % 2 else other, table="t",
                                record_id=rid, field="f") for rid in range(6)}
    rewrapper = RecordRewrapper(KekRing(kek, [other]), new, table="t", field="f")
    assert rewrapper.target == "kek-next"
    for rid, blob in records.items():
        moved = rewrapper.rewrap(blob, rid)
        assert record_kek_id(moved) == "kek-next"
        assert atrest.RecordEnvelope.parse(moved).ciphertext == \
            atrest.RecordEnvelope.parse(blob).ciphertext
        assert decrypt_record(moved, new, table="t", record_id=rid, field="f") == \
            f"value {rid}".encode()
        with pytest.raises(UnknownKekError):
            decrypt_record(moved, kek, table="t", record_id=rid, field="f")
    # A record bound to another id, a malformed one, or one under a KEK the resolver does
    # not know each fails on its own, and the next record still moves.
    with pytest.raises(RecordAuthenticationError, match=r"t\.f of record 7"):
        rewrapper.rewrap(records[1], 7)
    with pytest.raises(RecordFormatError):
        rewrapper.rewrap(records[1][:30], 1)
    stranger = encrypt_record(b"x", FileKek("kek-gone", os.urandom(32)), table="t", record_id=9,
                           field="f")
    for _ in range(2):  # a failed lookup is not remembered as a success
        with pytest.raises(UnknownKekError):
            rewrapper.rewrap(stranger, 9)
    assert decrypt_record(rewrapper.rewrap(records[2], 2), new, table="t", record_id=2,
                       field="f") == b"value 2"
    with pytest.raises(InvalidInputError):
        RecordRewrapper(kek, new, table="t; drop", field="f")
    with pytest.raises(InvalidInputError):
        rewrapper.rewrap(records[1], True)


def test_record_kek_id_reads_only_well_formed_envelopes(kek: FileKek) -> None:
    blob = encrypt_record(b"v", kek, table="t", record_id="r", field="f")
    assert record_kek_id(blob) == "kek-test"
    bad_ids = (b"\x01\x08kek\xfftest", b"\x01\x08kek test")
    for bad in bad_ids:
        with pytest.raises(RecordFormatError):
            record_kek_id(bad + blob[10:])
    for malformed in (b"", b"\x01", blob[:12], bytearray(blob), blob[:len(blob) - 17]):
        with pytest.raises(RecordFormatError):
            record_kek_id(malformed)  # type: ignore[arg-type]


def test_stream_files_on_disk(kek: FileKek, tmp_path: Path) -> None:
    plain = tmp_path / "plain.bin"
    plain.write_bytes(os.urandom(10 * CHUNK + 3))
    enc = tmp_path / "plain.bin.iotsec"
    with plain.open("rb") as src, enc.open("wb") as dst:
        info = encrypt_stream(src, dst, kek, chunk_size=CHUNK)
    assert (info.chunks, info.plaintext_bytes) == (11, 10 * CHUNK + 3)
    assert info.ciphertext_bytes == enc.stat().st_size
    with enc.open("rb") as src:
        out = io.BytesIO()
        back = decrypt_stream(src, out, kek)
    assert out.getvalue() == plain.read_bytes() and back.ciphertext_bytes == info.ciphertext_bytes
