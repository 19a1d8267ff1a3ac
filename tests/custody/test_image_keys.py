"""Firmware signing keys in the file key store: every MCUboot type, signatures that verify
as MCUboot verifies them, one purpose per label, and every signature reported."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from iotsec.custody.file_keys import FileKeyStore
from iotsec.errors import (
    ConflictError,
    ImageSignatureError,
    KeyCustodyError,
    KeyTypeMismatchError,
    NotFoundError,
)
from iotsec.firmware.image_keys import FirmwareKeyType, TrustedKey
from iotsec.pki import pkcs8
from iotsec.pki.keys import KeyType

PASSPHRASE = b"correct horse battery staple"
DIGEST = hashlib.sha256(b"an image").digest()


@pytest.fixture
def used() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def store(tmp_path: Path, used: list[tuple[str, str]]) -> FileKeyStore:
    return FileKeyStore(tmp_path / "keys", PASSPHRASE,
                        on_use=lambda label, op: used.append((label, op)))


@pytest.mark.parametrize("kind", list(FirmwareKeyType), ids=lambda k: k.value)
def test_generate_sign_and_reload(kind: FirmwareKeyType, store: FileKeyStore, tmp_path: Path,
                                  used: list[tuple[str, str]]) -> None:
    signer = store.generate_image_key("fw", kind)
    assert signer.key_type is kind and store.exists("fw")
    path = tmp_path / "keys" / "fw.image-key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pkcs8.uses_scrypt(pkcs8.pem_body(path.read_bytes()))
    trusted = TrustedKey.of(signer.public_key())
    signature = signer.sign_digest(DIGEST)
    trusted.verify_digest(kind.signature_tlv, signature, DIGEST)
    with pytest.raises(ImageSignatureError):
        trusted.verify_digest(kind.signature_tlv, signature, hashlib.sha256(b"x").digest())
    assert used == [("fw", "sign-image")]
    # A new store (another process) decrypts the same key.
    again = FileKeyStore(tmp_path / "keys", PASSPHRASE).load_image_key("fw")
    assert TrustedKey.of(again.public_key()).key_hash == trusted.key_hash
    again_sig = again.sign_digest(DIGEST)
    trusted.verify_digest(kind.signature_tlv, again_sig, DIGEST)
    with pytest.raises(ValueError, match="32 bytes"):
        again.sign_digest(b"short")


def test_one_label_one_purpose(store: FileKeyStore) -> None:
    store.generate_image_key("fw", FirmwareKeyType.ECDSA_P256)
    store.generate("ca", KeyType.ECDSA_P256)
    with pytest.raises(KeyTypeMismatchError, match="firmware signing key"):
        store.load("fw")
    with pytest.raises(KeyTypeMismatchError, match="certificate-signing key"):
        store.load_image_key("ca")
    with pytest.raises(ConflictError):
        store.generate("fw", KeyType.ECDSA_P256)
    with pytest.raises(ConflictError):
        store.generate_image_key("ca", FirmwareKeyType.ED25519)
    with pytest.raises(ConflictError):
        store.generate_image_key("fw", FirmwareKeyType.ED25519)
    assert store.image_labels() == ["fw"]


def test_missing_and_invalid_labels(store: FileKeyStore, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no key labelled 'nope'"):
        store.load_image_key("nope")
    with pytest.raises(KeyCustodyError, match="invalid key label"):
        store.load_image_key("../etc/passwd")
    with pytest.raises(KeyCustodyError, match="invalid key label"):
        store.generate_image_key("UPPER", FirmwareKeyType.ED25519)
    store.generate_image_key("fw", FirmwareKeyType.ED25519)
    with pytest.raises(KeyCustodyError, match="cannot decrypt"):
        FileKeyStore(tmp_path / "keys", b"incorrect donkey battery staple").load_image_key("fw")


def test_a_ca_type_key_in_an_image_file_is_refused(store: FileKeyStore,
                                                   tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())  # MCUboot has no P-384 signatures
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "keys" / "odd.image-key.pem").write_bytes(
        pkcs8.encrypt_private_key(key, PASSPHRASE))
    with pytest.raises(KeyTypeMismatchError, match="cannot sign firmware"):
        store.load_image_key("odd")
