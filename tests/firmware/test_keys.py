"""Firmware keys: what is accepted as a trusted key or a signing key, and key hashes as
MCUboot computes them."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519

from iotsec.errors import FirmwareKeyError, ImageSignatureError
from iotsec.firmware.image import TlvType
from iotsec.firmware.image_keys import (
    FirmwareKeyType,
    LocalImageSigner,
    TrustedKey,
    load_private_key,
    public_pem,
)

PASS = b"correct horse battery staple"
DIGEST = hashlib.sha256(b"image").digest()


def test_key_bytes_are_what_mcuboot_embeds(signers: dict[FirmwareKeyType, LocalImageSigner]
                                           ) -> None:
    for kind, signer in signers.items():
        key = TrustedKey.of(signer.public_key())
        fmt = (serialization.PublicFormat.PKCS1 if kind.value.startswith("rsa")
               else serialization.PublicFormat.SubjectPublicKeyInfo)
        raw = signer.public_key().public_bytes(serialization.Encoding.DER, fmt)
        assert key.key_bytes == raw
        assert key.key_hash == hashlib.sha256(raw).digest()
        assert key.key_type is kind


def test_trusted_keys_load_from_pem_and_der(p256: LocalImageSigner) -> None:
    pub = p256.public_key()
    der = pub.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    assert TrustedKey.from_bytes(der) == TrustedKey.from_bytes(public_pem(pub))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pkcs1 = rsa_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    assert TrustedKey.from_bytes(pkcs1).key_type is FirmwareKeyType.RSA_2048


@pytest.mark.parametrize("key", [
    ec.generate_private_key(ec.SECP384R1()).public_key(),
    rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(),  # noqa: S505
    x25519.X25519PrivateKey.generate().public_key(),
], ids=["p384", "rsa1024", "x25519"])
def test_unsupported_keys(key: object) -> None:
    pem = key.public_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined]
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(FirmwareKeyError):
        TrustedKey.from_bytes(pem)


def test_garbage_and_oversized_keys() -> None:
    for data in (b"", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                 b"\x30\x03\x02\x01\x00", b"x" * 70_000):
        with pytest.raises(FirmwareKeyError):
            TrustedKey.from_bytes(data)


def test_private_keys_load_encrypted_only(ed25519: LocalImageSigner) -> None:
    key = ed25519._key
    enc = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(PASS))
    plain = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    assert load_private_key(enc, PASS).public_key() == ed25519.public_key()
    with pytest.raises(FirmwareKeyError, match="cannot decrypt"):
        load_private_key(enc, b"wrong passphrase, long enough")
    with pytest.raises(FirmwareKeyError, match="not encrypted"):
        load_private_key(plain, PASS)
    assert load_private_key(plain, None, allow_unencrypted=True).key_type.value == "ed25519"
    with pytest.raises(FirmwareKeyError, match="too short"):
        ed25519.encrypted_pem(b"short")
    with pytest.raises(FirmwareKeyError):
        load_private_key(public_pem(ed25519.public_key()), PASS)
    rsa_trad = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(PASS))
    assert load_private_key(rsa_trad, PASS).key_type is FirmwareKeyType.RSA_2048


def test_signatures_verify_and_fail(signers: dict[FirmwareKeyType, LocalImageSigner]) -> None:
    for kind, signer in signers.items():
        key = TrustedKey.of(signer.public_key())
        sig = signer.sign_digest(DIGEST)
        key.verify_digest(kind.signature_tlv, sig, DIGEST)
        with pytest.raises(ImageSignatureError):
            key.verify_digest(kind.signature_tlv, sig, hashlib.sha256(b"other").digest())
        with pytest.raises(ImageSignatureError):
            key.verify_digest(kind.signature_tlv, sig[:-1], DIGEST)
        with pytest.raises(ImageSignatureError):
            key.verify_digest(kind.signature_tlv, sig + b"\x01", DIGEST)
        with pytest.raises(ValueError):
            signer.sign_digest(DIGEST[:20])


def test_ecdsa_padding_only_with_zero_bytes(p256: LocalImageSigner) -> None:
    key = TrustedKey.of(p256.public_key())
    sig = p256.sign_digest(DIGEST)
    padded = sig + bytes(72 - len(sig))
    key.verify_digest(TlvType.ECDSA_SIG, padded, DIGEST)
    if len(sig) < 72:
        with pytest.raises(ImageSignatureError):
            key.verify_digest(TlvType.ECDSA_SIG, sig + b"\x01" + bytes(71 - len(sig)), DIGEST)
    with pytest.raises(ImageSignatureError):
        key.verify_digest(TlvType.ECDSA_SIG, sig + bytes(80 - len(sig)), DIGEST)


def test_rsa_pss_salt_must_be_32_bytes(signers: dict[FirmwareKeyType, LocalImageSigner]
                                       ) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    signer = signers[FirmwareKeyType.RSA_2048]
    private = signer._key
    assert isinstance(private, rsa.RSAPrivateKey)
    other_salt = private.sign(DIGEST, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                  salt_length=20),
                              utils.Prehashed(hashes.SHA256()))
    with pytest.raises(ImageSignatureError):
        TrustedKey.of(signer.public_key()).verify_digest(TlvType.RSA2048_PSS, other_salt,
                                                         DIGEST)


def test_key_type_parsing() -> None:
    assert FirmwareKeyType.parse(" Ed25519 ") is FirmwareKeyType.ED25519
    with pytest.raises(FirmwareKeyError):
        FirmwareKeyType.parse("ecdsa-p384")
    with pytest.raises(FirmwareKeyError):
        FirmwareKeyType.of(ed25519.Ed25519PrivateKey.generate().public_key().__class__)
