"""TUF keys of the update repository: key files given to a command (public, or encrypted
private and unlocked), signing staged metadata offline, and the online snapshot and
timestamp keys held in key custody (:mod:`iotsec.custody`)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from securesystemslib.signer._crypto_signer import CryptoSigner
from securesystemslib.signer._key import Key
from securesystemslib.signer._signer import Signer

from iotsec.app.ota.firmware import read_key_file
from iotsec.app.runtime import Runtime
from iotsec.errors import (
    FirmwareKeyError,
    InvalidInputError,
    TufMetadataError,
)
from iotsec.firmware import tufmeta as t
from iotsec.pki.keys import KeyType

__all__ = [
    "KeyFile", "load_key_file", "new_online_keys", "online_keys", "online_signer", "sign_metadata",
    "signers_of"
]


@dataclass(frozen=True)
class KeyFile:
    """A TUF key given to a command: its public key, and a signer when the private key was
    given (and unlocked)."""

    public: Key
    signer: Signer | None = None


def load_key_file(path: Path, passphrase: Any) -> KeyFile:
    """A public key file, or an encrypted private key (``passphrase()`` is asked for only
    then): Ed25519, ECDSA P-256 or RSA, PEM."""
    data = read_key_file(path, "key file")
    if b"PRIVATE KEY-----" not in data:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise FirmwareKeyError(f"{path} is not a PEM key") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
                          | rsa.RSAPublicKey):
            raise FirmwareKeyError(f"{path}: this key type cannot sign TUF metadata")
        return KeyFile(t.public_key(key))
    if b"ENCRYPTED" not in data:
        raise FirmwareKeyError(f"the private key {path} is not encrypted",
                               hint="encrypt it with 'iotsec firmware import-key'")
    try:
        private = serialization.load_pem_private_key(data, password=passphrase())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise FirmwareKeyError(f"cannot decrypt the key {path}",
                               hint="check the passphrase (IOTSEC_TUF_KEY_PASSPHRASE)") from None
    if not isinstance(private, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
                      | rsa.RSAPrivateKey):
        raise FirmwareKeyError(f"{path}: this key type cannot sign TUF metadata")
    public = t.public_key(private.public_key())
    return KeyFile(public, CryptoSigner(private, public))


def sign_metadata(data: bytes, signers: Sequence[Signer]) -> tuple[bytes, str]:
    """Add signatures to a staged metadata file (on the offline machine: no home needed).
    Returns the new bytes and the role."""
    if not signers:
        raise InvalidInputError("no private key to sign with", hint="give --key KEY")
    role = t.role_of(data)
    md = t.load(data, role)
    if role not in t.OFFLINE_ROLES:
        raise TufMetadataError(f"{role} metadata is signed online, by the server")
    return t.serialize(t.sign(md, signers)), role


def signers_of(keys: Iterable[KeyFile]) -> list[Signer]:
    return [k.signer for k in keys if k.signer is not None]


def online_signer(rt: Runtime, label: str) -> Signer:
    return t.CustodySigner(rt.keys.load(label))


def new_online_keys(rt: Runtime) -> dict[str, str]:
    tag = secrets.token_hex(4)
    labels = {role: f"tuf-{role}-{tag}" for role in t.ONLINE_ROLES}
    for label in labels.values():
        rt.keys.generate(label, KeyType.ECDSA_P256)
    return labels


def online_keys(rt: Runtime, labels: dict[str, str]) -> dict[str, list[Key]]:
    return {role: [online_signer(rt, labels[role]).public_key] for role in t.ONLINE_ROLES}
