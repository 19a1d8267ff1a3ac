"""Verifying a signed MCUboot image: the secure-boot decision, streamed.

``verify_image`` answers one question: may a device with these public keys and this
anti-rollback state run this image? It returns a :class:`VerifiedImage` or raises exactly
one :class:`~iotsec.errors.FirmwareError` subclass, in this order of checks:

1. at least one trusted key (a hash alone proves nothing);
2. header: magic, sizes within the format and the caller's limit, no encrypted or
   compressed image (their hash is over other bytes than the ones stored);
3. header padding, body and protected TLVs hashed in chunks; TLV areas parsed, every
   length checked against its area;
4. TLV rules, as bootutil applies them: the protected area carries only known TLVs
   (security counter and UUIDs at most once, one dependency per image id), the
   unprotected area only hash, key and signature TLVs, one SHA-256 hash;
5. the hash TLV equals the computed digest;
6. signatures: each one is preceded by a KEYHASH (or PUBKEY) TLV naming its key; every
   signature whose key is trusted must verify, and at least one must exist;
7. the security counter is at least ``min_security_counter``, and the version at least
   ``min_version`` when one is given.

Nothing past the declared TLV area is read (slot padding and trailer are ignored).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field

from iotsec.errors import (
    DuplicateTlvError,
    ImageHashError,
    ImageSignatureError,
    InvalidInputError,
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
from iotsec.firmware.image import (
    COMPRESSED_FLAGS,
    ENCRYPTED_FLAGS,
    VENDOR_TLV_MAX,
    VENDOR_TLV_MIN,
    Dependency,
    ImageHeader,
    ImageVersion,
    Tlv,
    TlvType,
    tlv_name,
    unpack_u32,
)
from iotsec.firmware.image_keys import (
    SIGNATURE_TLVS,
    FirmwareKeyType,
    FirmwarePublicKey,
    TrustedKey,
)
from iotsec.firmware.layout import ImageSource, read_header, read_tlv_areas
from iotsec.firmware.reader import BoundedReader

__all__ = ["VerifiedImage", "verify_image"]

_UNSUPPORTED_UNPROTECTED = {
    TlvType.SHA384: "SHA-384 image hashes are not supported",
    TlvType.SHA512: "SHA-512 image hashes are not supported",
    TlvType.SIG_PURE: "pure (whole-image) signatures are not supported",
    TlvType.ENC_RSA2048: "encrypted images are not supported",
    TlvType.ENC_KW: "encrypted images are not supported",
    TlvType.ENC_EC256: "encrypted images are not supported",
    TlvType.ENC_X25519: "encrypted images are not supported",
    TlvType.ENC_X25519_SHA512: "encrypted images are not supported",
}
_COMPRESSION_TLVS = frozenset({TlvType.DECOMP_SIZE, TlvType.DECOMP_SHA,
                               TlvType.DECOMP_SIGNATURE, TlvType.COMP_DEC_SIZE})
_KEY_TLVS = frozenset({TlvType.KEYHASH, TlvType.PUBKEY})
_ONCE_PROTECTED = frozenset({TlvType.SEC_CNT, TlvType.BOOT_RECORD, TlvType.UUID_VID,
                             TlvType.UUID_CID})
#: A PUBKEY TLV holds a DER public key; an RSA-3072 PKCS#1 key is 398 bytes.
_MAX_PUBKEY = 1024


@dataclass(frozen=True)
class VerifiedImage:
    """An image that passed :func:`verify_image`. Only the verifier builds these."""

    header: ImageHeader
    #: SHA-256 over header, body and protected TLVs (the value of the hash TLV).
    digest: bytes
    #: The trusted key whose signature verified (the first one, if several did).
    key: TrustedKey
    #: Key ids (``TrustedKey.key_id``) of every trusted key whose signature verified.
    signed_by: tuple[str, ...]
    security_counter: int | None
    dependencies: tuple[Dependency, ...]
    #: Bytes of the signed image: header, body and both TLV areas (padding excluded).
    size: int
    protected_tlvs: tuple[Tlv, ...] = field(repr=False)
    unprotected_tlvs: tuple[Tlv, ...] = field(repr=False)
    vendor_tlvs: dict[int, bytes] = field(repr=False, default_factory=dict)

    @property
    def version(self) -> ImageVersion:
        return self.header.version

    @property
    def key_type(self) -> FirmwareKeyType:
        return self.key.key_type


@dataclass
class _Protected:
    security_counter: int | None = None
    dependencies: list[Dependency] = field(default_factory=list)
    vendor: dict[int, bytes] = field(default_factory=dict)


def _trust(trusted_keys: Iterable[TrustedKey | FirmwarePublicKey]) -> dict[bytes, TrustedKey]:
    keys: dict[bytes, TrustedKey] = {}
    for key in trusted_keys:
        trusted = key if isinstance(key, TrustedKey) else TrustedKey.of(key)
        keys[trusted.key_hash] = trusted
    if not keys:
        raise NoTrustedKeyError("no trusted public key was given; an image is never accepted "
                                "on its hash alone")
    return keys


def verify_image(source: ImageSource,
                 trusted_keys: Iterable[TrustedKey | FirmwarePublicKey],
                 min_security_counter: int = 0, *,
                 min_version: ImageVersion | None = None,
                 max_image_size: int | None = None,
                 allowed_vendor_tlvs: Iterable[int] = ()) -> VerifiedImage:
    """Verify an MCUboot image from bytes or a binary stream; see the module docstring.

    ``source`` is read once, front to back, and never past the end of the unprotected TLV
    area. ``max_image_size`` (e.g. the slot size) is checked against the header before the
    body is read. ``allowed_vendor_tlvs`` lists vendor TLV types (imgtool ``--custom-tlv``,
    0x00a0..0xfffe) the protected area may carry; any other protected TLV type is refused.
    """
    keys = _trust(trusted_keys)
    if not 0 <= min_security_counter <= 0xFFFFFFFF:
        raise InvalidInputError(f"minimum security counter {min_security_counter} is out of "
                                "range", hint="security counters are 0..4294967295")
    vendor_allowed = frozenset(allowed_vendor_tlvs)
    reader = BoundedReader(source)
    header, raw_header = read_header(reader, max_image_size=max_image_size)
    if header.flags & ENCRYPTED_FLAGS:
        raise UnsupportedImageError("the image is encrypted; its hash covers the plaintext")
    if header.flags & COMPRESSED_FLAGS:
        raise UnsupportedImageError("the image is compressed; its hash covers the "
                                    "decompressed image")
    hasher = hashlib.sha256()
    areas = read_tlv_areas(reader, header, raw_header, hasher, max_image_size=max_image_size)
    digest = hasher.digest()

    protected = _check_protected(areas.protected, header, vendor_allowed)
    expected = _check_unprotected(areas.unprotected)
    if not hmac.compare_digest(expected, digest):
        raise ImageHashError(f"the image hash does not match: computed {digest.hex()}, the "
                             f"hash TLV says {expected.hex()}")
    verified = _check_signatures(areas.unprotected, keys, digest)

    counter = protected.security_counter
    if min_security_counter and counter is None:
        raise SecurityCounterError(f"the image has no security counter; at least "
                                   f"{min_security_counter} is required")
    if counter is not None and counter < min_security_counter:
        raise SecurityCounterError(f"the image's security counter {counter} is below the "
                                   f"minimum {min_security_counter}")
    if min_version is not None and header.version < min_version:
        raise VersionDowngradeError(f"image version {header.version} is older than the "
                                    f"minimum {min_version}")
    return VerifiedImage(header=header, digest=digest, key=verified[0],
                         signed_by=tuple(k.key_id for k in verified),
                         security_counter=counter,
                         dependencies=tuple(protected.dependencies), size=areas.end,
                         protected_tlvs=areas.protected, unprotected_tlvs=areas.unprotected,
                         vendor_tlvs=protected.vendor)


def _length(tlv: Tlv, expected: int) -> None:
    if len(tlv.value) != expected:
        raise TlvAreaError(f"TLV {tlv.name} at offset {tlv.offset:#x} is {len(tlv.value)} "
                           f"bytes; it must be {expected}")


def _check_protected(tlvs: tuple[Tlv, ...], header: ImageHeader,
                     vendor_allowed: frozenset[int]) -> _Protected:
    found = _Protected()
    seen: set[int] = set()
    for tlv in tlvs:
        kind = tlv.type
        if kind in _COMPRESSION_TLVS:
            raise UnsupportedImageError("the image carries compression TLVs")
        if kind in _ONCE_PROTECTED or (VENDOR_TLV_MIN <= kind <= VENDOR_TLV_MAX):
            if kind in seen:
                raise DuplicateTlvError(f"the protected TLV {tlv.name} appears more than once")
            seen.add(kind)
        if kind == TlvType.SEC_CNT:
            _length(tlv, 4)
            found.security_counter = unpack_u32(tlv.value, header.endian)
        elif kind == TlvType.DEPENDENCY:
            dep = Dependency.decode(tlv.value, header.endian)
            if any(d.image_id == dep.image_id for d in found.dependencies):
                raise DuplicateTlvError(f"two DEPENDENCY TLVs name image {dep.image_id}")
            found.dependencies.append(dep)
        elif kind in (TlvType.UUID_VID, TlvType.UUID_CID):
            _length(tlv, 16)
        elif kind == TlvType.BOOT_RECORD:
            pass
        elif VENDOR_TLV_MIN <= kind <= VENDOR_TLV_MAX and kind in vendor_allowed:
            found.vendor[kind] = tlv.value
        else:
            where = ("is a vendor TLV that was not allowed"
                     if VENDOR_TLV_MIN <= kind <= VENDOR_TLV_MAX else
                     "is not allowed in the protected TLV area")
            raise UnknownTlvError(f"TLV {tlv_name(kind)} at offset {tlv.offset:#x} {where}")
    return found


def _check_unprotected(tlvs: tuple[Tlv, ...]) -> bytes:
    """Apply the unprotected-area rules; return the value of the one SHA-256 hash TLV."""
    expected: bytes | None = None
    for tlv in tlvs:
        kind = tlv.type
        if kind in _UNSUPPORTED_UNPROTECTED:
            raise UnsupportedImageError(_UNSUPPORTED_UNPROTECTED[TlvType(kind)])
        if kind == TlvType.SHA256:
            if expected is not None:
                raise DuplicateTlvError("the image carries more than one SHA256 TLV")
            _length(tlv, 32)
            expected = tlv.value
        elif kind == TlvType.KEYHASH:
            _length(tlv, 32)
        elif kind == TlvType.PUBKEY:
            if not 0 < len(tlv.value) <= _MAX_PUBKEY:
                raise TlvAreaError(f"the PUBKEY TLV is {len(tlv.value)} bytes")
        elif kind not in SIGNATURE_TLVS:
            raise UnknownTlvError(
                f"TLV {tlv_name(kind)} at offset {tlv.offset:#x} is not allowed in the "
                "unprotected TLV area (only hash, key and signature TLVs are; anything else "
                "would not be covered by the signature)")
    if expected is None:
        raise MissingHashError("the image has no SHA256 hash TLV")
    return expected


def _check_signatures(tlvs: tuple[Tlv, ...], keys: dict[bytes, TrustedKey],
                      digest: bytes) -> list[TrustedKey]:
    """Every signature by a trusted key must verify; at least one must exist."""
    verified: list[TrustedKey] = []
    named: TrustedKey | None = None
    saw_key_tlv = saw_signature = False
    for tlv in tlvs:
        if tlv.type in _KEY_TLVS:
            saw_key_tlv = True
            if tlv.type == TlvType.KEYHASH:
                named = keys.get(tlv.value)
            else:
                named = keys.get(hashlib.sha256(tlv.value).digest())
                if named is not None and named.key_bytes != tlv.value:
                    named = None
        elif tlv.type in SIGNATURE_TLVS:
            saw_signature = True
            if named is not None:
                named.verify_digest(tlv.type, tlv.value, digest)
                verified.append(named)
            # A signature belongs to the key TLV just before it, and to no other.
            named = None
    if verified:
        return verified
    if not saw_signature:
        raise MissingSignatureError("the image is not signed (it has no signature TLV)")
    if not saw_key_tlv:
        raise ImageSignatureError("the image's signature names no key (no KEYHASH or PUBKEY "
                                  "TLV precedes it)")
    raise UntrustedKeyError("the image is signed by a key that is not trusted (its key hash "
                            "names none of the given keys)")
