"""File key custody: each key an encrypted PKCS#8 PEM file, mode 0600, in one directory.

New keys are written as PBES2-scrypt/AES-256-CBC PKCS#8 (:mod:`iotsec.pki.pkcs8`); keys
written before (PBKDF2, cryptography's ``BestAvailableEncryption``) are still read. CA keys
are ``<label>.key.pem``, firmware signing keys ``<label>.image-key.pem``: one label, one
key, one purpose.

The passphrase comes from ``IOTSEC_CA_PASSPHRASE`` or, for the embedded default, from a
generated 0600 file in the home. Keys are decrypted once per process and kept in memory;
they are never written in clear, never logged and never put in an exception message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from iotsec.custody.base import (
    LABEL,
    CustodyImageSigner,
    CustodySigner,
    RecordingStore,
    check_label,
)
from iotsec.errors import (
    ConflictError,
    EncryptedKeyError,
    FirmwareKeyError,
    InputTooLargeError,
    KeyCustodyError,
    KeyTypeMismatchError,
    NotFoundError,
)
from iotsec.filesystem import write_private_file

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from iotsec.firmware.image_keys import FirmwareKeyType
    from iotsec.pki.keys import KeyType, Signer

# The key code (cryptography, the firmware and PKCS#8 modules) is imported by the methods that
# read or make a key: opening the store is on the path of every command, signing is not.

__all__ = ["MAX_KEY_FILE", "FileKeyStore"]

#: An encrypted PKCS#8 PEM of an RSA-4096 key is about 3.3 KiB; nothing legitimate is larger.
MAX_KEY_FILE = 64 * 1024


class FileKeyStore(RecordingStore):
    """Keys as encrypted PKCS#8 files: ``<label>.key.pem`` (CA) and
    ``<label>.image-key.pem`` (firmware). ``on_use(label, operation)`` is told of every
    signature: ``"sign"`` (certificates, CRLs) and ``"sign-image"`` (firmware images)."""

    def __init__(self, directory: Path, passphrase: bytes,
                 on_use: Callable[[str, str], None] | None = None) -> None:
        if len(passphrase) < 16:
            raise KeyCustodyError("the CA passphrase is too short",
                                  hint="use at least 16 characters in IOTSEC_CA_PASSPHRASE")
        self._dir = directory
        self._passphrase = passphrase
        self.on_use = on_use
        self._cache: dict[str, CustodySigner] = {}
        self._images: dict[str, CustodyImageSigner] = {}

    def __repr__(self) -> str:
        return f"FileKeyStore({str(self._dir)!r})"

    def _path(self, label: str) -> Path:
        return self._dir / f"{check_label(label)}.key.pem"

    def _image_path(self, label: str) -> Path:
        return self._dir / f"{check_label(label)}.image-key.pem"

    def exists(self, label: str) -> bool:
        return self._path(label).exists() or self._image_path(label).exists()

    def _refuse_taken(self, label: str) -> None:
        if self.exists(label):
            raise ConflictError(f"a key labelled {label!r} already exists in {self._dir}",
                                hint="keys are never overwritten; choose another label")

    def generate(self, label: str, key_type: KeyType) -> Signer:
        from iotsec.pki.keys import LocalSigner
        from iotsec.pki.pkcs8 import encrypt_private_key

        self._refuse_taken(label)
        key = key_type.generate()
        write_private_file(self._path(label), encrypt_private_key(key, self._passphrase))
        signer = CustodySigner(label, LocalSigner(key), self._notify)
        self._cache[label] = signer
        return signer

    def adopt(self, label: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> Signer:
        """Keep an existing CA key (an imported issuing CA's) under ``label``, encrypted
        like the keys made here; never overwrites a label."""
        from iotsec.pki.keys import LocalSigner
        from iotsec.pki.pkcs8 import encrypt_private_key

        self._refuse_taken(label)
        write_private_file(self._path(label), encrypt_private_key(key, self._passphrase))
        signer = CustodySigner(label, LocalSigner(key), self._notify)
        self._cache[label] = signer
        return signer

    def _read(self, path: Path, label: str) -> object:
        """The decrypted private key in ``path``."""
        from iotsec.pki.pkcs8 import decrypt_private_key

        try:
            if path.stat().st_size > MAX_KEY_FILE:
                raise KeyCustodyError(f"key file {path} is larger than {MAX_KEY_FILE} bytes",
                                      hint="the file is not an iotsec key; restore it from backup")
            pem = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"no key labelled {label!r} in {self._dir}",
                                hint="check IOTSEC_HOME, or run 'iotsec init'") from None
        try:
            return decrypt_private_key(pem, self._passphrase)
        except (EncryptedKeyError, InputTooLargeError):
            # Deliberately vague about which: a wrong passphrase and a corrupt file look
            # alike, and neither message may echo key material.
            raise KeyCustodyError(
                f"cannot decrypt the key {label!r}",
                hint="check IOTSEC_CA_PASSPHRASE (or the ca-passphrase file in the home)",
            ) from None

    def load(self, label: str) -> Signer:
        cached = self._cache.get(label)
        if cached is not None:
            return cached
        path = self._path(label)
        if not path.exists() and self._image_path(label).exists():
            raise KeyTypeMismatchError(f"key {label!r} is a firmware signing key, not a "
                                       "certificate-signing key",
                                       hint="use a CA key; firmware keys sign only images")
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        from iotsec.pki.keys import LocalSigner

        key = self._read(path, label)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise KeyTypeMismatchError(f"key {label!r} has an unsupported type",
                                       hint="iotsec CA keys are ECDSA or RSA")
        # Every signature is told to on_use (read when it happens: the runtime sets it after
        # opening the store) and becomes a key.use event.
        signer = CustodySigner(label, LocalSigner(key), self._notify)
        self._cache[label] = signer
        return signer

    def generate_image_key(self, label: str, key_type: FirmwareKeyType) -> CustodyImageSigner:
        from iotsec.firmware.image_keys import LocalImageSigner
        from iotsec.pki.pkcs8 import encrypt_private_key

        self._refuse_taken(label)
        key = key_type.generate()
        write_private_file(self._image_path(label), encrypt_private_key(key, self._passphrase))
        signer = CustodyImageSigner(label, LocalImageSigner(key), self._notify)
        self._images[label] = signer
        return signer

    def load_image_key(self, label: str) -> CustodyImageSigner:
        cached = self._images.get(label)
        if cached is not None:
            return cached
        path = self._image_path(label)
        if not path.exists() and self._path(label).exists():
            raise KeyTypeMismatchError(f"key {label!r} is a certificate-signing key, not a "
                                       "firmware signing key",
                                       hint="generate one with 'iotsec firmware keygen "
                                       "--label NAME'")
        from iotsec.firmware.image_keys import FirmwarePrivateKey, LocalImageSigner

        key = self._read(path, label)
        try:
            if not isinstance(key, FirmwarePrivateKey):
                raise FirmwareKeyError("not a firmware key")
            inner = LocalImageSigner(key)
        except FirmwareKeyError:
            raise KeyTypeMismatchError(f"key {label!r} cannot sign firmware images") from None
        signer = CustodyImageSigner(label, inner, self._notify)
        self._images[label] = signer
        return signer

    def image_labels(self) -> list[str]:
        """Labels of the firmware signing keys in the directory."""
        suffix = ".image-key.pem"
        if not self._dir.is_dir():
            return []
        return sorted(p.name[:-len(suffix)] for p in self._dir.iterdir()
                      if p.name.endswith(suffix) and LABEL.fullmatch(p.name[:-len(suffix)]))

    def private_key_path(self, label: str) -> Path:
        """Path of the encrypted key file (for a TLS server that loads it itself)."""
        return self._path(label)
