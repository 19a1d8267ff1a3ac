"""Hypothesis against the two parsers that read hostile bytes: COSE messages and encrypted
streams. Whatever the input, the only exceptions are iotsec errors, and nothing but the
original plaintext is ever returned."""

from __future__ import annotations

import io
import os

from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.errors import IotsecError, PayloadError
from iotsec.protect import cbor
from iotsec.protect.atrest import StreamHeader, decrypt_stream, encrypt_stream
from iotsec.protect.cose import SEQ_LABEL, parse_canonical, parse_generic
from iotsec.protect.kek import FileKek
from iotsec.protect.pairing import SigningKey
from iotsec.protect.payload import Keyring, open, seal
from iotsec.protect.replay import ReplayWindow
from tests.protect.support import DEVICE, make_pair

PAIR = make_pair()
SIGNER = SigningKey(ed25519.Ed25519PrivateKey.generate(), sender_id=DEVICE)
RING = Keyring([PAIR.app.receive, SIGNER.verifying_key()])
PAYLOAD = b"temperature=21.5;humidity=40"
MESSAGES = [seal(PAYLOAD, PAIR.device.send, seq=5, external_aad=b"t"),
            seal(PAYLOAD, SIGNER, seq=6, external_aad=b"t")]
KEK = FileKek("kek-fuzz", os.urandom(32))
PLAIN = os.urandom(3 * 4096 + 100)


def _stream() -> bytes:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(PLAIN), out, KEK, chunk_size=4096)
    return out.getvalue()


STREAM = _stream()
SMALL_STREAM = STREAM[:StreamHeader.read(io.BytesIO(STREAM)).size] + b"\x00" * 40


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, value) edits: flip, insert, delete, truncate."""
    buf = bytearray(data)
    for kind, pos, value in edits:
        if not buf:
            break
        i = pos % len(buf)
        if kind == 0:
            buf[i] ^= value or 1
        elif kind == 1:
            buf.insert(i, value)
        elif kind == 2:
            del buf[i]
        else:
            del buf[i:]
    return bytes(buf)


edits = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, 255)),
                 min_size=1, max_size=4)


def _open(message: bytes) -> None:
    try:
        opened = open(message, RING, ReplayWindow(), external_aad=b"t")
    except PayloadError:
        return
    assert opened.payload == PAYLOAD  # only an unchanged message can open


@given(st.binary(max_size=300))
@settings(max_examples=1500, deadline=None)
def test_cose_parser_random_bytes(data: bytes) -> None:
    _open(data)


@given(st.sampled_from(MESSAGES), edits)
@settings(max_examples=1500, deadline=None)
def test_cose_parser_mutated_messages(message: bytes, changes: list[tuple[int, int, int]]) -> None:
    _open(mutate(message, changes))


@given(st.binary(max_size=64).map(lambda b: b"\xd0" + b) | st.binary(max_size=64).map(
    lambda b: b"\xd2\x84" + b))
@settings(max_examples=800, deadline=None)
def test_cose_parser_tagged_garbage(data: bytes) -> None:
    _open(data)


def _decrypt(blob: bytes) -> None:
    out = io.BytesIO()
    try:
        decrypt_stream(io.BytesIO(blob), out, KEK)
    except IotsecError:
        assert PLAIN.startswith(out.getvalue())  # only authenticated chunks were written
        return
    assert out.getvalue() == PLAIN


@given(st.binary(max_size=400))
@settings(max_examples=800, deadline=None)
def test_stream_parser_random_bytes(data: bytes) -> None:
    _decrypt(data)
    _decrypt(STREAM[:11] + data)  # past the magic, into the header fields


@given(edits)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_stream_parser_mutated_streams(changes: list[tuple[int, int, int]]) -> None:
    _decrypt(mutate(STREAM, changes))


@given(edits)
@settings(max_examples=400, deadline=None)
def test_stream_header_mutations(changes: list[tuple[int, int, int]]) -> None:
    _decrypt(mutate(SMALL_STREAM, changes))


def _agree(data: bytes) -> None:
    fast = parse_canonical(data)
    if fast is not None:
        assert fast == parse_generic(data)


def test_canonical_fast_path_is_taken_for_what_seal_writes() -> None:
    for message in MESSAGES:
        assert parse_canonical(message) == parse_generic(message)
    # A layout seal() does not write (kid in the unprotected bucket) goes the general way.
    p = parse_generic(MESSAGES[0])
    moved = cbor.dumps(cbor.Tag(16, [cbor.dumps({1: p.alg, SEQ_LABEL: p.seq}),
                                     {5: p.iv, 4: p.kid}, p.body]))
    assert parse_canonical(moved) is None and parse_generic(moved).kid == p.kid


@given(st.sampled_from(MESSAGES), edits)
@settings(max_examples=3000, deadline=None)
def test_canonical_fast_path_agrees_with_the_general_parser(
        message: bytes, changes: list[tuple[int, int, int]]) -> None:
    _agree(mutate(message, changes))


@given(st.sampled_from([b"\xd0\x83", b"\xd2\x84"]), st.binary(max_size=80))
@settings(max_examples=2000, deadline=None)
def test_canonical_fast_path_agrees_on_garbage(prefix: bytes, data: bytes) -> None:
    _agree(prefix + data)
    _agree(prefix + b"\x55\xa3\x01\x03\x04\x48" + data)
