"""File key custody: each key an encrypted PKCS#8 PEM file, mode 0600, in one directory.

The passphrase comes from ``IOTSEC_CA_PASSPHRASE`` or, for the embedded default, from a
generated 0600 file in the home. Keys are decrypted once per process and kept in memory;
they are never written in clear, never logged and never put in an exception message.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from iotsec.errors import ConflictError, KeyCustodyError, NotFoundError
from iotsec.keys.base import KeyType, LocalSigner, Signer

_LABEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
#: An encrypted PKCS#8 PEM of an RSA-4096 key is about 3.3 KiB; nothing legitimate is larger.
MAX_KEY_FILE = 64 * 1024


def _check_label(label: str) -> str:
    if not _LABEL.fullmatch(label):
        raise KeyCustodyError(f"invalid key label {label!r}",
                              hint="labels are lower-case letters, digits, '.', '_' and '-'")
    return label


def write_private_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() and not overwrite:
        raise ConflictError(f"{path} already exists", hint="remove it or choose another path")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class FileKeyStore:
    """Keys as encrypted PKCS#8 files named ``<label>.key.pem``."""

    def __init__(self, directory: Path, passphrase: bytes) -> None:
        if len(passphrase) < 16:
            raise KeyCustodyError("the CA passphrase is too short",
                                  hint="use at least 16 characters in IOTSEC_CA_PASSPHRASE")
        self._dir = directory
        self._passphrase = passphrase
        self._cache: dict[str, LocalSigner] = {}

    def _path(self, label: str) -> Path:
        return self._dir / f"{_check_label(label)}.key.pem"

    def exists(self, label: str) -> bool:
        return self._path(label).exists()

    def generate(self, label: str, key_type: KeyType) -> Signer:
        path = self._path(label)
        if path.exists():
            raise ConflictError(f"a key labelled {label!r} already exists in {self._dir}",
                                hint="keys are never overwritten; choose another label")
        key = key_type.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase),
        )
        write_private_file(path, pem)
        signer = LocalSigner(key)
        self._cache[label] = signer
        return signer

    def load(self, label: str) -> Signer:
        cached = self._cache.get(label)
        if cached is not None:
            return cached
        path = self._path(label)
        try:
            if path.stat().st_size > MAX_KEY_FILE:
                raise KeyCustodyError(f"key file {path} is larger than {MAX_KEY_FILE} bytes",
                                      hint="the file is not an iotsec key; restore it from backup")
            pem = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"no key labelled {label!r} in {self._dir}",
                                hint="check IOTSEC_HOME, or run 'iotsec init'") from None
        try:
            key = serialization.load_pem_private_key(pem, password=self._passphrase)
        except (ValueError, TypeError):
            # Deliberately vague about which: a wrong passphrase and a corrupt file look alike
            # to cryptography, and neither message may echo key material.
            raise KeyCustodyError(
                f"cannot decrypt the key {label!r}",
                hint="check IOTSEC_CA_PASSPHRASE (or the ca-passphrase file in the home)",
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise KeyCustodyError(f"key {label!r} has an unsupported type",
                                  hint="iotsec CA keys are ECDSA or RSA")
        signer = LocalSigner(key)
        self._cache[label] = signer
        return signer

    def private_key_path(self, label: str) -> Path:
        """Path of the encrypted key file (for a TLS server that loads it itself)."""
        return self._path(label)
