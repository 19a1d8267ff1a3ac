"""The key-custody interface.

Issuance and CRL code only ever see a :class:`Signer`: a public key and a ``sign(data)``
that returns an X.509 signature value for the key's algorithm. Private key bytes never
cross this interface, so an HSM backend (PKCS#11) can implement it unchanged.

Firmware signing keys are held by the same stores but through their own pair of calls,
:meth:`KeyStore.generate_image_key` and :meth:`KeyStore.load_image_key`, which hand out an
:class:`~iotsec.firmware.keys.ImageSigner` (``sign_digest`` over the 32-byte SHA-256 image
digest, the MCUboot algorithms: ECDSA P-256, pure Ed25519 over the digest, RSA-PSS). A
label names one key with one purpose: ``load`` refuses a firmware key and
``load_image_key`` refuses a CA key, with :class:`~iotsec.errors.KeyTypeMismatchError`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)

from iotsec.errors import InvalidInputError

if TYPE_CHECKING:  # the firmware core imports this package; types only
    from iotsec.firmware.keys import FirmwareKeyType, FirmwarePublicKey, ImageSigner

#: The operation ``on_use`` is told of for a certificate or CRL signature.
SIGN = "sign"
#: The operation ``on_use`` is told of for a firmware image signature.
SIGN_IMAGE = "sign-image"


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


class KeyStore(Protocol):
    """Named keys in custody. Labels are plain names such as ``root-ca``."""

    def generate(self, label: str, key_type: KeyType) -> Signer: ...

    def load(self, label: str) -> Signer: ...

    def exists(self, label: str) -> bool:
        """Whether ``label`` names a key of any purpose (labels are one namespace)."""
        ...

    def generate_image_key(self, label: str, key_type: FirmwareKeyType) -> ImageSigner:
        """Generate a firmware signing key in custody (never overwrites a label)."""
        ...

    def load_image_key(self, label: str) -> ImageSigner:
        """The firmware signing key ``label``; a CA key or a missing label is refused."""
        ...


class CustodyImageSigner:
    """An :class:`~iotsec.firmware.keys.ImageSigner` handed out by a key store: it signs
    through ``inner`` and tells ``on_use(label, "sign-image")`` after every signature (the
    audit trail), so a custody key is never used unrecorded."""

    def __init__(self, label: str, inner: ImageSigner,
                 on_use: Callable[[str, str], None] | None = None) -> None:
        self.label = label
        self._inner = inner
        self.on_use = on_use

    @property
    def key_type(self) -> FirmwareKeyType:
        return self._inner.key_type

    def public_key(self) -> FirmwarePublicKey:
        return self._inner.public_key()

    def sign_digest(self, digest: bytes) -> bytes:
        signature = self._inner.sign_digest(digest)
        if self.on_use is not None:
            self.on_use(self.label, SIGN_IMAGE)
        return signature

    def __repr__(self) -> str:
        return f"CustodyImageSigner({self.label!r}, {self._inner!r})"


class CustodySigner:
    """A :class:`Signer` handed out by a key store: it signs through ``inner`` and tells
    ``on_use(label, "sign")`` after every signature (the audit trail of CA signing)."""

    def __init__(self, label: str, inner: Signer,
                 on_use: Callable[[str, str], None] | None = None) -> None:
        self.label = label
        self._inner = inner
        self.on_use = on_use

    @property
    def key_type(self) -> KeyType:
        return self._inner.key_type

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self._inner.public_key()

    def sign(self, data: bytes) -> bytes:
        signature = self._inner.sign(data)
        if self.on_use is not None:
            self.on_use(self.label, SIGN)
        return signature

    def __repr__(self) -> str:
        return f"CustodySigner({self.label!r}, {self._inner!r})"


class LocalSigner:
    """A :class:`Signer` over an in-process private key (used by the file key store)."""

    def __init__(self, key: CertificateIssuerPrivateKeyTypes) -> None:
        self._key = key
        self._type = KeyType.of(key)

    @property
    def key_type(self) -> KeyType:
        return self._type

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            digest: hashes.HashAlgorithm = (
                hashes.SHA384() if self._type is KeyType.ECDSA_P384 else hashes.SHA256()
            )
            return key.sign(data, ec.ECDSA(digest))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        raise TypeError(f"unsupported key {type(key).__name__}")  # pragma: no cover

    def __repr__(self) -> str:
        return f"LocalSigner({self._type.value})"
