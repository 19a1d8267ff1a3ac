"""The KEK files' key derivation follows the home's secret (ADR 0030): HKDF for a secret
iotsec generated, scrypt for anything a person may have chosen; files from before keep
opening as they were sealed."""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from iotsec.config import Settings
from iotsec.custody import file_keks
from iotsec.custody.file_keks import FileKekStore
from iotsec.custody.home import read_passphrase
from iotsec.custody.home_secret import (
    GENERATED_PREFIX,
    is_generated_secret,
    new_generated_secret,
)
from iotsec.errors import KekUnlockError
from iotsec.protect.kek import FileKek

HUMAN = b"correct horse battery staple"
#: What ``iotsec init --store-passphrase`` wrote before the prefix: 256 random bits, but
#: nothing in the text proves it, so it is treated as a passphrase.
OLD_GENERATED = secrets.token_urlsafe(32).encode("ascii")


def _doc(store: FileKekStore, key_id: str) -> dict[str, object]:
    doc = json.loads((store.directory / f"{key_id}.kek").read_bytes())
    assert isinstance(doc, dict)
    return doc


def test_generated_secret_form() -> None:
    secret = new_generated_secret()
    assert secret.startswith(GENERATED_PREFIX) and len(secret) == len(GENERATED_PREFIX) + 43
    assert is_generated_secret(secret)
    assert secret != new_generated_secret()
    for other in (HUMAN, OLD_GENERATED, secret + b"x", secret[:-1], secret + b"\n",
                  GENERATED_PREFIX + b"a b" * 14 + b"c", b"x" + secret):
        assert not is_generated_secret(other)


def test_a_new_home_file_holds_a_generated_secret(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=None)
    settings.resolved_home.mkdir()
    created = read_passphrase(settings, create=True)
    assert is_generated_secret(created)
    assert read_passphrase(settings) == created
    assert settings.passphrase_file.read_bytes() == created + b"\n"


def test_generated_secret_seals_with_hkdf(tmp_path: Path) -> None:
    secret = new_generated_secret()
    store = FileKekStore(tmp_path / "kek", secret)
    kek = store.active_or_create()
    doc = _doc(store, kek.key_id)
    assert doc["kdf"] == "hkdf-sha256" and "n" not in doc
    wrapped = kek.wrap(os.urandom(32), b"aad")
    again = FileKekStore(tmp_path / "kek", secret)
    assert again.active().unwrap(wrapped, b"aad") == kek.unwrap(wrapped, b"aad")
    # Another generated secret does not open it.
    with pytest.raises(KekUnlockError, match="wrong passphrase"):
        FileKekStore(tmp_path / "kek", new_generated_secret()).active()


@pytest.mark.parametrize("passphrase", [HUMAN, OLD_GENERATED], ids=["human", "old-generated"])
def test_any_other_secret_stays_memory_hard(tmp_path: Path, passphrase: bytes) -> None:
    store = FileKekStore(tmp_path / "kek", passphrase)
    kek = store.active_or_create()
    doc = _doc(store, kek.key_id)
    assert (doc["kdf"], doc["n"], doc["r"], doc["p"]) == ("scrypt", 2**15, 8, 1)
    wrapped = kek.wrap(os.urandom(32), b"aad")
    assert FileKekStore(tmp_path / "kek", passphrase).active().unwrap(wrapped, b"aad") \
        == kek.unwrap(wrapped, b"aad")


def test_hkdf_file_refused_under_a_passphrase(tmp_path: Path) -> None:
    """Fail closed: a file claiming the fast derivation is refused unless the secret is a
    generated one, even before any key is derived."""
    store = FileKekStore(tmp_path / "kek", new_generated_secret())
    kek = store.active_or_create()
    with pytest.raises(KekUnlockError, match=r"wrong passphrase \(the file is sealed for"):
        FileKekStore(tmp_path / "kek", HUMAN).kek(kek.key_id)


def test_hkdf_file_altered_is_refused(tmp_path: Path) -> None:
    secret = new_generated_secret()
    store = FileKekStore(tmp_path / "kek", secret)
    kek = store.active_or_create()
    path = store.directory / f"{kek.key_id}.kek"
    doc = json.loads(path.read_bytes())
    sealed = bytearray(base64.b64decode(doc["kek"]))
    sealed[0] ^= 1
    doc["kek"] = base64.b64encode(bytes(sealed)).decode()
    path.write_text(json.dumps(doc))
    with pytest.raises(KekUnlockError, match="wrong passphrase, or the file was altered"):
        FileKekStore(tmp_path / "kek", secret).kek(kek.key_id)
    doc["kdf"] = "pbkdf2"
    path.write_text(json.dumps(doc))
    with pytest.raises(KekUnlockError, match="not a valid"):
        FileKekStore(tmp_path / "kek", secret).kek(kek.key_id)


@pytest.mark.parametrize("passphrase", [new_generated_secret(), OLD_GENERATED, HUMAN],
                         ids=["generated", "old-generated", "human"])
def test_files_sealed_before_keep_opening(tmp_path: Path, passphrase: bytes) -> None:
    """A KEK file exactly as the previous release wrote it (scrypt, whatever the secret)
    opens unchanged, and is not rewritten."""
    key_id, key = "kek-0123456789abcdef", os.urandom(32)
    salt, nonce = os.urandom(16), os.urandom(12)
    wrapping = Scrypt(salt=salt, length=32, n=2**4, r=8, p=1).derive(passphrase)
    sealed = AESGCM(wrapping).encrypt(nonce, key, b"iotsec|data.kek|v1|" + key_id.encode())
    doc = {"v": 1, "id": key_id, "kdf": "scrypt", "n": 2**4, "r": 8, "p": 1,
           "salt": base64.b64encode(salt).decode(), "alg": "A256GCM",
           "nonce": base64.b64encode(nonce).decode(), "kek": base64.b64encode(sealed).decode()}
    directory = tmp_path / "kek"
    directory.mkdir(mode=0o700)
    path = directory / f"{key_id}.kek"
    text = (json.dumps(doc, sort_keys=True) + "\n").encode()
    path.write_bytes(text)
    path.chmod(0o600)
    (directory / file_keks.ACTIVE_FILE).write_text(key_id + "\n")
    (directory / file_keks.ACTIVE_FILE).chmod(0o600)
    store = FileKekStore(directory, passphrase)
    dek = os.urandom(32)
    # The unlocked KEK is the key that was sealed: what it wraps, the raw key unwraps.
    assert FileKek(key_id, key).unwrap(store.active().wrap(dek, b"x"), b"x") == dek
    assert path.read_bytes() == text
