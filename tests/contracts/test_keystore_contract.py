"""The key-store contract: every :class:`KeyStore` backend (encrypted files, a PKCS#11 token)
passes this one suite.

Each test runs once per backend (the ``backend`` fixture). What a caller may rely on:

- ``generate`` / ``load`` / ``exists`` for every CA key type, and ``generate_image_key`` /
  ``load_image_key`` for every firmware key type; a key loaded by a fresh store (a new
  process) is the one generated;
- labels are one namespace across CA keys and firmware keys; ``generate`` never overwrites
  (:class:`ConflictError`), a missing label is a :class:`NotFoundError`, and a label names
  one purpose: ``load`` refuses a firmware key and ``load_image_key`` a CA key
  (:class:`KeyTypeMismatchError`);
- every signature verifies with the public key under the algorithm the key type names
  (checked with ``cryptography``, independently of iotsec), and ``on_use`` is told of each
  one (``"sign"`` / ``"sign-image"``), also for signers handed out before it was set (the
  runtime sets it after opening the store);
- invalid labels are refused before anything is touched (:class:`KeyCustodyError`);
- no ``repr`` and no error message shows a secret (passphrase, PIN).

Where the backends really differ, :func:`test_where_the_backends_differ` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from iotsec.custody.base import SIGN, SIGN_IMAGE, KeyStore
from iotsec.custody.file_keys import FileKeyStore
from iotsec.custody.pkcs11 import Pkcs11KeyStore
from iotsec.custody.pkcs11_kek import Pkcs11KekStore
from iotsec.custody.pkcs11_token import Pkcs11Token, connect

# --- the key-custody package: the only imports of the backends ----
from iotsec.errors import (
    ConflictError,
    IotsecError,
    KeyCustodyError,
    KeyTypeMismatchError,
    NotFoundError,
    Pkcs11KeyNotFoundError,
)
from iotsec.firmware.image_keys import FirmwareKeyType, ImageSigner
from iotsec.pki.keys import KeyType, Signer

# -------------------------------------------------------------------------------------------

BACKENDS = ("file", "pkcs11")
PASSPHRASE = "contract passphrase, 32 bytes.."
DATA = b"to-be-signed bytes of a certificate"
DIGEST = bytes(range(32))  # an image digest is the 32-byte SHA-256 of the image
INVALID_LABELS = ("", "Root-CA", "-lead", ".hidden", "a b", "a/b", "../a", "a\n", "é",
                  "x" * 65, "ca\x00")
Uses = list[tuple[str, str]]


class AuditedKeyStore(KeyStore, Protocol):
    """A key store whose ``on_use(label, operation)`` the runtime sets after opening it."""

    on_use: Callable[[str, str], None] | None


@dataclass
class Backend:
    """One key store under test, how to open it again (a new process) and its secrets."""

    name: str
    store: AuditedKeyStore
    reopen: Callable[[], AuditedKeyStore]
    secrets: tuple[str, ...]
    uses: Uses = field(default_factory=list)

    def record(self, label: str, operation: str) -> None:
        self.uses.append((label, operation))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend, empty, with ``on_use`` recording into ``uses``."""
    if request.param == "file":
        directory = tmp_path / "keys"

        def reopen_file() -> AuditedKeyStore:
            return FileKeyStore(directory, PASSPHRASE.encode())

        file_backend = Backend("file", reopen_file(), reopen_file, (PASSPHRASE,))
        file_backend.store.on_use = file_backend.record
        yield file_backend
        return
    # Requested here, not as a parameter: only the PKCS#11 case needs (or skips for) SoftHSM2.
    hsm = request.getfixturevalue("hsm")
    tokens: list[Pkcs11Token] = []

    def reopen_token() -> AuditedKeyStore:
        tokens.append(connect(hsm.config()))
        return Pkcs11KeyStore(tokens[-1])

    try:
        token_backend = Backend("pkcs11", reopen_token(), reopen_token, (hsm.pin, hsm.so_pin))
        token_backend.store.on_use = token_backend.record
        yield token_backend
    finally:
        for token in tokens:
            token.close()


def _verify(key_type: KeyType, public: Any, signature: bytes, data: bytes) -> None:
    """The X.509 signature algorithm of each CA key type (raises InvalidSignature)."""
    if key_type is KeyType.RSA_3072:
        assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 3072
        public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        return
    assert isinstance(public, ec.EllipticCurvePublicKey)
    if key_type is KeyType.ECDSA_P256:
        assert isinstance(public.curve, ec.SECP256R1)
        public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    else:
        assert isinstance(public.curve, ec.SECP384R1)
        public.verify(signature, data, ec.ECDSA(hashes.SHA384()))


def _verify_image(kind: FirmwareKeyType, public: Any, signature: bytes, digest: bytes) -> None:
    """MCUboot's signature over the image digest for each firmware key type."""
    prehashed = utils.Prehashed(hashes.SHA256())
    if kind is FirmwareKeyType.ED25519:
        assert isinstance(public, ed25519.Ed25519PublicKey)
        public.verify(signature, digest)  # pure Ed25519 with the digest as the message
    elif kind is FirmwareKeyType.ECDSA_P256:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert isinstance(public.curve, ec.SECP256R1)
        public.verify(signature, digest, ec.ECDSA(prehashed))
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        assert public.key_size == (2048 if kind is FirmwareKeyType.RSA_2048 else 3072)
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        public.verify(signature, digest, pss, prehashed)


def _same_public(a: Signer | ImageSigner, b: Signer | ImageSigner) -> bool:
    def der(signer: Signer | ImageSigner) -> bytes:
        return signer.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return der(a) == der(b)


# --- generate, load, exists ---------------------------------------------------------------


@pytest.mark.parametrize("key_type", list(KeyType), ids=lambda k: k.value)
def test_ca_keys_generate_load_exist_and_sign(backend: Backend, key_type: KeyType) -> None:
    store, label = backend.store, f"ca-{key_type.value}"
    assert not store.exists(label)
    signer = store.generate(label, key_type)
    assert store.exists(label) and signer.key_type is key_type

    signature = signer.sign(DATA)
    _verify(key_type, signer.public_key(), signature, DATA)
    with pytest.raises(InvalidSignature):  # the check above can fail
        _verify(key_type, signer.public_key(), signature, DATA + b"!")

    # A fresh store (another process) finds the same key, and it signs.
    again = backend.reopen()
    assert again.exists(label)
    loaded = again.load(label)
    assert loaded.key_type is key_type and _same_public(loaded, signer)
    _verify(key_type, signer.public_key(), loaded.sign(DATA), DATA)


@pytest.mark.parametrize("kind", list(FirmwareKeyType), ids=lambda k: k.value)
def test_image_keys_generate_load_exist_and_sign(backend: Backend,
                                                 kind: FirmwareKeyType) -> None:
    store, label = backend.store, f"fw-{kind.value}"
    assert not store.exists(label)
    signer = store.generate_image_key(label, kind)
    assert store.exists(label) and signer.key_type is kind

    signature = signer.sign_digest(DIGEST)
    _verify_image(kind, signer.public_key(), signature, DIGEST)
    with pytest.raises(InvalidSignature):
        _verify_image(kind, signer.public_key(), signature, bytes(32))

    again = backend.reopen()
    assert again.exists(label)
    loaded = again.load_image_key(label)
    assert loaded.key_type is kind and _same_public(loaded, signer)
    _verify_image(kind, signer.public_key(), loaded.sign_digest(DIGEST), DIGEST)


# --- one label, one key, one purpose ------------------------------------------------------


def test_generate_never_overwrites_a_label_of_either_purpose(backend: Backend) -> None:
    store = backend.store
    ca = store.generate("ca", KeyType.ECDSA_P256)
    fw = store.generate_image_key("fw", FirmwareKeyType.ED25519)
    for attempt in (lambda: store.generate("ca", KeyType.ECDSA_P384),
                    lambda: store.generate("fw", KeyType.ECDSA_P256),
                    lambda: store.generate_image_key("ca", FirmwareKeyType.ECDSA_P256),
                    lambda: store.generate_image_key("fw", FirmwareKeyType.ED25519)):
        with pytest.raises(ConflictError, match="already exists"):
            attempt()
    # The keys are the ones first generated, and still sign (through a fresh store too).
    again = backend.reopen()
    for store_ in (store, again):
        assert store_.load("ca").key_type is KeyType.ECDSA_P256
        _verify(KeyType.ECDSA_P256, ca.public_key(), store_.load("ca").sign(DATA), DATA)
        image = store_.load_image_key("fw")
        _verify_image(FirmwareKeyType.ED25519, fw.public_key(), image.sign_digest(DIGEST),
                      DIGEST)


def test_a_missing_label_is_not_found(backend: Backend) -> None:
    store = backend.store
    assert not store.exists("absent")
    with pytest.raises(NotFoundError, match="'absent'"):
        store.load("absent")
    with pytest.raises(NotFoundError, match="'absent'"):
        store.load_image_key("absent")
    assert not store.exists("absent")  # looking did not create it


def test_a_label_names_one_purpose(backend: Backend) -> None:
    backend.store.generate("ca", KeyType.ECDSA_P256)
    backend.store.generate_image_key("fw", FirmwareKeyType.ECDSA_P256)
    # Also through a fresh store, which has nothing cached and must look at the key itself.
    for store in (backend.store, backend.reopen()):
        with pytest.raises(KeyTypeMismatchError, match="'fw'"):
            store.load("fw")
        with pytest.raises(KeyTypeMismatchError, match="'ca'"):
            store.load_image_key("ca")
        assert store.exists("ca") and store.exists("fw")


# --- the audit trail ----------------------------------------------------------------------


def test_on_use_is_told_of_every_signature(backend: Backend) -> None:
    store = backend.store
    ca = store.generate("ca", KeyType.ECDSA_P384)
    fw = store.generate_image_key("fw", FirmwareKeyType.ECDSA_P256)
    assert backend.uses == []  # generating is not a use
    ca.sign(DATA)
    fw.sign_digest(DIGEST)
    store.load("ca").sign(DATA)
    store.load_image_key("fw").sign_digest(DIGEST)
    assert backend.uses == [("ca", SIGN), ("fw", SIGN_IMAGE), ("ca", SIGN), ("fw", SIGN_IMAGE)]


def test_on_use_set_after_the_signers_were_handed_out_is_told(backend: Backend) -> None:
    store = backend.reopen()  # opened without on_use, as the runtime opens it
    ca = store.generate("ca", KeyType.ECDSA_P256)
    fw = store.generate_image_key("fw", FirmwareKeyType.ED25519)
    loaded = store.load("ca")
    ca.sign(DATA)  # nobody listens yet: nothing to tell, nothing fails
    uses: Uses = []
    store.on_use = lambda label, operation: uses.append((label, operation))
    ca.sign(DATA)
    loaded.sign(DATA)
    fw.sign_digest(DIGEST)
    assert uses == [("ca", SIGN), ("ca", SIGN), ("fw", SIGN_IMAGE)]


# --- refusals and secrets -----------------------------------------------------------------


@pytest.mark.parametrize("label", INVALID_LABELS, ids=repr)
def test_invalid_labels_are_refused(backend: Backend, label: str) -> None:
    store = backend.store
    for call in (lambda: store.exists(label), lambda: store.load(label),
                 lambda: store.load_image_key(label),
                 lambda: store.generate(label, KeyType.ECDSA_P256),
                 lambda: store.generate_image_key(label, FirmwareKeyType.ED25519)):
        with pytest.raises(KeyCustodyError, match="invalid key label"):
            call()


def _refusal(call: Callable[[], object]) -> IotsecError:
    with pytest.raises(IotsecError) as info:
        call()
    return info.value


def test_no_repr_or_error_shows_a_secret(backend: Backend) -> None:
    store = backend.store
    ca = store.generate("ca", KeyType.RSA_3072)
    fw = store.generate_image_key("fw", FirmwareKeyType.RSA_2048)
    shown = [repr(store), repr(backend.reopen()), repr(ca), repr(store.load("ca")), repr(fw),
             repr(store.load_image_key("fw"))]
    for call in (lambda: store.generate("ca", KeyType.RSA_3072), lambda: store.load("fw"),
                 lambda: store.load_image_key("ca"), lambda: store.load("absent")):
        refused = _refusal(call)
        shown.append(f"{refused} | {refused.hint}")
    for text in shown:
        for secret in backend.secrets:
            assert secret not in text, text
        assert "PRIVATE KEY" not in text, text
    # The signers name their key, so a log line says which key signed.
    assert "'ca'" in repr(ca) and "'fw'" in repr(fw)


# --- where the backends differ ------------------------------------------------------------


def test_where_the_backends_differ(backend: Backend) -> None:
    """What the contract leaves to each backend, stated so a change is noticed."""
    store = backend.store
    store.generate("ca", KeyType.ECDSA_P256)
    if backend.name == "file":
        # Keys are encrypted PKCS#8 files the operator can back up; a missing label is a
        # plain NotFoundError (no token to blame).
        assert isinstance(store, FileKeyStore)
        assert store.private_key_path("ca").read_bytes().startswith(
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        with pytest.raises(NotFoundError) as missing:
            store.load("absent")
        assert not isinstance(missing.value, KeyCustodyError)
    else:
        # Keys never leave the token; a missing label is also a PKCS#11 error (status 404),
        # and the token's labels include its key-encryption keys: generate refuses a KEK's
        # label, while exists() speaks of signing keys only.
        assert isinstance(store, Pkcs11KeyStore)
        (key,) = [k for k in store.list() if k.label == "ca"]
        assert (key.extractable, key.sensitive) == (False, True)
        with pytest.raises(Pkcs11KeyNotFoundError) as missing_key:
            store.load("absent")
        assert isinstance(missing_key.value, NotFoundError)
        assert missing_key.value.status == 404

        kek = Pkcs11KekStore(store.token).generate()
        assert not store.exists(kek.label)
        with pytest.raises(ConflictError):
            store.generate(kek.label, KeyType.ECDSA_P256)
        with pytest.raises(KeyTypeMismatchError, match="secret"):
            store.load(kek.label)
