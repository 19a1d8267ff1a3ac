"""Secrets at rest: AES-256-GCM under a KEK wrapped with a scrypt-derived key."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from iotsec.errors import KeyCustodyError
from iotsec.keys.secretbox import KEK_FILE, SecretBox

PASS = b"correct horse battery staple"


def test_seal_and_open_round_trip(tmp_path: Path) -> None:
    box = SecretBox.load_or_create(tmp_path, PASS)
    sealed = box.seal(b"the secret", b"row|1")
    assert b"the secret" not in sealed
    assert box.open(sealed, b"row|1") == b"the secret"
    assert box.seal(b"the secret", b"row|1") != sealed  # fresh nonce each time
    # Loaded again from the file, it opens what the first instance sealed.
    assert SecretBox.load(tmp_path, PASS).open(sealed, b"row|1") == b"the secret"
    assert SecretBox.load_or_create(tmp_path, PASS).open(sealed, b"row|1") == b"the secret"


def test_kek_file_is_private_and_holds_no_clear_key(tmp_path: Path) -> None:
    SecretBox.load_or_create(tmp_path, PASS)
    path = tmp_path / KEK_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["kdf"] == "scrypt"
    assert set(doc) >= {"salt", "nonce", "kek", "n", "r", "p"}
    assert not [p for p in tmp_path.iterdir() if p.name != KEK_FILE]  # no staging leftovers


def test_ciphertext_bound_to_its_associated_data(tmp_path: Path) -> None:
    box = SecretBox.load_or_create(tmp_path, PASS)
    sealed = box.seal(b"s", b"device_secrets|k1|d1")
    for aad in (b"device_secrets|k1|d2", b"device_secrets|k2|d1", b""):
        with pytest.raises(KeyCustodyError):
            box.open(sealed, aad)


@pytest.mark.parametrize("mangle", [
    lambda b: b[:-1] + bytes([b[-1] ^ 1]),
    lambda b: b[:10],
    lambda b: b"\x02" + b[1:],
    lambda b: b"",
])
def test_tampered_ciphertext_fails_cleanly(tmp_path: Path, mangle: object) -> None:
    box = SecretBox.load_or_create(tmp_path, PASS)
    sealed = box.seal(b"s", b"a")
    assert callable(mangle)
    with pytest.raises(KeyCustodyError):
        box.open(mangle(sealed), b"a")


def test_wrong_passphrase_fails_without_revealing_anything(tmp_path: Path) -> None:
    SecretBox.load_or_create(tmp_path, PASS)
    with pytest.raises(KeyCustodyError) as info:
        SecretBox.load(tmp_path, b"wrong passphrase, same length")
    text = f"{info.value} {info.value.hint}"
    assert "passphrase" in text
    assert PASS.decode() not in text
    assert (tmp_path / KEK_FILE).read_text() not in text


def test_another_kek_cannot_open(tmp_path: Path) -> None:
    sealed = SecretBox.load_or_create(tmp_path / "a", PASS).seal(b"s", b"a")
    with pytest.raises(KeyCustodyError):
        SecretBox.load_or_create(tmp_path / "b", PASS).open(sealed, b"a")


def test_missing_public_oversized_or_corrupt_kek_file(tmp_path: Path) -> None:
    with pytest.raises(KeyCustodyError, match="no key-encryption key"):
        SecretBox.load(tmp_path, PASS)
    SecretBox.load_or_create(tmp_path, PASS)
    path = tmp_path / KEK_FILE
    os.chmod(path, 0o644)
    with pytest.raises(KeyCustodyError, match="readable by other users"):
        SecretBox.load(tmp_path, PASS)
    os.chmod(path, 0o600)
    good = path.read_text()
    for bad in ("not json", "[]", json.dumps({**json.loads(good), "n": 2**30}),
                json.dumps({**json.loads(good), "salt": "!!"}),
                json.dumps({**json.loads(good), "v": 9}), "x" * 10_000):
        path.write_text(bad)
        with pytest.raises(KeyCustodyError):
            SecretBox.load(tmp_path, PASS)


def test_create_does_not_replace_an_existing_kek(tmp_path: Path) -> None:
    first = SecretBox.load_or_create(tmp_path, PASS)
    sealed = first.seal(b"s", b"a")
    before = (tmp_path / KEK_FILE).read_bytes()
    again = SecretBox.load_or_create(tmp_path, PASS)
    assert (tmp_path / KEK_FILE).read_bytes() == before
    assert again.open(sealed, b"a") == b"s"


def test_repr_hides_the_key(tmp_path: Path) -> None:
    box = SecretBox(b"k" * 32)
    assert "k" * 8 not in repr(box)
    with pytest.raises(KeyCustodyError):
        SecretBox(b"short")
