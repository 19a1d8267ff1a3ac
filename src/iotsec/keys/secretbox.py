"""Secrets at rest: AES-256-GCM under a key-encryption key (KEK) kept in the key directory.

Some secrets must be recoverable by the server (a legacy device's HS256 secret has to be
used to check its tokens), so they cannot be hashed; they are encrypted instead. The KEK is
32 random bytes in ``<keys_dir>/secretbox.kek`` (mode 0600), itself wrapped with AES-256-GCM
under a key derived with scrypt from the CA passphrase and a random salt. Stealing the
database alone, or the key directory alone, reveals no secret.

Every ciphertext is bound to where it is stored by its associated data (e.g.
``b"device_secrets|<kid>|<device_id>"``): a ciphertext copied to another row does not
decrypt. Failures never say more than which object could not be opened.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from iotsec.errors import InvalidInputError, KeyCustodyError
from iotsec.keys.file import write_private_file

KEK_FILE = "secretbox.kek"
#: A wrapped KEK file is about 250 bytes; nothing legitimate is larger.
MAX_KEK_FILE = 4096
#: Largest plaintext sealed (secrets are small; this is a guard, not a format limit).
MAX_PLAINTEXT = 64 * 1024

_VERSION = 1
_NONCE = 12
_TAG = 16
_KEK_AAD = b"iotsec|secretbox.kek|v1"
# scrypt cost for wrapping the KEK: about 32 MiB and a few tens of milliseconds, paid once
# per process. The parameters are stored in the file, so they can be raised later; a file
# asking for more than the bound is refused rather than allowed to exhaust memory.
_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1
_MAX_SCRYPT_N = 2**20


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    return base64.b64decode(text, validate=True)


def _derive(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


class SecretBox:
    """Seal and open small secrets with AES-256-GCM under one 32-byte KEK."""

    __slots__ = ("_aead",)

    def __init__(self, kek: bytes) -> None:
        if len(kek) != 32:
            raise KeyCustodyError("the key-encryption key must be 32 bytes")
        self._aead = AESGCM(kek)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt ``plaintext`` bound to ``aad``: version byte, 96-bit nonce, ciphertext+tag."""
        if len(plaintext) > MAX_PLAINTEXT:
            raise InvalidInputError(f"a sealed secret has at most {MAX_PLAINTEXT} bytes")
        nonce = secrets.token_bytes(_NONCE)
        return bytes([_VERSION]) + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, ciphertext: bytes, aad: bytes) -> bytes:
        """Decrypt what :meth:`seal` produced with the same ``aad``, or raise
        :class:`KeyCustodyError` (tampered, moved to another row, or another KEK)."""
        if (len(ciphertext) < 1 + _NONCE + _TAG
                or len(ciphertext) > 1 + _NONCE + MAX_PLAINTEXT + _TAG
                or ciphertext[0] != _VERSION):
            raise KeyCustodyError("a sealed secret is malformed",
                                  hint="the stored value was altered; create a new secret")
        nonce, body = ciphertext[1:1 + _NONCE], ciphertext[1 + _NONCE:]
        try:
            return self._aead.decrypt(nonce, body, aad)
        except InvalidTag:
            raise KeyCustodyError(
                "a sealed secret cannot be decrypted: it was altered, moved to another "
                "record, or sealed under another key-encryption key",
                hint="create a new secret for the device") from None

    # --- the wrapped KEK file --------------------------------------------------------------

    @classmethod
    def load(cls, directory: Path, passphrase: bytes) -> SecretBox:
        """Unwrap the KEK in ``directory``; :class:`KeyCustodyError` if it is missing, not
        private, corrupt, or the passphrase is wrong."""
        path = directory / KEK_FILE
        try:
            info = path.stat()
            if info.st_mode & 0o077:
                raise KeyCustodyError(f"{path} is readable by other users",
                                      hint=f"run 'chmod 600 {path}'")
            if info.st_size > MAX_KEK_FILE:
                raise KeyCustodyError(f"{path} is larger than {MAX_KEK_FILE} bytes",
                                      hint="the file is not an iotsec KEK; restore it from backup")
            with path.open("rb") as fh:
                data = fh.read(MAX_KEK_FILE + 1)
        except FileNotFoundError:
            raise KeyCustodyError(f"no key-encryption key in {directory}",
                                  hint="it is created with the first stored secret; restore "
                                  "it from backup if secrets exist") from None
        return cls(_unwrap(data, passphrase, path))

    @classmethod
    def load_or_create(cls, directory: Path, passphrase: bytes) -> SecretBox:
        """Load the KEK, creating it first if the directory has none yet."""
        path = directory / KEK_FILE
        if not path.exists():
            kek = secrets.token_bytes(32)
            if _publish(path, _wrap(kek, passphrase)):
                return cls(kek)
            # Another process created it first: use theirs, so nothing is sealed under a KEK
            # that is about to disappear.
        return cls.load(directory, passphrase)


def _wrap(kek: bytes, passphrase: bytes) -> bytes:
    salt = secrets.token_bytes(16)
    nonce = secrets.token_bytes(_NONCE)
    wrapping = _derive(passphrase, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    sealed = AESGCM(wrapping).encrypt(nonce, kek, _KEK_AAD)
    doc = {"v": _VERSION, "kdf": "scrypt", "n": _SCRYPT_N, "r": _SCRYPT_R, "p": _SCRYPT_P,
           "salt": _b64(salt), "alg": "A256GCM", "nonce": _b64(nonce), "kek": _b64(sealed)}
    return (json.dumps(doc, sort_keys=True) + "\n").encode("ascii")


def _unwrap(data: bytes, passphrase: bytes, path: Path) -> bytes:
    corrupt = KeyCustodyError(f"{path} is not a valid key-encryption key file",
                              hint="restore it from backup")
    if len(data) > MAX_KEK_FILE:
        raise corrupt
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("v") != _VERSION or doc.get("kdf") != "scrypt":
            raise corrupt
        n, r, p = doc["n"], doc["r"], doc["p"]
        if not (isinstance(n, int) and isinstance(r, int) and isinstance(p, int)
                and 2 <= n <= _MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= r <= 32
                and 1 <= p <= 16):
            raise corrupt
        salt, nonce, sealed = _unb64(doc["salt"]), _unb64(doc["nonce"]), _unb64(doc["kek"])
    except (ValueError, KeyError, TypeError):
        raise corrupt from None
    if len(nonce) != _NONCE or len(sealed) != 32 + _TAG or not 16 <= len(salt) <= 64:
        raise corrupt
    try:
        return AESGCM(_derive(passphrase, salt, n, r, p)).decrypt(nonce, sealed, _KEK_AAD)
    except InvalidTag:
        # A wrong passphrase and an altered file look alike; neither message echoes them.
        raise KeyCustodyError(
            "cannot unwrap the key-encryption key for stored secrets",
            hint="check IOTSEC_CA_PASSPHRASE (or the ca-passphrase file in the home)",
        ) from None


def _publish(path: Path, data: bytes) -> bool:
    """Create ``path`` with ``data`` unless it exists; ``False`` if another process won.

    The file is written privately and atomically under a unique name, then hard-linked into
    place: a link never replaces an existing file, so two processes creating the KEK at the
    same moment cannot silently overwrite each other's.
    """
    staged = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.new")
    write_private_file(staged, data)
    try:
        os.link(staged, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
    return True
