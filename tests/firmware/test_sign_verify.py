"""Signing and verifying with iotsec alone: every key type, every layout option, and what
``verify_image`` reports."""

from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path

import pytest

from iotsec.errors import (
    ImageLayoutError,
    InvalidInputError,
    NoTrustedKeyError,
    SecurityCounterError,
    UntrustedKeyError,
    VersionDowngradeError,
)
from iotsec.firmware import (
    Dependency,
    ImageVersion,
    SignOptions,
    TrustedKey,
    inspect_image,
    sign_image,
    sign_stream,
    verify_image,
)
from iotsec.firmware.image import ImageFlag, ImageHeader, TlvType
from iotsec.firmware.image_keys import FirmwareKeyType, LocalImageSigner
from iotsec.firmware.sign import auto_security_counter
from iotsec.firmware.trailer import BOOT_MAGIC, trailer_size
from tests.firmware.support import CountingStream, PlainStream

FIRMWARE = bytes(range(256)) * 40 + b"tail"
V = ImageVersion.parse("1.2.3+4")


def opts(**kw: object) -> SignOptions:
    base: dict[str, object] = {"version": V, "header_size": 0x200, "pad_header": True}
    base.update(kw)
    return SignOptions(**base)  # type: ignore[arg-type]


def test_round_trip_every_key_type(signer: LocalImageSigner) -> None:
    image = sign_image(FIRMWARE, signer, opts(security_counter=7))
    result = verify_image(image, [signer.public_key()], 7)
    assert result.version == V
    assert result.security_counter == 7
    assert result.key_type is signer.key_type
    assert result.size == len(image)
    assert result.digest == hashlib.sha256(image[:result.header.hashed_size]).digest()
    assert image[0x200:0x200 + len(FIRMWARE)] == FIRMWARE
    assert image[32:0x200] == b"\xff" * (0x200 - 32)  # erased, like imgtool --pad-header
    sig = [t for t in result.unprotected_tlvs if t.type == signer.key_type.signature_tlv]
    assert len(sig) == 1
    expected_len = {FirmwareKeyType.ED25519: 64, FirmwareKeyType.RSA_2048: 256,
                    FirmwareKeyType.RSA_3072: 384}.get(signer.key_type)
    if expected_len:
        assert len(sig[0].value) == expected_len
    else:
        assert 68 <= len(sig[0].value) <= 72 and sig[0].value[0] == 0x30


def test_bytes_stream_and_plain_stream_agree(ed25519: LocalImageSigner) -> None:
    image = sign_image(FIRMWARE, ed25519, opts(security_counter=1))
    results = [verify_image(src, [ed25519.public_key()])
               for src in (image, bytearray(image), memoryview(image), io.BytesIO(image),
                           CountingStream(image), PlainStream(image, step=7))]
    assert len({r.digest for r in results}) == 1


def test_header_must_be_blank_without_pad_header(p256: LocalImageSigner) -> None:
    blank = bytes(0x200) + FIRMWARE
    image = sign_image(blank, p256, opts(pad_header=False))
    result = verify_image(image, [p256.public_key()])
    assert result.header.img_size == len(FIRMWARE)
    assert image[32:0x200] == bytes(0x200 - 32)
    with pytest.raises(ImageLayoutError, match="zero bytes"):
        sign_image(FIRMWARE, p256, opts(pad_header=False))
    with pytest.raises(ImageLayoutError, match="shorter"):
        sign_image(b"\0" * 10, p256, opts(pad_header=False))


def test_slot_padding_and_trailer(ed25519: LocalImageSigner) -> None:
    image = sign_image(FIRMWARE, ed25519, opts(slot_size=0x8000, pad=True, align=4))
    assert len(image) == 0x8000
    assert image.endswith(BOOT_MAGIC)
    result = verify_image(image, [ed25519.public_key()])
    assert all(b == 0xFF for b in image[result.size:-16])
    info = inspect_image(image)
    assert info.padding == 0x8000 - result.size
    assert info.trailer is not None and info.trailer.image_ok == 0xFF

    confirmed = sign_image(FIRMWARE, ed25519, opts(slot_size=0x8000, pad=True, confirm=True,
                                                  max_align=32))
    info = inspect_image(confirmed)
    assert info.trailer is not None
    assert (info.trailer.max_align, info.trailer.image_ok) == (32, 0x01)
    assert confirmed[-16:-14] == (32).to_bytes(2, "little")


def test_slot_size_too_small_is_refused(p256: LocalImageSigner) -> None:
    room = len(FIRMWARE) + 0x200 + trailer_size(align=1, max_align=8)
    with pytest.raises(ImageLayoutError, match="exceeds the slot size"):
        sign_image(FIRMWARE, p256, opts(slot_size=room))
    with pytest.raises(InvalidInputError, match="--slot-size"):
        opts(pad=True)


def test_dependencies_load_address_and_flags(ed25519: LocalImageSigner) -> None:
    deps = Dependency.parse_list("(1, 1.2.3+0), (2,0.1)")
    image = sign_image(FIRMWARE, ed25519, opts(dependencies=deps, load_addr=0x20000000,
                                               non_bootable=True))
    result = verify_image(image, [ed25519.public_key()])
    assert result.dependencies == deps
    assert result.header.load_addr == 0x20000000
    assert result.header.flags == ImageFlag.RAM_LOAD | ImageFlag.NON_BOOTABLE
    assert result.security_counter is None


def test_public_key_in_full(signer: LocalImageSigner) -> None:
    image = sign_image(FIRMWARE, signer, opts(public_key_format="full"))
    result = verify_image(image, [signer.public_key()])
    kinds = [t.type for t in result.unprotected_tlvs]
    assert TlvType.PUBKEY in kinds and TlvType.KEYHASH not in kinds


def test_big_endian_images(ed25519: LocalImageSigner) -> None:
    image = sign_image(FIRMWARE, ed25519, opts(endian="big", security_counter=0x01020304,
                                               dependencies=Dependency.parse_list("(3,4.5.6)")))
    assert image[:4] == bytes.fromhex("96f3b83d")
    result = verify_image(image, [ed25519.public_key()], 0x01020304)
    assert result.header.endian == "big"
    assert result.security_counter == 0x01020304
    assert result.dependencies[0].min_version == ImageVersion(4, 5, 6)


def test_several_trusted_keys_and_the_one_that_signed(
        signers: dict[FirmwareKeyType, LocalImageSigner]) -> None:
    ed = signers[FirmwareKeyType.ED25519]
    image = sign_image(FIRMWARE, ed, opts())
    keys = [TrustedKey.of(s.public_key()) for s in signers.values()]
    result = verify_image(image, keys)
    assert result.key == TrustedKey.of(ed.public_key())
    assert result.signed_by == (result.key.key_id,)
    others = [k for k in keys if k.key_type is not FirmwareKeyType.ED25519]
    with pytest.raises(UntrustedKeyError):
        verify_image(image, others)
    with pytest.raises(NoTrustedKeyError):
        verify_image(image, [])


def test_anti_rollback_and_minimum_version(ed25519: LocalImageSigner) -> None:
    image = sign_image(FIRMWARE, ed25519, opts(security_counter=5))
    keys = [ed25519.public_key()]
    assert verify_image(image, keys, 5).security_counter == 5
    with pytest.raises(SecurityCounterError, match="below the minimum 6"):
        verify_image(image, keys, 6)
    assert verify_image(image, keys, min_version=ImageVersion(1, 2, 3, 4)).version == V
    with pytest.raises(VersionDowngradeError):
        verify_image(image, keys, min_version=ImageVersion(1, 2, 3, 5))
    with pytest.raises(VersionDowngradeError):
        verify_image(image, keys, min_version=ImageVersion(1, 3))
    unversioned = sign_image(FIRMWARE, ed25519, opts())
    assert verify_image(unversioned, keys, 0).security_counter is None
    with pytest.raises(SecurityCounterError, match="no security counter"):
        verify_image(unversioned, keys, 1)


def test_auto_security_counter() -> None:
    assert auto_security_counter(ImageVersion(1, 2, 3, 99)) == 0x01020003


def test_sign_stream_streams(tmp_path: Path, p256: LocalImageSigner) -> None:
    """A 6 MiB input is read in bounded chunks and never more than its stated size."""
    body = bytes(6 * 1024 * 1024)
    src = CountingStream(body + b"not part of the firmware")
    out = io.BytesIO()
    signed = sign_stream(src, len(body), out, p256, opts())
    assert src.requested == len(body)
    assert src.calls > 1
    assert signed.total_size == len(out.getvalue())
    verify_image(io.BytesIO(out.getvalue()), [p256.public_key()])
    header = ImageHeader.parse(out.getvalue()[:32])
    assert header.img_size == len(body)


def test_verification_reads_exactly_the_declared_bytes(p256: LocalImageSigner) -> None:
    image = sign_image(FIRMWARE, p256, opts(slot_size=0x10000, pad=True))
    stream = CountingStream(image)
    result = verify_image(stream, [p256.public_key()])
    assert stream.requested == result.size < len(image)


def test_version_grammar() -> None:
    assert ImageVersion.parse("1") == ImageVersion(1, 0, 0, 0)
    assert str(ImageVersion.parse("255.255.65535+4294967295")) == "255.255.65535+4294967295"
    assert ImageVersion(1, 2, 3, 4) < ImageVersion(1, 2, 3, 5) < ImageVersion(1, 2, 4, 0)
    for bad in ("", "1.2.3.4", "01.2", "1.2+3", "256.0.0", "1.2.3+4294967296", "v1", "1..2"):
        with pytest.raises(InvalidInputError):
            ImageVersion.parse(bad)


def test_dependency_grammar() -> None:
    assert Dependency.parse_list("(0,1)") == (Dependency(0, ImageVersion(1)),)
    for bad in ("", "1,1.0", "(1,1.0) junk", "(256,1.0)", "(1,1.0),(1,2.0)", "(1,x)"):
        with pytest.raises(InvalidInputError):
            Dependency.parse_list(bad)


def test_security_counter_is_a_protected_u32(ed25519: LocalImageSigner) -> None:
    image = sign_image(FIRMWARE, ed25519, opts(security_counter=0xFFFFFFFF))
    result = verify_image(image, [ed25519.public_key()], 0xFFFFFFFF)
    (tlv,) = [t for t in result.protected_tlvs if t.type == TlvType.SEC_CNT]
    assert tlv.value == struct.pack("<I", 0xFFFFFFFF)
    with pytest.raises(InvalidInputError):
        opts(security_counter=1 << 32)
    with pytest.raises(InvalidInputError):
        verify_image(image, [ed25519.public_key()], -1)
