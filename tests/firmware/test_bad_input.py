"""Every bad input the issue lists fails with its own FirmwareError subclass, from bytes and
from a stream alike, and the stream is never asked for more than the image declares."""

from __future__ import annotations

import io
import struct
from typing import Any

import pytest

from iotsec.errors import (
    DuplicateTlvError,
    FirmwareError,
    ImageHashError,
    ImageHeaderError,
    ImageMagicError,
    ImageReadError,
    ImageSignatureError,
    ImageTooLargeError,
    ImageTruncatedError,
    MissingHashError,
    MissingSignatureError,
    NoTrustedKeyError,
    SecurityCounterError,
    TlvAreaError,
    UnknownTlvError,
    UnsupportedImageError,
    UntrustedKeyError,
    VersionDowngradeError,
)
from iotsec.firmware import ImageVersion, SignOptions, sign_image, verify_image
from iotsec.firmware.image import TLV_INFO_MAGIC, TLV_PROT_INFO_MAGIC, ImageFlag, TlvType
from iotsec.firmware.image_keys import FirmwareKeyType, LocalImageSigner, TrustedKey
from tests.firmware.support import CountingStream, declared_size, forge, tlv_area

SEC7 = (TlvType.SEC_CNT, struct.pack("<I", 7))


def refused(data: bytes, keys: list[Any], error: type[FirmwareError], *,
            trailing: bytes = b"\0" * 64, **kw: Any) -> str:
    """Assert ``verify_image`` raises exactly ``error`` from bytes and from a stream, and
    that no read reached past what the image declares (``trailing`` bytes follow the
    image in the stream and must stay unread)."""
    with pytest.raises(FirmwareError) as from_bytes:
        verify_image(data, keys, **kw)
    assert type(from_bytes.value) is error, from_bytes.value
    stream = CountingStream(data + trailing)
    with pytest.raises(FirmwareError) as from_stream:
        verify_image(stream, keys, **kw)
    assert type(from_stream.value) is error, from_stream.value
    assert stream.furthest <= declared_size(data), (stream.furthest, declared_size(data))
    assert from_bytes.value.hint
    return str(from_bytes.value)


@pytest.fixture
def good(ed25519: LocalImageSigner) -> bytes:
    return sign_image(b"firmware" * 500, ed25519,
                      SignOptions(version=ImageVersion(1, 2, 3, 4), header_size=0x200,
                                  pad_header=True, security_counter=7))


@pytest.fixture
def keys(ed25519: LocalImageSigner) -> list[Any]:
    return [ed25519.public_key()]


def test_the_good_image_passes(good: bytes, keys: list[Any]) -> None:
    stream = CountingStream(good + b"\0" * 64)
    verify_image(stream, keys, 7)
    assert stream.requested == len(good) == declared_size(good)


@pytest.mark.parametrize("cut", [0, 1, 31, 32, 100, 0x200, 0x200 + 3999, 4516, 4530, -1])
def test_truncated_image(good: bytes, keys: list[Any], cut: int) -> None:
    data = good[:cut]
    if len(data) < 32:
        with pytest.raises(ImageTruncatedError):
            verify_image(data, keys)
        stream = CountingStream(data)
        with pytest.raises(ImageTruncatedError):
            verify_image(stream, keys)
        assert stream.furthest <= 32
        return
    message = refused(data, keys, ImageTruncatedError, trailing=b"")
    assert "truncated" in message


def test_wrong_magic(good: bytes, keys: list[Any]) -> None:
    message = refused(b"\x3c" + good[1:], keys, ImageMagicError)
    assert "magic" in message
    refused(b"\0" * 64, keys, ImageMagicError)


def test_header_size_pointing_past_the_end(good: bytes, keys: list[Any]) -> None:
    data = bytearray(good)
    data[8:10] = struct.pack("<H", 0xFFFF)  # hdr_size
    refused(bytes(data), keys, ImageTruncatedError, trailing=b"")


def test_image_size_pointing_past_the_end(good: bytes, keys: list[Any]) -> None:
    data = bytearray(good)
    data[12:16] = struct.pack("<I", 0xFFFFFFF0)  # img_size: about 4 GiB declared
    stream = CountingStream(bytes(data))
    with pytest.raises(ImageTruncatedError):
        verify_image(stream, keys)
    assert stream.furthest <= len(data) + 256 * 1024  # one chunk past the input, no more


def test_header_size_below_the_header_struct(good: bytes, keys: list[Any]) -> None:
    data = bytearray(good)
    data[8:10] = struct.pack("<H", 16)
    assert "header size" in refused(bytes(data), keys, ImageHeaderError)


def test_unknown_header_flag(ed25519: LocalImageSigner, keys: list[Any]) -> None:
    refused(forge(ed25519, flags=0x80000000), keys, ImageHeaderError)


def test_tlv_length_pointing_past_the_end_of_its_area(ed25519: LocalImageSigner,
                                                      keys: list[Any]) -> None:
    image = forge(ed25519)
    # The last TLV is the signature; make its length run past the unprotected area.
    pos = image.rfind(struct.pack("<HH", TlvType.ED25519, 64))
    data = image[:pos + 2] + struct.pack("<H", 65) + image[pos + 4:]
    assert "past the end" in refused(data, keys, TlvAreaError)
    # Same in the protected area: SEC_CNT claims 9 bytes of an 8-byte remainder.
    pos = image.find(struct.pack("<HH", TlvType.SEC_CNT, 4))
    data = image[:pos + 2] + struct.pack("<H", 9) + image[pos + 4:]
    assert "past the end" in refused(data, keys, TlvAreaError)


def test_tlv_area_sizes_that_disagree(ed25519: LocalImageSigner, keys: list[Any]) -> None:
    image = forge(ed25519)
    prot_at = 0x200 + 1000
    data = bytearray(image)
    data[prot_at + 2:prot_at + 4] = struct.pack("<H", 16)  # the header says 12
    assert "declares 16 bytes but 12" in refused(bytes(data), keys, TlvAreaError)
    data = bytearray(image)
    data[prot_at:prot_at + 2] = struct.pack("<H", TLV_INFO_MAGIC)
    assert "magic" in refused(bytes(data), keys, TlvAreaError)
    unprot_at = prot_at + 12
    data = bytearray(image)
    data[unprot_at:unprot_at + 2] = b"\x00\x00"
    assert "magic" in refused(bytes(data), keys, TlvAreaError)
    data = bytearray(image)
    data[unprot_at + 2:unprot_at + 4] = b"\x02\x00"
    refused(bytes(data), keys, TlvAreaError)


def test_protected_area_the_header_does_not_declare(ed25519: LocalImageSigner,
                                                    keys: list[Any]) -> None:
    image = forge(ed25519, protected=())
    body_end = 0x200 + 1000
    prot = tlv_area([SEC7], TLV_PROT_INFO_MAGIC)
    data = image[:body_end] + prot + image[body_end:]
    assert "declares none" in refused(data, keys, TlvAreaError)


def test_duplicate_protected_tlvs(ed25519: LocalImageSigner, keys: list[Any]) -> None:
    refused(forge(ed25519, protected=[SEC7, (TlvType.SEC_CNT, struct.pack("<I", 99))]),
            keys, DuplicateTlvError)
    dep = struct.pack("<B3xBBHI", 1, 1, 0, 0, 0)
    refused(forge(ed25519, protected=[(TlvType.DEPENDENCY, dep), (TlvType.DEPENDENCY, dep)]),
            keys, DuplicateTlvError)
    uuid = bytes(16)
    refused(forge(ed25519, protected=[(TlvType.UUID_VID, uuid), (TlvType.UUID_VID, uuid)]),
            keys, DuplicateTlvError)


def test_duplicate_hash_tlv(ed25519: LocalImageSigner, keys: list[Any]) -> None:
    image = forge(ed25519)
    digest = verify_image(image, keys).digest
    refused(forge(ed25519, extra_unprotected=[(TlvType.SHA256, digest)]), keys,
            DuplicateTlvError)


def test_unknown_protected_tlv(ed25519: LocalImageSigner, keys: list[Any]) -> None:
    assert "not allowed" in refused(forge(ed25519, protected=[SEC7, (0x99, b"x")]), keys,
                                    UnknownTlvError)
    vendor = forge(ed25519, protected=[SEC7, (0xA0, b"\x12\x34")])
    assert "vendor" in refused(vendor, keys, UnknownTlvError)
    assert verify_image(vendor, keys, allowed_vendor_tlvs=[0xA0]).vendor_tlvs == {
        0xA0: b"\x12\x34"}
    refused(forge(ed25519, protected=[(0xA0, b""), (0xA0, b"")]), keys, DuplicateTlvError,
            allowed_vendor_tlvs=[0xA0])
    # A hash or signature TLV has no business in the protected area either.
    refused(forge(ed25519, protected=[(TlvType.KEYHASH, bytes(32))]), keys, UnknownTlvError)


def test_unprotected_tlv_that_only_the_protected_area_may_carry(
        ed25519: LocalImageSigner, keys: list[Any]) -> None:
    data = forge(ed25519, protected=(), extra_unprotected=[SEC7])
    assert "unprotected" in refused(data, keys, UnknownTlvError)
    refused(forge(ed25519, extra_unprotected=[(0x99, b"")]), keys, UnknownTlvError)


def test_wrong_length_for_a_known_tlv(ed25519: LocalImageSigner, keys: list[Any]) -> None:
    refused(forge(ed25519, protected=[(TlvType.SEC_CNT, b"\x07\x00")]), keys, TlvAreaError)
    refused(forge(ed25519, protected=[(TlvType.DEPENDENCY, b"\x01")]), keys, TlvAreaError)
    refused(forge(ed25519, key_tlv=(TlvType.KEYHASH, bytes(31))), keys, TlvAreaError)


def test_untrusted_key(other_signers: dict[FirmwareKeyType, LocalImageSigner],
                       keys: list[Any]) -> None:
    stranger = other_signers[FirmwareKeyType.ED25519]
    image = sign_image(b"x" * 100, stranger, SignOptions(version=ImageVersion(1),
                                                         pad_header=True))
    assert "not trusted" in refused(image, keys, UntrustedKeyError)


def test_body_changed_after_signing(good: bytes, keys: list[Any]) -> None:
    data = bytearray(good)
    data[0x200 + 10] ^= 0x01
    assert "hash does not match" in refused(bytes(data), keys, ImageHashError)
    data = bytearray(good)
    data[20] ^= 0x01  # the version in the header is covered too
    refused(bytes(data), keys, ImageHashError)
    data = bytearray(good)
    data[100] ^= 0x01  # and the header padding
    refused(bytes(data), keys, ImageHashError)


def test_body_changed_and_hash_recomputed(ed25519: LocalImageSigner, keys: list[Any]) -> None:
    """A forger who fixes the hash TLV still cannot fix the signature."""
    original = forge(ed25519, b"A" * 1000)
    forged = forge(ed25519, b"B" * 1000, signature=verify_image(original, keys)
                   .unprotected_tlvs[2].value)
    assert "does not verify" in refused(forged, keys, ImageSignatureError)


def test_signature_type_that_does_not_fit_the_key(ed25519: LocalImageSigner,
                                                  p256: LocalImageSigner) -> None:
    key = TrustedKey.of(ed25519.public_key())
    image = forge(p256, key_tlv=(TlvType.KEYHASH, key.key_hash))
    assert "does not fit" in refused(image, [key], ImageSignatureError)


def test_security_counter_below_the_minimum(good: bytes, keys: list[Any]) -> None:
    assert "below the minimum 8" in refused(good, keys, SecurityCounterError,
                                            min_security_counter=8)


def test_missing_security_counter_when_one_is_required(ed25519: LocalImageSigner,
                                                       keys: list[Any]) -> None:
    refused(forge(ed25519, protected=()), keys, SecurityCounterError, min_security_counter=1)


def test_version_downgrade(good: bytes, keys: list[Any]) -> None:
    message = refused(good, keys, VersionDowngradeError, min_version=ImageVersion(1, 2, 4))
    assert "1.2.3+4" in message and "1.2.4+0" in message


def test_missing_signature_and_missing_hash(ed25519: LocalImageSigner,
                                            keys: list[Any]) -> None:
    refused(forge(None), keys, MissingSignatureError)
    refused(forge(ed25519, hash_tlv=False), keys, MissingHashError)


def test_signature_without_a_key_tlv(ed25519: LocalImageSigner, keys: list[Any]) -> None:
    image = forge(None, extra_unprotected=[(TlvType.ED25519, bytes(64))])
    assert "names no key" in refused(image, keys, ImageSignatureError)


def test_no_trusted_key_refuses_before_reading(good: bytes) -> None:
    stream = CountingStream(good)
    with pytest.raises(NoTrustedKeyError):
        verify_image(stream, [])
    assert stream.requested == 0


def test_unsupported_images(ed25519: LocalImageSigner, keys: list[Any]) -> None:
    stream = CountingStream(forge(ed25519, flags=ImageFlag.ENCRYPTED_AES128))
    with pytest.raises(UnsupportedImageError, match="encrypted"):
        verify_image(stream, keys)
    assert stream.requested == 32  # refused from the header alone
    refused(forge(ed25519, flags=ImageFlag.COMPRESSED_LZMA2), keys, UnsupportedImageError)
    refused(forge(ed25519, extra_unprotected=[(TlvType.SHA384, bytes(48))]), keys,
            UnsupportedImageError)
    refused(forge(ed25519, protected=[(TlvType.DECOMP_SIZE, bytes(4))]), keys,
            UnsupportedImageError)


def test_larger_than_the_caller_allows(good: bytes, keys: list[Any]) -> None:
    stream = CountingStream(good)
    with pytest.raises(ImageTooLargeError):
        verify_image(stream, keys, max_image_size=len(good) - 200)
    assert stream.requested == 32
    with pytest.raises(ImageTooLargeError):
        verify_image(good, keys, max_image_size=len(good) - 1)
    verify_image(good, keys, max_image_size=len(good))


def test_read_errors_become_firmware_errors(good: bytes, keys: list[Any]) -> None:
    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            raise OSError(5, "Input/output error")

    with pytest.raises(ImageReadError, match="Input/output error"):
        verify_image(Failing(), keys)
