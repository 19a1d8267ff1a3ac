"""Firmware signing keys: types, trusted public keys, signers and encrypted key files.

MCUboot identifies a key by the SHA-256 of the key bytes the bootloader embeds: the DER
SubjectPublicKeyInfo for ECDSA and Ed25519, the DER PKCS#1 RSAPublicKey for RSA (what
``imgtool getpub``/``getpubhash`` print). Every signature is made over the SHA-256 digest
of header, body and protected TLVs, so signing and verifying never need the image whole:

- ECDSA P-256: ECDSA-SHA256, DER ``ECDSA-Sig-Value`` in an ``ECDSA_SIG`` TLV;
- Ed25519: the 32-byte digest is the message, in an ``ED25519`` TLV;
- RSA-2048/3072: RSASSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt (bootutil accepts no
  other salt length), in an ``RSA2048_PSS``/``RSA3072_PSS`` TLV.

Signing goes through the :class:`ImageSigner` protocol (a public key and a
``sign_digest``), kept apart from the X.509 :class:`iotsec.pki.keys.Signer`: the two sign
different things with different paddings, and a key made for one is refused by the other.
Key custody (:mod:`iotsec.custody`) hands out image signers for keys it holds
(``KeyStore.generate_image_key`` / ``load_image_key``: encrypted files or a PKCS#11 token);
:class:`LocalImageSigner` here is the in-process signer over a key file. Key files are
written only as PBES2-scrypt encrypted PKCS#8 (:mod:`iotsec.pki.pkcs8`); older PBKDF2
files and imgtool's encrypted keys are still read.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from iotsec.errors import (
    EncryptedKeyError,
    FirmwareKeyError,
    ImageSignatureError,
    InputTooLargeError,
)
from iotsec.firmware.image import TlvType
from iotsec.pki.pkcs8 import decrypt_private_key, encrypt_private_key

__all__ = [
    "MAX_ECDSA_SIG", "MAX_KEY_FILE", "MIN_PASSPHRASE", "SIGNATURE_TLVS", "FirmwareKeyType",
    "FirmwarePrivateKey", "FirmwarePublicKey", "ImageSigner", "LocalImageSigner", "TrustedKey",
    "check_new_passphrase", "generate_signer", "load_private_key", "mcuboot_key_bytes",
    "public_pem"
]

FirmwarePublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
FirmwarePrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

#: Key files are a few KiB at most (an encrypted RSA-4096 PKCS#8 PEM is about 3.3 KiB).
MAX_KEY_FILE = 64 * 1024
#: The passphrase protecting a newly written signing key (same rule as the CA keys).
MIN_PASSPHRASE = 16
#: A DER ECDSA P-256 signature is at most 72 bytes; imgtool --pad-sig pads to exactly that.
MAX_ECDSA_SIG = 72

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
_PREHASHED = utils.Prehashed(hashes.SHA256())


class FirmwareKeyType(enum.StrEnum):
    """Signature algorithms MCUboot verifies that iotsec signs with."""

    ECDSA_P256 = "ecdsa-p256"
    ED25519 = "ed25519"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"

    @classmethod
    def parse(cls, text: str) -> FirmwareKeyType:
        try:
            return cls(text.strip().lower())
        except ValueError:
            choices = ", ".join(k.value for k in cls)
            raise FirmwareKeyError(f"unknown firmware key type {text[:32]!r}",
                                   hint=f"choose one of: {choices}") from None

    @classmethod
    def of(cls, key: FirmwarePublicKey | FirmwarePrivateKey | object) -> FirmwareKeyType:
        if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
            if isinstance(key.curve, ec.SECP256R1):
                return cls.ECDSA_P256
            raise FirmwareKeyError(f"ECDSA curve {key.curve.name} is not supported",
                                   hint="use an ECDSA P-256 (secp256r1) key")
        if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
            return cls.ED25519
        if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
            if key.key_size == 2048:
                return cls.RSA_2048
            if key.key_size == 3072:
                return cls.RSA_3072
            raise FirmwareKeyError(f"RSA-{key.key_size} is not supported by MCUboot",
                                   hint="use an RSA-2048 or RSA-3072 key")
        raise FirmwareKeyError(f"a {type(key).__name__} cannot sign firmware")

    def generate(self) -> FirmwarePrivateKey:
        """A fresh private key of this type (in memory)."""
        if self is FirmwareKeyType.ECDSA_P256:
            return ec.generate_private_key(ec.SECP256R1())
        if self is FirmwareKeyType.ED25519:
            return ed25519.Ed25519PrivateKey.generate()
        size = 2048 if self is FirmwareKeyType.RSA_2048 else 3072
        return rsa.generate_private_key(public_exponent=65537, key_size=size)

    @property
    def signature_tlv(self) -> TlvType:
        return _SIG_TLV[self]


_SIG_TLV = {FirmwareKeyType.ECDSA_P256: TlvType.ECDSA_SIG,
            FirmwareKeyType.ED25519: TlvType.ED25519,
            FirmwareKeyType.RSA_2048: TlvType.RSA2048_PSS,
            FirmwareKeyType.RSA_3072: TlvType.RSA3072_PSS}
SIGNATURE_TLVS = frozenset(_SIG_TLV.values())


def mcuboot_key_bytes(key: FirmwarePublicKey) -> bytes:
    """The key bytes MCUboot embeds (and hashes into the KEYHASH TLV)."""
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def public_pem(key: FirmwarePublicKey) -> bytes:
    """The public key as a SubjectPublicKeyInfo PEM (what ``imgtool getpub -e pem`` prints)."""
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class TrustedKey:
    """A public key images may be signed with, and the key hash that names it."""

    public_key: FirmwarePublicKey = field(repr=False, compare=False)
    key_type: FirmwareKeyType
    key_bytes: bytes = field(repr=False)
    key_hash: bytes

    @classmethod
    def of(cls, key: FirmwarePublicKey) -> TrustedKey:
        kind = FirmwareKeyType.of(key)
        raw = mcuboot_key_bytes(key)
        return cls(key, kind, raw, hashlib.sha256(raw).digest())

    @classmethod
    def from_bytes(cls, data: bytes) -> TrustedKey:
        """Load a public key from PEM (SubjectPublicKeyInfo or PKCS#1 RSA) or DER."""
        if len(data) > MAX_KEY_FILE:
            raise FirmwareKeyError(f"a public key file is at most {MAX_KEY_FILE} bytes")
        if b"PRIVATE KEY-----" in data:
            raise FirmwareKeyError(
                "a private key was given where a public key is expected",
                hint="export the public key with 'iotsec firmware public-key KEY -o PUB.pem' "
                     "and keep the private key off verifying machines")
        loaders = ((serialization.load_pem_public_key, serialization.load_der_public_key)
                   if data.lstrip().startswith(b"-----") else
                   (serialization.load_der_public_key,))
        for loader in loaders:
            try:
                key = loader(data)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                continue
            if isinstance(key, FirmwarePublicKey):
                return cls.of(key)
            raise FirmwareKeyError(f"a {type(key).__name__} cannot verify firmware")
        raise FirmwareKeyError("not a PEM or DER public key")

    @property
    def key_id(self) -> str:
        """A short printable name for the key: the first 8 bytes of its key hash, in hex."""
        return self.key_hash[:8].hex()

    def verify_digest(self, tlv_type: int, signature: bytes, digest: bytes) -> None:
        """Check ``signature`` (a signature TLV's value) over the image ``digest``; raise
        :class:`ImageSignatureError` unless it verifies."""
        if tlv_type != self.key_type.signature_tlv:
            raise ImageSignatureError(
                f"the signature TLV {TlvType(tlv_type).name} does not fit the {self.key_type} "
                f"key {self.key_id} that the key hash names")
        key = self.public_key
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(_strip_ecdsa_padding(signature), digest, ec.ECDSA(_PREHASHED))
            elif isinstance(key, ed25519.Ed25519PublicKey):
                if len(signature) != 64:
                    raise InvalidSignature
                key.verify(signature, digest)
            else:
                if len(signature) != key.key_size // 8:
                    raise InvalidSignature
                key.verify(signature, digest, _PSS, _PREHASHED)
        except (InvalidSignature, ValueError):
            raise ImageSignatureError(
                f"the {self.key_type} signature of key {self.key_id} does not verify") from None


def _strip_ecdsa_padding(signature: bytes) -> bytes:
    """Undo imgtool's ``--pad-sig`` (zero bytes after the DER, for MCUboot < 1.5).

    Only zero bytes may follow the DER SEQUENCE, and only up to 72 bytes in all;
    anything else is left for the DER parser to refuse."""
    if (len(signature) > 2 and len(signature) <= MAX_ECDSA_SIG and signature[0] == 0x30
            and signature[1] < 0x80):
        end = signature[1] + 2
        if end < len(signature) and not any(signature[end:]):
            return signature[:end]
    return signature


# --------------------------------------------------------------------------- signing


@runtime_checkable
class ImageSigner(Protocol):
    """Something that signs an image digest with a private key it never reveals."""

    @property
    def key_type(self) -> FirmwareKeyType: ...

    def public_key(self) -> FirmwarePublicKey: ...

    def sign_digest(self, digest: bytes) -> bytes:
        """Return the signature TLV value over the 32-byte SHA-256 image ``digest``."""
        ...


class LocalImageSigner:
    """An :class:`ImageSigner` over an in-process private key."""

    def __init__(self, key: FirmwarePrivateKey) -> None:
        self._type = FirmwareKeyType.of(key)
        self._key = key

    @property
    def key_type(self) -> FirmwareKeyType:
        return self._type

    def public_key(self) -> FirmwarePublicKey:
        return self._key.public_key()

    def sign_digest(self, digest: bytes) -> bytes:
        if len(digest) != 32:
            raise ValueError("an image digest is 32 bytes (SHA-256)")
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(digest, ec.ECDSA(_PREHASHED))
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(digest)
        return key.sign(digest, _PSS, _PREHASHED)

    def encrypted_pem(self, passphrase: bytes) -> bytes:
        """The private key as encrypted PKCS#8 PEM (the only form iotsec writes)."""
        check_new_passphrase(passphrase)
        return encrypt_private_key(self._key, passphrase)

    def __repr__(self) -> str:
        return f"LocalImageSigner({self._type.value})"


def check_new_passphrase(passphrase: bytes) -> None:
    if len(passphrase) < MIN_PASSPHRASE:
        raise FirmwareKeyError("the passphrase for a new signing key is too short",
                               hint=f"use at least {MIN_PASSPHRASE} characters")


def generate_signer(key_type: FirmwareKeyType) -> LocalImageSigner:
    return LocalImageSigner(key_type.generate())


def load_private_key(pem: bytes, passphrase: bytes | None, *,
                     allow_unencrypted: bool = False) -> LocalImageSigner:
    """Load a PEM private key (encrypted PKCS#8, or imgtool's own PEM files).

    Unencrypted keys are refused unless ``allow_unencrypted`` (used by ``import-key``,
    which re-encrypts them)."""
    if len(pem) > MAX_KEY_FILE:
        raise FirmwareKeyError(f"a key file is at most {MAX_KEY_FILE} bytes")
    if b"PRIVATE KEY-----" not in pem:
        raise FirmwareKeyError("not a PEM private key",
                               hint="give the signing key written by 'iotsec firmware keygen'")
    encrypted = b"ENCRYPTED" in pem
    if not encrypted and not allow_unencrypted:
        raise FirmwareKeyError(
            "the signing key is not encrypted",
            hint="encrypt it with 'iotsec firmware import-key KEY -o NEW_KEY' and sign with "
                 "the new file")
    try:
        key: object
        if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem:
            key = decrypt_private_key(pem, passphrase or b"")
        else:
            key = serialization.load_pem_private_key(
                pem, password=passphrase if encrypted else None)
    except (ValueError, TypeError, UnsupportedAlgorithm, EncryptedKeyError,
            InputTooLargeError):
        # A wrong passphrase and a corrupt file look alike; neither message may echo key
        # material.
        raise FirmwareKeyError(
            "cannot decrypt the signing key",
            hint="check the passphrase (IOTSEC_FIRMWARE_KEY_PASSPHRASE)") from None
    if not isinstance(key, FirmwarePrivateKey):
        raise FirmwareKeyError(f"a {type(key).__name__} cannot sign firmware")
    return LocalImageSigner(key)
