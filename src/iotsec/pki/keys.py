"""Signing keys as the PKI sees them: the key types a CA may use and the :class:`Signer`
interface.

Issuance and CRL code only ever see a :class:`Signer`: a public key and a ``sign(data)``
that returns an X.509 signature value for the key's algorithm. Private key bytes never
cross this interface, so a key held in an HSM (:mod:`iotsec.custody.pkcs11`) implements it
unchanged. :class:`LocalSigner` is the in-memory implementation.
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)

from iotsec.errors import InvalidInputError

__all__ = ["KeyType", "LocalSigner", "Signer"]


class KeyType(enum.StrEnum):
    """Key types a certificate authority (and a generated device key) may use."""

    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"
    RSA_3072 = "rsa-3072"

    @classmethod
    def parse(cls, text: str) -> KeyType:
        try:
            return cls(text.strip().lower())
        except ValueError:
            choices = ", ".join(k.value for k in cls)
            raise InvalidInputError(
                f"unknown key type {text!r}", hint=f"choose one of: {choices}"
            ) from None

    def generate(self) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
        """Make a fresh private key of this type (in memory)."""
        if self is KeyType.ECDSA_P256:
            return ec.generate_private_key(ec.SECP256R1())
        if self is KeyType.ECDSA_P384:
            return ec.generate_private_key(ec.SECP384R1())
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)

    @classmethod
    def of(cls, key: CertificateIssuerPrivateKeyTypes | CertificateIssuerPublicKeyTypes) -> KeyType:
        if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
            if isinstance(key.curve, ec.SECP256R1):
                return cls.ECDSA_P256
            if isinstance(key.curve, ec.SECP384R1):
                return cls.ECDSA_P384
        if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) and key.key_size >= 3072:
            return cls.RSA_3072
        raise InvalidInputError("unsupported key for a certificate authority",
                                hint="use an ECDSA P-256/P-384 or RSA-3072 key")


@runtime_checkable
class Signer(Protocol):
    """Something that signs with a private key it never reveals."""

    @property
    def key_type(self) -> KeyType: ...

    def public_key(self) -> CertificateIssuerPublicKeyTypes: ...

    def sign(self, data: bytes) -> bytes:
        """Return the signature value over ``data`` (DER ECDSA-Sig-Value or RSA PKCS#1 v1.5),
        with the hash that :func:`iotsec.pki.x509.signature_algorithm` names for the type."""
        ...



class LocalSigner:
    """A :class:`Signer` over an in-process private key (used by the file key store)."""

    def __init__(self, key: CertificateIssuerPrivateKeyTypes) -> None:
        self._key = key
        self._type = KeyType.of(key)
        # The ECDSA parameters, made once: a CA signs a certificate per issuance.
        self._ecdsa = ec.ECDSA(hashes.SHA384() if self._type is KeyType.ECDSA_P384
                               else hashes.SHA256())

    @property
    def key_type(self) -> KeyType:
        return self._type

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self._key.public_key()

    @property
    def private_key(self) -> CertificateIssuerPrivateKeyTypes:
        """The key itself (for handing an imported CA key to custody)."""
        return self._key

    def sign(self, data: bytes) -> bytes:
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, self._ecdsa)
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        raise TypeError(f"unsupported key {type(key).__name__}")  # pragma: no cover

    def __repr__(self) -> str:
        return f"LocalSigner({self._type.value})"
