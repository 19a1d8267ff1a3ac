"""Hypothesis over the image parser: arbitrary bytes and mutated valid images.

Properties: ``verify_image`` and ``inspect_image`` raise only FirmwareError subclasses
(never another exception), no read reaches past what the image declares, and a mutated
image verifies only if every signed byte is unchanged."""

from __future__ import annotations

import contextlib
import struct
from functools import cache

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from iotsec.errors import FirmwareError
from iotsec.firmware import (
    Dependency,
    ImageVersion,
    SignOptions,
    TrustedKey,
    inspect_image,
    sign_image,
    verify_image,
)
from iotsec.firmware.image import IMAGE_MAGIC, TLV_INFO_MAGIC, TLV_PROT_INFO_MAGIC
from iotsec.firmware.image_keys import FirmwareKeyType, LocalImageSigner, generate_signer
from tests.firmware.support import CountingStream, PlainStream, declared_size

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@cache
def _signers() -> tuple[LocalImageSigner, LocalImageSigner]:
    return (generate_signer(FirmwareKeyType.ED25519),
            generate_signer(FirmwareKeyType.ECDSA_P256))


@cache
def _images() -> tuple[tuple[bytes, int, TrustedKey], ...]:
    """Valid images (image, end of signed part, key): small, with protected TLVs, one
    padded to a slot with a trailer, one big-endian."""
    ed, p256 = _signers()
    out = []
    for signer, options in (
            (ed, SignOptions(version=ImageVersion(1, 2, 3, 4), header_size=64,
                             pad_header=True, security_counter=9,
                             dependencies=Dependency.parse_list("(1,2.0)"))),
            (p256, SignOptions(version=ImageVersion(3), header_size=32, pad_header=True,
                               slot_size=0x1000, pad=True, confirm=True)),
            (ed, SignOptions(version=ImageVersion(0, 1), header_size=32, pad_header=True,
                             endian="big", security_counter=1, public_key_format="full"))):
        image = sign_image(bytes(range(200)) * 2, signer, options)
        key = TrustedKey.of(signer.public_key())
        out.append((image, verify_image(image, [key]).size, key))
    return tuple(out)


def _check(data: bytes, keys: list[TrustedKey]) -> bool:
    """Verify and inspect ``data`` from bytes and from two kinds of stream; return whether
    it verified. Anything but a FirmwareError propagates and fails the test."""
    outcomes: list[bool] = []
    messages: list[tuple[str, str]] = []
    for source in ("bytes", "stream", "plain"):
        stream: CountingStream | PlainStream | None = None
        try:
            if source == "bytes":
                verify_image(data, keys)
            else:
                stream = (CountingStream(data) if source == "stream"
                          else PlainStream(data, step=13))
                verify_image(stream, keys)
            outcomes.append(True)
        except FirmwareError as exc:
            outcomes.append(False)
            messages.append((str(exc), exc.hint))
        if stream is not None:
            assert stream.furthest <= declared_size(data), (stream.furthest, len(data))
    assert len(set(outcomes)) == 1, outcomes
    assert all(message and hint for message, hint in messages), messages
    with contextlib.suppress(FirmwareError):
        inspect_image(data)
    return outcomes[0]


def _keys() -> list[TrustedKey]:
    return [TrustedKey.of(s.public_key()) for s in _signers()]


@FUZZ
@given(st.binary(max_size=600))
@example(b"")
@example(struct.pack("<I", IMAGE_MAGIC) + b"\0" * 28)
@example(struct.pack("<IIHHIIBBHII", IMAGE_MAGIC, 0, 32, 0, 0, 0, 1, 0, 0, 0, 0)
         + struct.pack("<HH", TLV_INFO_MAGIC, 0xFFFF))
@example(struct.pack("<IIHHIIBBHII", IMAGE_MAGIC, 0, 32, 8, 0, 0, 1, 0, 0, 0, 0)
         + struct.pack("<HH", TLV_PROT_INFO_MAGIC, 8) + struct.pack("<HH", 0x50, 9))
def test_arbitrary_bytes(data: bytes) -> None:
    assert not _check(data, _keys())


@FUZZ
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=400))
def test_arbitrary_bytes_behind_a_valid_magic(head: bytes, rest: bytes) -> None:
    """Random headers behind the real magic reach the size and TLV checks."""
    data = struct.pack("<I", IMAGE_MAGIC) + head[4:8] + struct.pack(
        "<H", 32 + head[8] % 64) + head[10:] + rest
    assert not _check(data, _keys())


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("set16"), st.integers(0, 10_000), st.integers(0, 0xFFFF)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 8)),
)


def _mutate(image: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(image)
    for op, where, value in ops:
        if not data:
            break
        pos = where % len(data)
        if op == "flip":
            data[pos] ^= value
        elif op == "set16":
            data[pos:pos + 2] = value.to_bytes(2, "little")
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = bytes([value])
        else:
            del data[pos:pos + value]
    return bytes(data)


@FUZZ
@given(st.integers(0, 2), st.lists(mutation, min_size=1, max_size=4))
def test_mutated_valid_images(which: int, ops: list[tuple[str, int, int]]) -> None:
    image, signed_end, key = _images()[which]
    mutated = _mutate(image, ops)
    if _check(mutated, [key]):
        # Only the slot padding or trailer may differ in an image that still verifies.
        assert mutated[:signed_end] == image[:signed_end]


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize(("start", "count"), [(4, 8), (8, 8), (6, 4)])
def test_a_header_declaring_less_than_itself_is_refused_within_its_32_bytes(
        which: int, start: int, count: int) -> None:
    """Deleting header bytes can leave a header size under 32: the verifier refuses it after
    reading no more than the fixed header (found by the mutation fuzzer)."""
    image, _, key = _images()[which]
    assert not _check(_mutate(image, [("delete", start, count)]), [key])


@settings(max_examples=50, deadline=None, database=None)
@given(st.integers(0, 2))
def test_valid_images_verify(which: int) -> None:
    image, _, key = _images()[which]
    assert _check(image, [key])
