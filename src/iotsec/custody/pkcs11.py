"""PKCS#11 key custody: CA signing keys and key-encryption keys inside a token (an HSM).

Keys are generated *inside* the token as non-extractable, sensitive token objects; iotsec
only ever holds handles. The same token implements both custody interfaces:

* :class:`Pkcs11KeyStore` is a :class:`~iotsec.custody.base.KeyStore`; its signers implement
  :class:`~iotsec.pki.keys.Signer`, so the CA signs certificates and CRLs through the token.
  ECDSA uses ``CKM_ECDSA`` over a digest computed here (SoftHSM2 2.6 has no
  ``CKM_ECDSA_SHA256``); the token returns ``r || s``, which is DER-encoded as X.509 wants.
  RSA uses ``CKM_SHA256_RSA_PKCS``.
* The same store holds firmware signing keys (:mod:`iotsec.custody.pkcs11_image`:
  ECDSA P-256, Ed25519 with ``CKM_EDDSA``, RSA-PSS), marked apart from the CA keys.
* The same token holds AES-256 key-encryption keys (:mod:`iotsec.custody.pkcs11_kek`), whose
  KEK ids are ``hsm:<label>``, so a stored record names the custody its key lives in.

The token session itself (login, locking, error translation) is
:mod:`iotsec.custody.pkcs11_token`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import KeyType as P11KeyType
from pkcs11 import exceptions as p11e

from iotsec.custody.base import CustodyImageSigner, RecordingStore, check_label
from iotsec.custody.pkcs11_token import (
    OID_P256,
    OID_P384,
    PRIVATE_TEMPLATE,
    RETIRED_PREFIX,
    Pkcs11Token,
    ec_point,
    translate,
)
from iotsec.errors import (
    ConflictError,
    KeyCustodyError,
    KeyTypeMismatchError,
    Pkcs11Error,
    Pkcs11KeyNotFoundError,
)
from iotsec.firmware.image_keys import FirmwareKeyType
from iotsec.pki.keys import KeyType, Signer


@dataclass(frozen=True, slots=True)
class TokenKey:
    """A key in the token as ``iotsec keys list`` shows it (no secret attribute is read)."""

    label: str
    kind: str  # signing | image-signing | kek | retired-kek | other
    key_type: str  # ecdsa-p256 | ecdsa-p384 | rsa-3072 | aes-256 | ...
    extractable: bool
    sensitive: bool


def _curve_of(params: bytes) -> KeyType:
    if params == OID_P256:
        return KeyType.ECDSA_P256
    if params == OID_P384:
        return KeyType.ECDSA_P384
    raise KeyTypeMismatchError("the token's EC key is on a curve iotsec does not sign with",
                               hint="use a P-256 or P-384 key")


def _public_key(session_key: Any, key_type: KeyType) -> CertificateIssuerPublicKeyTypes:
    if key_type is KeyType.RSA_3072:
        modulus = int.from_bytes(session_key[Attribute.MODULUS], "big")
        exponent = int.from_bytes(session_key[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    curve: ec.EllipticCurve = ec.SECP256R1() if key_type is KeyType.ECDSA_P256 \
        else ec.SECP384R1()
    return ec.EllipticCurvePublicKey.from_encoded_point(
        curve, ec_point(bytes(session_key[Attribute.EC_POINT])))


def _key_type_of(key: Any) -> KeyType:
    """The iotsec type of a token private or public key (or a mismatch error)."""
    kind = key.key_type
    if kind == P11KeyType.EC:
        return _curve_of(bytes(key[Attribute.EC_PARAMS]))
    if kind == P11KeyType.RSA:
        if int(key.key_length) >= 3072:
            return KeyType.RSA_3072
        raise KeyTypeMismatchError(f"the token's RSA key {key.label!r} has fewer than 3072 bits")
    raise KeyTypeMismatchError(f"the token's key {key.label!r} is not a signing key")


class Pkcs11Signer:
    """A :class:`~iotsec.pki.keys.Signer` whose private key never leaves the token."""

    def __init__(self, token: Pkcs11Token, label: str, key_type: KeyType,
                 public_key: CertificateIssuerPublicKeyTypes,
                 on_use: Callable[[str, str], None] | None = None) -> None:
        self._token = token
        self.label = label
        self._type = key_type
        self._public = public_key
        self._on_use = on_use

    @property
    def key_type(self) -> KeyType:
        return self._type

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        if self._type is KeyType.RSA_3072:
            signature = self._token.use(
                self.label, ObjectClass.PRIVATE_KEY,
                lambda key: bytes(key.sign(data, mechanism=Mechanism.SHA256_RSA_PKCS)), "sign")
        else:
            digest = (hashlib.sha384 if self._type is KeyType.ECDSA_P384
                      else hashlib.sha256)(data).digest()
            raw = self._token.use(self.label, ObjectClass.PRIVATE_KEY,
                                  lambda key: bytes(key.sign(digest, mechanism=Mechanism.ECDSA)),
                                  "sign")
            half = len(raw) // 2
            if len(raw) % 2 or half not in (32, 48):
                raise Pkcs11Error(f"the token returned a malformed ECDSA signature for "
                                  f"{self.label!r}")
            signature = encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                             int.from_bytes(raw[half:], "big"))
        if self._on_use is not None:
            self._on_use(self.label, "sign")
        return signature

    def __repr__(self) -> str:
        return f"Pkcs11Signer({self.label!r}, {self._type.value}, token={self._token.label!r})"


class Pkcs11KeyStore(RecordingStore):
    """Signing keys in a token, by label (the :class:`~iotsec.custody.base.KeyStore`
    interface). ``on_use(label, operation)`` is called after each signature (for the audit
    trail)."""

    def __init__(self, token: Pkcs11Token,
                 on_use: Callable[[str, str], None] | None = None) -> None:
        self.token = token
        self.on_use = on_use
        self._cache: dict[str, Pkcs11Signer] = {}
        self._images: dict[str, CustodyImageSigner] = {}

    def __repr__(self) -> str:
        return f"Pkcs11KeyStore(token={self.token.label!r})"

    def exists(self, label: str) -> bool:
        return self.token.exists(check_label(label), ObjectClass.PRIVATE_KEY)

    def generate(self, label: str, key_type: KeyType) -> Signer:
        check_label(label)
        if self.token.exists(label):
            raise ConflictError(f"a key labelled {label!r} already exists in token "
                                f"{self.token.label!r}",
                                hint="keys are never overwritten; choose another label")
        key_id = secrets.token_bytes(16)
        public_template: dict[Attribute, Any] = {Attribute.TOKEN: True, Attribute.VERIFY: True,
                                                 Attribute.ENCRYPT: False,
                                                 Attribute.WRAP: False}
        with self.token.session() as slot:
            try:
                if key_type is KeyType.RSA_3072:
                    slot.handle.generate_keypair(
                        P11KeyType.RSA, 3072, label=label, id=key_id, store=True,
                        capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                        public_template=public_template, private_template=PRIVATE_TEMPLATE)
                else:
                    params = OID_P256 if key_type is KeyType.ECDSA_P256 else OID_P384
                    slot.handle.generate_keypair(
                        P11KeyType.EC, label=label, id=key_id, store=True,
                        capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                        public_template={**public_template, Attribute.EC_PARAMS: params},
                        private_template=PRIVATE_TEMPLATE)
            except p11e.PKCS11Error as exc:
                raise translate(exc, f"cannot generate {key_type.value} key {label!r} in "
                                 f"token {self.token.label!r}") from None
        return self.load(label)

    def load(self, label: str) -> Pkcs11Signer:
        cached = self._cache.get(label)
        if cached is not None:
            return cached
        check_label(label)

        def describe(key: Any) -> tuple[KeyType, CertificateIssuerPublicKeyTypes]:
            key_type = _key_type_of(key)
            return key_type, _public_key(key, key_type)

        from iotsec.custody.pkcs11_image import is_image_key

        try:
            image_key = self.token.use(label, ObjectClass.PRIVATE_KEY, is_image_key, "find")
        except Pkcs11KeyNotFoundError:
            if self.token.exists(label, ObjectClass.SECRET_KEY):
                raise KeyTypeMismatchError(f"key {label!r} in token {self.token.label!r} is "
                                           "a secret (AES) key, not a signing key") from None
            raise
        if image_key:
            raise KeyTypeMismatchError(f"key {label!r} in token {self.token.label!r} is a "
                                       "firmware signing key, not a certificate-signing key",
                                       hint="use a CA key; firmware keys sign only images")
        key_type, public = self.token.use(label, ObjectClass.PUBLIC_KEY, describe, "read")
        # on_use is read at each signature, not now: the runtime sets it after opening the
        # store, and a signer loaded before that must not sign unrecorded.
        signer = Pkcs11Signer(self.token, label, key_type, public, self._notify)
        self._cache[label] = signer
        return signer

    def generate_image_key(self, label: str, key_type: FirmwareKeyType) -> CustodyImageSigner:
        """A firmware signing key generated inside the token (non-extractable)."""
        from iotsec.custody import pkcs11_image

        pkcs11_image.generate(self.token, check_label(label), key_type)
        return self.load_image_key(label)

    def load_image_key(self, label: str) -> CustodyImageSigner:
        cached = self._images.get(label)
        if cached is not None:
            return cached
        from iotsec.custody import pkcs11_image

        signer = CustodyImageSigner(label, pkcs11_image.load(self.token, check_label(label)),
                                    self._notify)
        self._images[label] = signer
        return signer

    def public_pem(self, label: str) -> bytes:
        """The public key of ``label`` as SubjectPublicKeyInfo PEM."""
        return self.load(label).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def list(self) -> list[TokenKey]:
        """Private and secret keys in the token (public halves are not listed apart)."""
        from iotsec.custody.pkcs11_image import image_key_type, is_image_key

        found: list[TokenKey] = []
        for obj in self.token.objects({}):
            cls = obj.object_class
            if cls not in (ObjectClass.PRIVATE_KEY, ObjectClass.SECRET_KEY):
                continue
            label = str(obj.label)
            try:
                if cls == ObjectClass.SECRET_KEY:
                    key_type = f"{obj.key_type.name.lower()}-{obj.key_length}"
                    kind = ("retired-kek" if label.startswith(RETIRED_PREFIX)
                            else "kek" if obj.key_type == P11KeyType.AES else "other")
                elif is_image_key(obj):
                    key_type, kind = image_key_type(obj).value, "image-signing"
                else:
                    key_type, kind = _key_type_of(obj).value, "signing"
                extractable = bool(obj[Attribute.EXTRACTABLE])
                sensitive = bool(obj[Attribute.SENSITIVE])
            except (KeyCustodyError, p11e.PKCS11Error):
                key_type, kind, extractable, sensitive = "unsupported", "other", False, True
            found.append(TokenKey(label, kind, key_type, extractable, sensitive))
        return sorted(found, key=lambda k: (k.kind, k.label))


__all__ = ["Pkcs11KeyStore", "Pkcs11Signer", "TokenKey"]
