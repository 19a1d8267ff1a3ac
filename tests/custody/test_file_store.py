"""File key custody: encrypted PKCS#8 at mode 0600, signatures that verify, precise refusals."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from iotsec.custody.file_keys import MAX_KEY_FILE, FileKeyStore
from iotsec.errors import ConflictError, InvalidInputError, KeyCustodyError, NotFoundError
from iotsec.filesystem import write_private_file
from iotsec.pki.keys import KeyType, LocalSigner, Signer

PASSPHRASE = b"correct horse battery staple"
WRONG = b"incorrect donkey battery staple"
MESSAGE = b"tbs bytes to be signed"


def _verify(signer: Signer, public_key: object, signature: bytes, data: bytes) -> None:
    """Verify with the algorithm X.509 names for the key type (raises InvalidSignature)."""
    if signer.key_type is KeyType.ECDSA_P256:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert isinstance(public_key.curve, ec.SECP256R1)
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    elif signer.key_type is KeyType.ECDSA_P384:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert isinstance(public_key.curve, ec.SECP384R1)
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA384()))
    else:
        assert isinstance(public_key, rsa.RSAPublicKey)
        assert public_key.key_size == 3072
        public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())


@pytest.fixture
def store(tmp_path: Path) -> FileKeyStore:
    return FileKeyStore(tmp_path / "keys", PASSPHRASE)


@pytest.mark.parametrize("key_type", list(KeyType), ids=lambda k: k.value)
def test_generate_and_load_round_trip(
    key_type: KeyType, tmp_path: Path, store: FileKeyStore, openssl: str
) -> None:
    label = f"ca-{key_type.value}"
    assert not store.exists(label)
    generated = store.generate(label, key_type)
    assert store.exists(label)
    assert generated.key_type is key_type

    path = store.private_key_path(label)
    assert path == tmp_path / "keys" / f"{label}.key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    assert b"-----BEGIN PRIVATE KEY-----" not in pem
    assert b"EC PRIVATE KEY" not in pem
    assert b"RSA PRIVATE KEY" not in pem
    # The file decrypts with the passphrase (and only with it) to the same key.
    key = serialization.load_pem_private_key(pem, password=PASSPHRASE)
    with pytest.raises((ValueError, TypeError)):
        serialization.load_pem_private_key(pem, password=None)

    # A fresh store (no cache) loads it from disk.
    loaded = FileKeyStore(tmp_path / "keys", PASSPHRASE).load(label)
    assert loaded.key_type is key_type
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert loaded.public_key().public_bytes(*spki) == generated.public_key().public_bytes(*spki)
    assert key.public_key().public_bytes(*spki) == generated.public_key().public_bytes(*spki)

    signature = loaded.sign(MESSAGE)
    _verify(loaded, generated.public_key(), signature, MESSAGE)
    _verify(generated, loaded.public_key(), generated.sign(MESSAGE), MESSAGE)
    with pytest.raises(InvalidSignature):
        _verify(loaded, generated.public_key(), signature, MESSAGE + b"!")

    env = {**os.environ, "IOTSEC_TEST_PASS": PASSPHRASE.decode()}
    ok = subprocess.run([openssl, "pkey", "-in", str(path), "-passin", "env:IOTSEC_TEST_PASS",
                         "-noout"], capture_output=True, env=env, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    env["IOTSEC_TEST_PASS"] = WRONG.decode()
    bad = subprocess.run([openssl, "pkey", "-in", str(path), "-passin", "env:IOTSEC_TEST_PASS",
                          "-noout"], capture_output=True, env=env, timeout=60, check=False)
    assert bad.returncode != 0


def test_key_directory_is_private(tmp_path: Path, store: FileKeyStore) -> None:
    store.generate("root", KeyType.ECDSA_P256)
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) & 0o077 == 0
    # No temporary file is left behind.
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["root.key.pem"]


def test_load_is_cached_and_returns_the_same_signer(store: FileKeyStore) -> None:
    first = store.generate("root", KeyType.ECDSA_P256)
    assert store.load("root") is first


def test_wrong_passphrase(tmp_path: Path, store: FileKeyStore) -> None:
    store.generate("root", KeyType.ECDSA_P256)
    pem = store.private_key_path("root").read_bytes()
    other = FileKeyStore(tmp_path / "keys", WRONG)
    with pytest.raises(KeyCustodyError) as info:
        other.load("root")
    err = info.value
    for text in (str(err), err.hint, repr(err), str(err.args)):
        assert WRONG.decode() not in text
        assert PASSPHRASE.decode() not in text
        assert "-----BEGIN" not in text
        assert "PRIVATE KEY" not in text
        assert pem.decode().splitlines()[1] not in text
    assert "root" in str(err)
    # The foreign exception is not chained as the visible cause.
    assert err.__cause__ is None
    assert err.__suppress_context__


def test_corrupt_key_file(tmp_path: Path, store: FileKeyStore) -> None:
    store.generate("root", KeyType.ECDSA_P256)
    path = store.private_key_path("root")
    pem = path.read_bytes()
    path.write_bytes(pem[:200])
    with pytest.raises(KeyCustodyError, match="cannot decrypt"):
        FileKeyStore(tmp_path / "keys", PASSPHRASE).load("root")


def test_oversized_key_file(tmp_path: Path, store: FileKeyStore) -> None:
    path = store.private_key_path("huge")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"A" * (MAX_KEY_FILE + 1))
    with pytest.raises(KeyCustodyError, match="larger than"):
        store.load("huge")


def test_unencrypted_key_file_is_refused(store: FileKeyStore) -> None:
    # A clear-text key dropped into the directory is not silently used.
    path = store.private_key_path("clear")
    path.parent.mkdir(parents=True)
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyCustodyError):
        store.load("clear")


@pytest.mark.parametrize("passphrase", [b"", b"hunter2-secret", b"x" * 15])
def test_short_passphrase_is_refused(tmp_path: Path, passphrase: bytes) -> None:
    with pytest.raises(KeyCustodyError, match="too short") as info:
        FileKeyStore(tmp_path, passphrase)
    if passphrase:
        assert passphrase.decode() not in str(info.value)


def test_sixteen_byte_passphrase_is_enough(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path, b"x" * 16)
    signer = store.generate("k", KeyType.ECDSA_P256)
    assert FileKeyStore(tmp_path, b"x" * 16).load("k").public_key() == signer.public_key()


def test_generate_never_overwrites(store: FileKeyStore) -> None:
    store.generate("root", KeyType.ECDSA_P256)
    before = store.private_key_path("root").read_bytes()
    with pytest.raises(ConflictError, match="already exists"):
        store.generate("root", KeyType.ECDSA_P384)
    # Also through a store that has not cached it.
    fresh = FileKeyStore(store.private_key_path("root").parent, PASSPHRASE)
    with pytest.raises(ConflictError):
        fresh.generate("root", KeyType.ECDSA_P256)
    assert store.private_key_path("root").read_bytes() == before


@pytest.mark.parametrize(
    "label",
    ["", "Root", "-root", ".root", "_root", "../root", "a/b", "a b", "a" * 65, "ca\u00e9",
     "ca:1", "/etc/passwd"],
)
def test_invalid_labels(store: FileKeyStore, label: str) -> None:
    for call in (store.exists, store.load, lambda lbl: store.generate(lbl, KeyType.ECDSA_P256)):
        with pytest.raises(KeyCustodyError, match="invalid key label"):
            call(label)


def test_label_with_trailing_newline_is_invalid(store: FileKeyStore) -> None:
    with pytest.raises(KeyCustodyError, match="invalid key label"):
        store.exists("root\n")


@pytest.mark.parametrize("label", ["a", "root-ca", "issuing.2026_01", "0" * 64])
def test_valid_labels(store: FileKeyStore, label: str) -> None:
    assert store.exists(label) is False


def test_missing_label(store: FileKeyStore) -> None:
    with pytest.raises(NotFoundError, match="no key labelled 'absent'"):
        store.load("absent")


def test_write_private_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret.pem"
    write_private_file(path, b"one")
    assert path.read_bytes() == b"one"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ConflictError):
        write_private_file(path, b"two")
    assert path.read_bytes() == b"one"
    write_private_file(path, b"three", overwrite=True)
    assert path.read_bytes() == b"three"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_private_file_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private_file(tmp_path / "k.pem", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600


# --- key types and local signers --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("ecdsa-p256", KeyType.ECDSA_P256), (" ECDSA-P384 ", KeyType.ECDSA_P384),
     ("rsa-3072", KeyType.RSA_3072)],
)
def test_key_type_parse(text: str, expected: KeyType) -> None:
    assert KeyType.parse(text) is expected


@pytest.mark.parametrize("text", ["", "p256", "ecdsa-p521", "rsa-2048", "ed25519"])
def test_key_type_parse_refuses(text: str) -> None:
    with pytest.raises(InvalidInputError, match="unknown key type") as info:
        KeyType.parse(text)
    assert "ecdsa-p256" in info.value.hint


def test_key_type_of() -> None:
    assert KeyType.of(ec.generate_private_key(ec.SECP256R1())) is KeyType.ECDSA_P256
    assert KeyType.of(ec.generate_private_key(ec.SECP384R1()).public_key()) is KeyType.ECDSA_P384
    for weak in (ec.generate_private_key(ec.SECP521R1()),
                 rsa.generate_private_key(public_exponent=65537, key_size=2048)):
        with pytest.raises(InvalidInputError, match="unsupported key"):
            KeyType.of(weak)


def test_local_signer_ecdsa_uses_the_type_hash() -> None:
    for key_type in (KeyType.ECDSA_P256, KeyType.ECDSA_P384):
        signer = LocalSigner(key_type.generate())
        assert isinstance(signer, Signer)
        sig = signer.sign(MESSAGE)
        _verify(signer, signer.public_key(), sig, MESSAGE)
        # The wrong hash does not verify: the signature really is over the named one.
        wrong = hashes.SHA384() if key_type is KeyType.ECDSA_P256 else hashes.SHA256()
        with pytest.raises(InvalidSignature):
            signer.public_key().verify(sig, MESSAGE, ec.ECDSA(wrong))
        assert repr(signer) == f"LocalSigner({key_type.value})"
