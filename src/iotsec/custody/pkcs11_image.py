"""Firmware signing keys in a PKCS#11 token: generated inside it, non-extractable, and
used with the mechanisms MCUboot's algorithms need over the 32-byte SHA-256 image digest:

* ECDSA P-256: ``CKM_ECDSA`` over the digest; the token's ``r || s`` becomes the DER
  ``ECDSA-Sig-Value`` MCUboot reads from the ``ECDSA_SIG`` TLV.
* Ed25519: ``CKM_EDDSA`` (no parameters: pure Ed25519) with the digest as the message,
  as imgtool and bootutil do.
* RSA-2048/3072: ``CKM_RSA_PKCS_PSS`` over the digest with ``CK_RSA_PKCS_PSS_PARAMS``
  (``CKM_SHA256``, ``CKG_MGF1_SHA256``, salt length 32).

A firmware key is marked by its ``CKA_ID``, which starts with :data:`IMAGE_ID_PREFIX`
(then 16 random bytes); Ed25519 keys are firmware keys by type. The CA side
(:class:`~iotsec.custody.pkcs11.Pkcs11KeyStore.load`) refuses marked keys, and this side
refuses unmarked ones, so one key never signs both certificates and images.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import MGF, Attribute, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import KeyType as P11KeyType
from pkcs11 import exceptions as p11e

from iotsec.custody.pkcs11_token import PRIVATE_TEMPLATE, Pkcs11Token, ec_point, translate
from iotsec.errors import (
    ConflictError,
    KeyTypeMismatchError,
    Pkcs11Error,
    Pkcs11KeyNotFoundError,
)
from iotsec.firmware.image_keys import FirmwareKeyType, FirmwarePublicKey

#: ``CKA_ID`` prefix of firmware signing keys.
IMAGE_ID_PREFIX: Final = b"iotsec-image:"
_OID_P256: Final = bytes.fromhex("06082a8648ce3d030107")
#: id-Ed25519 (RFC 8410) as CKA_EC_PARAMS, and the PKCS#11 3.0 printable-string form.
_OID_ED25519: Final = bytes.fromhex("06032b6570")
_NAME_ED25519: Final = b"\x13\x0cedwards25519"
_PSS_PARAMS: Final = (Mechanism.SHA256, MGF.SHA256, 32)


def is_image_key(key: Any) -> bool:
    """Whether a token key object is a firmware signing key."""
    if key.key_type == P11KeyType.EC_EDWARDS:
        return True
    try:
        key_id = bytes(key[Attribute.ID])
    except (p11e.AttributeTypeInvalid, p11e.AttributeSensitive):
        return False
    return key_id.startswith(IMAGE_ID_PREFIX)


def image_key_type(key: Any) -> FirmwareKeyType:
    """The firmware key type of a token key object (private or public)."""
    kind = key.key_type
    if kind == P11KeyType.EC_EDWARDS:
        params = bytes(key[Attribute.EC_PARAMS])
        if params in (_OID_ED25519, _NAME_ED25519):
            return FirmwareKeyType.ED25519
    elif kind == P11KeyType.EC:
        if bytes(key[Attribute.EC_PARAMS]) == _OID_P256:
            return FirmwareKeyType.ECDSA_P256
    elif kind == P11KeyType.RSA:
        bits = int(key.key_length)
        if bits == 2048:
            return FirmwareKeyType.RSA_2048
        if bits == 3072:
            return FirmwareKeyType.RSA_3072
    raise KeyTypeMismatchError(f"the token's key {key.label!r} is not an MCUboot signing "
                               "key (ECDSA P-256, Ed25519, RSA-2048/3072)")


def image_public_key(key: Any, kind: FirmwareKeyType) -> FirmwarePublicKey:
    """The public key of a token public-key object."""
    if kind in (FirmwareKeyType.RSA_2048, FirmwareKeyType.RSA_3072):
        modulus = int.from_bytes(key[Attribute.MODULUS], "big")
        exponent = int.from_bytes(key[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    point = ec_point(bytes(key[Attribute.EC_POINT]))
    if kind is FirmwareKeyType.ED25519:
        return ed25519.Ed25519PublicKey.from_public_bytes(point)
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


class Pkcs11ImageSigner:
    """An :class:`~iotsec.firmware.image_keys.ImageSigner` whose private key stays in the token
    (wrapped in a :class:`~iotsec.custody.base.CustodyImageSigner` by the key store)."""

    def __init__(self, token: Pkcs11Token, label: str, key_type: FirmwareKeyType,
                 public_key: FirmwarePublicKey) -> None:
        self._token = token
        self.label = label
        self._type = key_type
        self._public = public_key

    @property
    def key_type(self) -> FirmwareKeyType:
        return self._type

    def public_key(self) -> FirmwarePublicKey:
        return self._public

    def sign_digest(self, digest: bytes) -> bytes:
        if len(digest) != 32:
            raise ValueError("an image digest is 32 bytes (SHA-256)")
        kind = self._type
        operation: Callable[[Any], bytes]
        if kind is FirmwareKeyType.ED25519:
            def operation(key: Any) -> bytes:
                return bytes(key.sign(digest, mechanism=Mechanism.EDDSA))
        elif kind is FirmwareKeyType.ECDSA_P256:
            def operation(key: Any) -> bytes:
                return bytes(key.sign(digest, mechanism=Mechanism.ECDSA))
        else:
            def operation(key: Any) -> bytes:
                return bytes(key.sign(digest, mechanism=Mechanism.RSA_PKCS_PSS,
                                      mechanism_param=_PSS_PARAMS))
        raw = self._token.use(self.label, ObjectClass.PRIVATE_KEY, operation, "sign an image")
        if kind is FirmwareKeyType.ECDSA_P256:
            if len(raw) != 64:
                raise Pkcs11Error(f"the token returned a malformed ECDSA signature for "
                                  f"{self.label!r}")
            return encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                        int.from_bytes(raw[32:], "big"))
        expected = 64 if kind is FirmwareKeyType.ED25519 else \
            (2048 if kind is FirmwareKeyType.RSA_2048 else 3072) // 8
        if len(raw) != expected:
            raise Pkcs11Error(f"the token returned a malformed {kind} signature for "
                              f"{self.label!r}")
        return raw

    def __repr__(self) -> str:
        return (f"Pkcs11ImageSigner({self.label!r}, {self._type.value}, "
                f"token={self._token.label!r})")


def generate(token: Pkcs11Token, label: str, kind: FirmwareKeyType) -> None:
    """Generate a firmware key pair inside the token: private half sensitive,
    non-extractable, sign-only."""
    if token.exists(label):
        raise ConflictError(f"a key labelled {label!r} already exists in token "
                            f"{token.label!r}",
                            hint="keys are never overwritten; choose another label")
    key_id = IMAGE_ID_PREFIX + secrets.token_bytes(16)
    public_template: dict[Attribute, Any] = {Attribute.TOKEN: True, Attribute.VERIFY: True,
                                             Attribute.ENCRYPT: False, Attribute.WRAP: False}
    flags = MechanismFlag.SIGN | MechanismFlag.VERIFY
    with token.session() as slot:
        try:
            if kind in (FirmwareKeyType.RSA_2048, FirmwareKeyType.RSA_3072):
                bits = 2048 if kind is FirmwareKeyType.RSA_2048 else 3072
                slot.handle.generate_keypair(
                    P11KeyType.RSA, bits, label=label, id=key_id, store=True,
                    capabilities=flags, public_template=public_template,
                    private_template=PRIVATE_TEMPLATE)
            else:
                edwards = kind is FirmwareKeyType.ED25519
                slot.handle.generate_keypair(
                    P11KeyType.EC_EDWARDS if edwards else P11KeyType.EC, label=label,
                    id=key_id, store=True, capabilities=flags,
                    public_template={**public_template, Attribute.EC_PARAMS:
                                     _OID_ED25519 if edwards else _OID_P256},
                    private_template=PRIVATE_TEMPLATE)
        except (p11e.MechanismInvalid, p11e.FunctionNotSupported, p11e.TemplateInconsistent,
                p11e.AttributeValueInvalid, p11e.DomainParamsInvalid):
            raise KeyTypeMismatchError(
                f"token {token.label!r} cannot generate {kind} keys (its module lacks the "
                "mechanism or the curve)",
                hint="choose another --type, or keep this key in the file key store"
            ) from None
        except p11e.PKCS11Error as exc:
            raise translate(exc, f"cannot generate {kind} key {label!r} in token "
                             f"{token.label!r}") from None


def load(token: Pkcs11Token, label: str) -> Pkcs11ImageSigner:
    """The firmware signer for ``label`` (a CA key or an AES key is refused)."""
    try:
        marked = token.use(label, ObjectClass.PRIVATE_KEY, is_image_key, "find")
    except Pkcs11KeyNotFoundError:
        if token.exists(label, ObjectClass.SECRET_KEY):
            raise KeyTypeMismatchError(f"key {label!r} in token {token.label!r} is a secret "
                                       "(AES) key, not a firmware signing key") from None
        raise
    if not marked:
        raise KeyTypeMismatchError(f"key {label!r} in token {token.label!r} is a "
                                   "certificate-signing key, not a firmware signing key",
                                   hint="generate one with 'iotsec firmware keygen --label "
                                   "NAME'")

    def describe(key: Any) -> tuple[FirmwareKeyType, FirmwarePublicKey]:
        kind = image_key_type(key)
        return kind, image_public_key(key, kind)

    kind, public = token.use(label, ObjectClass.PUBLIC_KEY, describe, "read")
    return Pkcs11ImageSigner(token, label, kind, public)


__all__ = ["IMAGE_ID_PREFIX", "Pkcs11ImageSigner", "generate", "image_key_type",
           "image_public_key", "is_image_key", "load"]
