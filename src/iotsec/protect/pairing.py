"""Keys for end-to-end payload protection: pair keys from ECDH + HKDF, and signing keys.

A device and an application each hold a static key pair (X25519 or P-256). Each side
combines its private key with the other's public key (ECDH) and derives, with HKDF-SHA256
exactly as COSE's "ECDH-SS + HKDF-256" direct key agreement does (RFC 9053, sections 5.1
and 6.3), one AEAD key per direction::

    PRK = HKDF-Extract(salt, Z)
    key = HKDF-Expand(PRK, KDF_Context(alg, U, V, [256, {1: alg}, "iotsec payload key v1"]), 32)
    kid = HKDF-Expand(PRK, KDF_Context(alg, U, V, [128, {1: alg}, "iotsec payload kid v1"]), 16)
    kid = kid[:8]

where ``KDF_Context`` is the COSE_KDF_Context, ``U = [sender id, nil, sender public key]``
and ``V = [recipient id, nil, recipient public key]``. The context therefore binds both
identities, both public keys, the direction and the algorithm: the device-to-application
key differs from the application-to-device key (a message cannot be reflected back to its
sender), and a key established for one algorithm is never used with another. The salt is
random (:func:`new_salt`), chosen when the pair is provisioned and public; a new salt (or a
new static key) gives a new key with a new kid, which is how keys rotate. Nothing here is a
password KDF and no salt is fixed.

The kid is derived from the same secret, so it reveals nothing about the key, yet both sides
compute the same one: matching kids confirm that both derived the same key.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from iotsec.errors import InvalidInputError, PayloadAuthenticationError, PayloadKeyError
from iotsec.protect import cbor

__all__ = [
    "KID_LENGTH", "MAX_IDENTITY", "MAX_KEY_FILE", "MAX_SALT", "MIN_SALT", "AgreementPrivateKey",
    "AgreementPublicKey", "Algorithm", "PairContext", "PairKey", "PrivateKey", "PublicKey",
    "SigningKey", "SigningPrivateKey", "VerifyingKey", "VerifyingPublicKey",
    "agree", "as_agreement_private", "as_agreement_public", "as_signing_private",
    "as_verifying_public",
    "check_identity", "establish", "kdf_context", "load_private_key", "load_public_key",
    "new_salt", "public_bytes", "signing_kid"
]

KID_LENGTH: Final = 8
MIN_SALT: Final = 16
MAX_SALT: Final = 64
MAX_IDENTITY: Final = 255
#: Largest PEM/DER key file accepted by :func:`load_private_key` / :func:`load_public_key`.
MAX_KEY_FILE: Final = 16 * 1024

_KEY_INFO: Final = b"iotsec payload key v1"
_KID_INFO: Final = b"iotsec payload kid v1"
_IDENTITY = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$")

AgreementPrivateKey = x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey
AgreementPublicKey = x25519.X25519PublicKey | ec.EllipticCurvePublicKey
SigningPrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
VerifyingPublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = x25519.X25519PublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class Algorithm(enum.IntEnum):
    """COSE algorithms iotsec seals with (RFC 9053 identifiers)."""

    A256GCM = 3
    CHACHA20_POLY1305 = 24
    ES256 = -7
    EDDSA = -8

    @property
    def cose_name(self) -> str:
        return _NAMES[self]

    @property
    def is_aead(self) -> bool:
        return self in (Algorithm.A256GCM, Algorithm.CHACHA20_POLY1305)

    @classmethod
    def parse(cls, text: str) -> Algorithm:
        found = _BY_NAME.get(text.strip().lower())
        if found is None:
            choices = ", ".join(_NAMES.values())
            raise InvalidInputError(f"unknown algorithm {text!r}", hint=f"choose one of: {choices}")
        return found


_NAMES: Final = {Algorithm.A256GCM: "A256GCM", Algorithm.CHACHA20_POLY1305: "ChaCha20/Poly1305",
                 Algorithm.ES256: "ES256", Algorithm.EDDSA: "EdDSA"}
_BY_NAME: Final = {**{name.lower(): alg for alg, name in _NAMES.items()},
                   "chacha20-poly1305": Algorithm.CHACHA20_POLY1305}


def new_salt() -> bytes:
    """A fresh random pairing salt (16 bytes)."""
    return secrets.token_bytes(MIN_SALT)


def check_identity(identity: str, what: str = "identity") -> bytes:
    """``identity`` as the UTF-8 bytes bound into key derivation (printable, 1-255 bytes)."""
    if not isinstance(identity, str) or len(identity) > MAX_IDENTITY or \
            not _IDENTITY.fullmatch(identity):
        raise PayloadKeyError(f"invalid {what} {identity!r}",
                              hint="identities are 1-255 printable ASCII characters without "
                              "leading or trailing spaces")
    return identity.encode("ascii")


def public_bytes(key: PublicKey) -> bytes:
    """Raw public key bytes: X25519/Ed25519 raw, P-256 as a compressed SEC1 point."""
    if isinstance(key, x25519.X25519PublicKey | ed25519.Ed25519PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key.public_bytes(serialization.Encoding.X962,
                                serialization.PublicFormat.CompressedPoint)
    raise PayloadKeyError("unsupported public key",
                          hint="use an X25519, Ed25519 or EC P-256 key")


def kdf_context(alg: Algorithm, sender: tuple[bytes, bytes], recipient: tuple[bytes, bytes],
                key_bits: int, other: bytes) -> bytes:
    """The COSE_KDF_Context (RFC 9053, section 5.2) used as HKDF info."""
    protected = cbor.dumps({1: int(alg)})
    return cbor.dumps([int(alg), [sender[0], None, sender[1]], [recipient[0], None, recipient[1]],
                       [key_bits, protected, other]])


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), length, info).derive(prk)


class PairKey:
    """One direction of a device pair: an AEAD key with its kid, algorithm and parties.

    The key bytes stay inside; ``repr`` shows only public facts.
    """

    __slots__ = ("_aead", "_protected_prefix", "alg", "kid", "recipient_id", "sender_id")

    def __init__(self, key: bytes, *, kid: bytes, alg: Algorithm, sender_id: str,
                 recipient_id: str) -> None:
        if not alg.is_aead:
            raise PayloadKeyError(f"{alg.cose_name} is not an encryption algorithm")
        if len(key) != 32:
            raise PayloadKeyError("a pair key has 32 bytes")
        if not 1 <= len(kid) <= 32:
            raise PayloadKeyError("a kid has 1 to 32 bytes")
        self._aead: AESGCM | ChaCha20Poly1305 = (
            AESGCM(key) if alg is Algorithm.A256GCM else ChaCha20Poly1305(key))
        self.kid = kid
        self.alg = alg
        self.sender_id = sender_id
        self.recipient_id = recipient_id
        # The protected header without the sequence number: {1: alg, 4: kid, seq-label: ...}
        self._protected_prefix = b"\xa3" + cbor.uint_or_nint(1) + cbor.uint_or_nint(alg) + \
            b"\x04" + cbor.bstr(kid)

    def __repr__(self) -> str:
        return (f"PairKey(kid={self.kid.hex()}, alg={self.alg.cose_name}, "
                f"{self.sender_id} -> {self.recipient_id})")


@dataclass(frozen=True, slots=True, repr=False)
class PairContext:
    """Both directions of a pair, as seen from one side: ``send`` (own -> peer) and
    ``receive`` (peer -> own)."""

    own_id: str
    peer_id: str
    alg: Algorithm
    salt: bytes
    send: PairKey
    receive: PairKey

    def __repr__(self) -> str:
        return (f"PairContext({self.own_id} <-> {self.peer_id}, {self.alg.cose_name}, "
                f"send kid {self.send.kid.hex()}, receive kid {self.receive.kid.hex()})")


def agree(own: AgreementPrivateKey, peer: AgreementPublicKey) -> bytes:
    """The ECDH shared secret of two X25519 keys or two P-256 keys."""
    try:
        if isinstance(own, x25519.X25519PrivateKey) and isinstance(peer, x25519.X25519PublicKey):
            return own.exchange(peer)
        if (isinstance(own, ec.EllipticCurvePrivateKey)
                and isinstance(peer, ec.EllipticCurvePublicKey)
                and isinstance(own.curve, ec.SECP256R1) and isinstance(peer.curve, ec.SECP256R1)):
            return own.exchange(ec.ECDH(), peer)
    except ValueError:
        # X25519 with a small-order peer key yields the all-zero secret; cryptography refuses.
        raise PayloadKeyError("the peer's public key is not usable for key agreement",
                              hint="the key is invalid (a small-order point); ask for a new "
                              "one") from None
    raise PayloadKeyError("key agreement needs two X25519 keys or two P-256 keys "
                          f"(got {type(own).__name__} and {type(peer).__name__})")


def establish(own_private: AgreementPrivateKey, peer_public: AgreementPublicKey, *,
              own_id: str, peer_id: str, salt: bytes,
              alg: Algorithm = Algorithm.A256GCM) -> PairContext:
    """Derive the pair keys between this side (``own_private``, ``own_id``) and its peer."""
    if not isinstance(alg, Algorithm) or not alg.is_aead:
        raise PayloadKeyError(f"{alg!r} is not an encryption algorithm",
                              hint="use A256GCM or ChaCha20/Poly1305")
    if not isinstance(salt, bytes) or not MIN_SALT <= len(salt) <= MAX_SALT:
        raise PayloadKeyError(f"the pairing salt must have {MIN_SALT} to {MAX_SALT} bytes",
                              hint="generate one with new_salt() ('iotsec payload pair')")
    own = (check_identity(own_id, "own identity"), public_bytes(own_private.public_key()))
    peer = (check_identity(peer_id, "peer identity"), public_bytes(peer_public))
    if own[0] == peer[0]:
        raise PayloadKeyError("both sides of a pair have the same identity",
                              hint="give the device and the application distinct identities")
    shared = agree(own_private, peer_public)
    prk = hmac.digest(salt, shared, "sha256")

    def direction(sender: tuple[bytes, bytes], recipient: tuple[bytes, bytes],
                  sender_id: str, recipient_id: str) -> PairKey:
        key = _expand(prk, kdf_context(alg, sender, recipient, 256, _KEY_INFO), 32)
        kid = _expand(prk, kdf_context(alg, sender, recipient, 128, _KID_INFO), 16)[:KID_LENGTH]
        return PairKey(key, kid=kid, alg=alg, sender_id=sender_id, recipient_id=recipient_id)

    return PairContext(own_id=own_id, peer_id=peer_id, alg=alg, salt=salt,
                       send=direction(own, peer, own_id, peer_id),
                       receive=direction(peer, own, peer_id, own_id))


def signing_kid(public: VerifyingPublicKey) -> bytes:
    """Default kid of a signing key: the first 8 bytes of SHA-256 over its raw public key."""
    return hashlib.sha256(public_bytes(public)).digest()[:KID_LENGTH]


def _signature_alg(key: SigningPrivateKey | VerifyingPublicKey) -> Algorithm:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return Algorithm.EDDSA
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and \
            isinstance(key.curve, ec.SECP256R1):
        return Algorithm.ES256
    raise PayloadKeyError(f"a {type(key).__name__} cannot sign COSE_Sign1 messages",
                          hint="sign with an EC P-256 (ES256) or Ed25519 (EdDSA) key")


class VerifyingKey:
    """A sender's public signing key, as the receiver holds it."""

    __slots__ = ("_key", "alg", "kid", "sender_id")

    def __init__(self, public: VerifyingPublicKey, *, sender_id: str,
                 kid: bytes | None = None) -> None:
        self.alg = _signature_alg(public)
        check_identity(sender_id, "sender identity")
        self._key = public
        self.kid = signing_kid(public) if kid is None else kid
        if not 1 <= len(self.kid) <= 32:
            raise PayloadKeyError("a kid has 1 to 32 bytes")
        self.sender_id = sender_id

    def verify(self, signature: bytes, data: bytes) -> None:
        """Raise :class:`PayloadAuthenticationError` unless ``signature`` is valid."""
        key = self._key
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, data)
                return
            if len(signature) != 64:
                raise InvalidSignature
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise PayloadAuthenticationError(
                f"the signature does not verify with key {self.kid.hex()} of "
                f"{self.sender_id}") from None

    def __repr__(self) -> str:
        return f"VerifyingKey(kid={self.kid.hex()}, alg={self.alg.cose_name}, {self.sender_id})"


class SigningKey:
    """A sender's private signing key (COSE_Sign1: ES256 or EdDSA)."""

    __slots__ = ("_key", "_protected_prefix", "alg", "kid", "sender_id")

    def __init__(self, private: SigningPrivateKey, *, sender_id: str,
                 kid: bytes | None = None) -> None:
        self.alg = _signature_alg(private)
        check_identity(sender_id, "sender identity")
        self._key = private
        self.kid = signing_kid(private.public_key()) if kid is None else kid
        if not 1 <= len(self.kid) <= 32:
            raise PayloadKeyError("a kid has 1 to 32 bytes")
        self.sender_id = sender_id
        self._protected_prefix = b"\xa3\x01" + cbor.uint_or_nint(self.alg) + b"\x04" + \
            cbor.bstr(self.kid)

    def sign(self, data: bytes) -> bytes:
        """The COSE signature over ``data``: Ed25519, or ECDSA as r || s (64 bytes)."""
        key = self._key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def verifying_key(self) -> VerifyingKey:
        return VerifyingKey(self._key.public_key(), sender_id=self.sender_id, kid=self.kid)

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid.hex()}, alg={self.alg.cose_name}, {self.sender_id})"


# --- key files (PEM or DER), for the CLI and the SDK -----------------------------------------


def _parse_key(data: bytes, from_pem: Callable[[bytes], Any],
               from_der: Callable[[bytes], Any], what: str, hint: str) -> Any:
    """The size limit and the PEM/DER choice shared by the key-file loaders."""
    if len(data) > MAX_KEY_FILE:
        raise PayloadKeyError(f"a key file has at most {MAX_KEY_FILE} bytes")
    try:
        return from_pem(data) if data.lstrip().startswith(b"-----") else from_der(data)
    except (ValueError, TypeError, UnicodeError):
        raise PayloadKeyError(what, hint=hint) from None


def load_private_key(data: bytes) -> PrivateKey:
    """Parse an unencrypted PKCS#8 private key (PEM or DER): X25519, Ed25519 or EC P-256."""
    key = _parse_key(data, lambda d: serialization.load_pem_private_key(d, password=None),
                     lambda d: serialization.load_der_private_key(d, password=None),
                     "not an unencrypted PKCS#8 private key (PEM or DER)",
                     "create one with 'iotsec payload keygen'")
    if isinstance(key, x25519.X25519PrivateKey | ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise PayloadKeyError(f"unsupported private key type {type(key).__name__}",
                          hint="use X25519, Ed25519 or EC P-256 keys")


def load_public_key(data: bytes) -> PublicKey:
    """Parse a SubjectPublicKeyInfo (PEM or DER): X25519, Ed25519 or EC P-256."""
    key = _parse_key(data, serialization.load_pem_public_key,
                     serialization.load_der_public_key,
                     "not a public key (PEM or DER SubjectPublicKeyInfo)",
                     "export it with 'iotsec payload keygen'")
    if isinstance(key, x25519.X25519PublicKey | ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise PayloadKeyError(f"unsupported public key type {type(key).__name__}",
                          hint="use X25519, Ed25519 or EC P-256 keys")


#: Why a key is refused for a use it cannot serve (Ed25519 only signs, X25519 only agrees):
#: (message, hint) per use.
_REFUSALS: Final = {
    "agree": ("an Ed25519 key cannot be used for key agreement",
              "encrypt with an X25519 or P-256 key; Ed25519 only signs"),
    "sign": ("an X25519 key cannot sign",
             "sign with an Ed25519 or P-256 key; X25519 only encrypts"),
    "verify": ("an X25519 key cannot verify signatures",
               "verify with the sender's Ed25519 or P-256 key"),
}


def _refused(use: str) -> PayloadKeyError:
    message, hint = _REFUSALS[use]
    return PayloadKeyError(message, hint=hint)


def as_agreement_private(key: PrivateKey) -> AgreementPrivateKey:
    """``key`` as a key-agreement key (X25519 or P-256); Ed25519 is refused."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raise _refused("agree")
    return key


def as_agreement_public(key: PublicKey) -> AgreementPublicKey:
    """``key`` as a peer's key-agreement key (X25519 or P-256); Ed25519 is refused."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        raise _refused("agree")
    return key


def as_signing_private(key: PrivateKey) -> SigningPrivateKey:
    """``key`` as a signing key (Ed25519 or P-256); X25519 is refused."""
    if isinstance(key, x25519.X25519PrivateKey):
        raise _refused("sign")
    return key


def as_verifying_public(key: PublicKey) -> VerifyingPublicKey:
    """``key`` as a verifying key (Ed25519 or P-256); X25519 is refused."""
    if isinstance(key, x25519.X25519PublicKey):
        raise _refused("verify")
    return key
