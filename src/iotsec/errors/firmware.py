"""Errors: firmware."""

from __future__ import annotations

from iotsec.errors.base import IotsecError

__all__ = [
    "DuplicateTlvError", "FirmwareError", "FirmwareKeyError", "ImageHashError", "ImageHeaderError",
    "ImageLayoutError", "ImageMagicError", "ImageReadError", "ImageSignatureError",
    "ImageTooLargeError", "ImageTruncatedError", "MissingHashError", "MissingSignatureError",
    "NoTrustedKeyError", "SecurityCounterError", "TlvAreaError", "UnknownTlvError",
    "UnsupportedImageError", "UntrustedKeyError", "VersionDowngradeError"
]


class FirmwareError(IotsecError):
    """A firmware image (MCUboot format) or a firmware signing key that is not accepted.
    Each subclass names one reason; a verifier raises exactly one of them."""

    status = 422
    code = "firmware"


class ImageReadError(FirmwareError):
    """The image could not be read (an I/O error from the file or stream)."""

    code = "firmware-read"
    default_hint = "check that the image file is readable"


class ImageTruncatedError(FirmwareError):
    """The input ended before the sizes its header declares."""

    code = "firmware-truncated"
    default_hint = "the image is incomplete; download or copy it again"


class ImageMagicError(FirmwareError):
    """The first four bytes are not the MCUboot image magic."""

    code = "firmware-bad-magic"
    default_hint = "this is not a signed MCUboot image; sign it with 'iotsec firmware sign'"


class ImageHeaderError(FirmwareError):
    """A header field is out of range (header size, flags, sizes over a stated limit)."""

    code = "firmware-bad-header"
    default_hint = "the image header is corrupt or was not written by an MCUboot signing tool"


class ImageTooLargeError(ImageHeaderError):
    """The sizes in the header exceed the limit given by the caller (e.g. the slot size)."""

    status = 413
    code = "firmware-too-large"
    default_hint = "the image does not fit the slot it is meant for"


class UnsupportedImageError(FirmwareError):
    """A valid MCUboot feature that iotsec does not verify (encrypted or compressed
    images, SHA-384/512 hashes, pure signatures)."""

    code = "firmware-unsupported"
    default_hint = ("iotsec verifies unencrypted, uncompressed images with a SHA-256 hash and an "
                    "ECDSA P-256, Ed25519 or RSA-2048/3072 signature")


class TlvAreaError(FirmwareError):
    """A TLV area that is malformed: wrong info magic, a size that disagrees with the header,
    a TLV whose length runs past the end of its area, or a known TLV of the wrong length."""

    code = "firmware-bad-tlv"
    default_hint = "the image's TLV area is corrupt; sign the image again"


class DuplicateTlvError(TlvAreaError):
    code = "firmware-duplicate-tlv"
    default_hint = "each of these TLVs may appear once; the image was tampered with or mis-built"


class UnknownTlvError(TlvAreaError):
    """A TLV type that is not allowed where it appears (an unknown protected TLV, or a
    TLV in the unprotected area that only the protected area may carry)."""

    code = "firmware-unknown-tlv"
    default_hint = ("only known TLVs are accepted; allow a vendor TLV explicitly if the image is "
                    "meant to carry it")


class ImageHashError(FirmwareError):
    """The SHA-256 over header, body and protected TLVs differs from the hash TLV."""

    code = "firmware-hash-mismatch"
    default_hint = "the image was changed after it was signed; do not install it"


class MissingHashError(ImageHashError):
    code = "firmware-hash-missing"
    default_hint = "the image carries no SHA-256 hash TLV; sign it with 'iotsec firmware sign'"


class NoTrustedKeyError(FirmwareError):
    """Verification was asked for without any public key: a hash alone proves nothing."""

    status = 400
    code = "firmware-no-key"
    default_hint = "give the public key(s) the image must be signed with (--key PUB.pem)"


class UntrustedKeyError(FirmwareError):
    """The image is signed, but its key hash names none of the trusted keys."""

    code = "firmware-untrusted-key"
    default_hint = "the image was signed with another key; check which key the fleet trusts"


class ImageSignatureError(FirmwareError):
    """A signature made with a trusted key does not verify (or does not fit the key)."""

    code = "firmware-bad-signature"
    default_hint = "the image or its signature was tampered with; do not install it"


class MissingSignatureError(FirmwareError):
    code = "firmware-unsigned"
    default_hint = "sign the image with 'iotsec firmware sign --key KEY'"


class SecurityCounterError(FirmwareError):
    """The image's security counter is below the minimum (anti-rollback), or the image has
    none although a minimum is required."""

    code = "firmware-security-counter"
    default_hint = ("the image is older than what the device must run; publish an image with a "
                    "higher --security-counter")


class VersionDowngradeError(FirmwareError):
    code = "firmware-downgrade"
    default_hint = "install an image whose version is at least the one required"


class FirmwareKeyError(FirmwareError):
    """A firmware signing or verification key that cannot be used (wrong type or size,
    cannot be decrypted, a private key where a public one is expected)."""

    status = 400
    code = "firmware-key"
    default_hint = ("firmware keys are ECDSA P-256, Ed25519 or RSA-2048/3072 PEM files; private "
                    "keys are encrypted PKCS#8")


class ImageLayoutError(FirmwareError):
    """The image cannot be built as asked (input header not blank without --pad-header,
    image and trailer larger than the slot, sizes over the format's limits)."""

    status = 400
    code = "firmware-layout"
    default_hint = "check --header-size, --pad-header and --slot-size"
