"""File key-encryption keys: each KEK an encrypted file, mode 0600, in ``<keys_dir>/kek/``.

A :class:`~iotsec.protect.kek.FileKek`'s 32 bytes are kept wrapped with AES-256-GCM under a key
derived from the home's secret (the CA passphrase) and a random salt. The derivation follows
the secret (ADR 0030): scrypt for a passphrase a person may have chosen, HKDF-SHA256 for a
secret iotsec generated (256 random bits, :mod:`iotsec.custody.home_secret`), for which a
memory-hard function adds nothing but time. Each file names its derivation, so files sealed
before either choice existed open as they always did. A small ``active`` file names
the KEK new data is wrapped under; older KEKs stay loadable by id, so data wrapped before a
rotation still opens. Files are created through :mod:`iotsec.filesystem` and never replaced.
"""

from __future__ import annotations

import binascii
import json
import os
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from iotsec.custody.home_secret import is_generated_secret
from iotsec.errors import KekUnlockError, KeyCustodyError, NotFoundError, UnknownKekError
from iotsec.filesystem import publish_private_file, write_private_file
from iotsec.protect.kek import KEK_ID, FileKek, check_kek_id

__all__ = ["ACTIVE_FILE", "MAX_KEK_FILE", "FileKekStore"]

MAX_KEK_FILE: Final = 4096
ACTIVE_FILE: Final = "active"

_NONCE: Final = 12
_TAG: Final = 16
_FILE_VERSION: Final = 1
# scrypt cost for the KEK files: about 32 MiB and a few tens of milliseconds once per
# process and KEK. Stored in each file so it can be raised later; a file asking for more
# than the bound is refused rather than allowed to exhaust memory.
_SCRYPT_N: Final = 2**15
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_MAX_SCRYPT_N: Final = 2**20
#: The derivation for a generated secret (ADR 0030): HKDF-SHA256, a random salt, and the
#: KEK's id in the info, so no two files share a wrapping key.
_HKDF: Final = "hkdf-sha256"
_SCRYPT: Final = "scrypt"
_SALT: Final = 16


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    # binascii rather than base64: the same strict decoding, without importing the
    # base64 module (and what it imports) on the path of ``iotsec data encrypt``.
    return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)


def _file_aad(key_id: str) -> bytes:
    return b"iotsec|data.kek|v1|" + key_id.encode("ascii")


def _hkdf(passphrase: bytes, salt: bytes, key_id: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, b"iotsec|data.kek|hkdf|v1|" + key_id.encode("ascii")
                ).derive(passphrase)


def _seal_file(key_id: str, key: bytes, passphrase: bytes) -> bytes:
    salt, nonce = os.urandom(_SALT), os.urandom(_NONCE)
    doc: dict[str, Any] = {"v": _FILE_VERSION, "id": key_id, "salt": _b64(salt)}
    if is_generated_secret(passphrase):
        wrapping = _hkdf(passphrase, salt, key_id)
        doc["kdf"] = _HKDF
    else:
        wrapping = Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=_SCRYPT_R,
                          p=_SCRYPT_P).derive(passphrase)
        doc.update(kdf=_SCRYPT, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    sealed = AESGCM(wrapping).encrypt(nonce, key, _file_aad(key_id))
    doc.update(alg="A256GCM", nonce=_b64(nonce), kek=_b64(sealed))
    return (json.dumps(doc, sort_keys=True) + "\n").encode("ascii")


def _open_file(data: bytes, key_id: str, passphrase: bytes, path: Path) -> bytes:
    corrupt = KekUnlockError(f"{path} is not a valid key-encryption key file",
                             hint="restore it from backup")
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("v") != _FILE_VERSION \
                or doc.get("kdf") not in (_SCRYPT, _HKDF) or doc.get("alg") != "A256GCM" \
                or doc.get("id") != key_id:
            raise corrupt
        salt, nonce, sealed = _unb64(doc["salt"]), _unb64(doc["nonce"]), _unb64(doc["kek"])
        cost: tuple[int, int, int] | None = None
        if doc["kdf"] == _SCRYPT:
            n, r, p = doc["n"], doc["r"], doc["p"]
            if not (type(n) is int and type(r) is int and type(p) is int
                    and 2 <= n <= _MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= r <= 32
                    and 1 <= p <= 16):
                raise corrupt
            cost = (n, r, p)
    except (ValueError, KeyError, TypeError):
        raise corrupt from None
    if len(nonce) != _NONCE or len(sealed) != 32 + _TAG or not 16 <= len(salt) <= 64:
        raise corrupt
    if cost is None:
        if not is_generated_secret(passphrase):
            # Fail closed: a fast derivation is only ever right for a generated secret. The
            # file was sealed under one, so any other secret is the wrong one.
            raise KekUnlockError(f"cannot unlock key-encryption key {key_id!r}: wrong "
                                 "passphrase (the file is sealed for the home's generated "
                                 "secret, and the secret given is not one)")
        wrapping = _hkdf(passphrase, salt, key_id)
    else:
        wrapping = Scrypt(salt=salt, length=32, n=cost[0], r=cost[1], p=cost[2]
                          ).derive(passphrase)
    try:
        return AESGCM(wrapping).decrypt(nonce, sealed, _file_aad(key_id))
    except InvalidTag:
        # A wrong passphrase and an altered file look alike; neither is echoed.
        raise KekUnlockError(f"cannot unlock key-encryption key {key_id!r}: wrong passphrase, "
                             "or the file was altered") from None


def _publish(path: Path, data: bytes) -> bool:
    try:
        return publish_private_file(path, data)
    except OSError as exc:
        raise KeyCustodyError(f"cannot write {path}: {exc.strerror}") from None


def _read_private(path: Path, limit: int) -> bytes:
    info = path.stat()
    if info.st_mode & 0o077:
        raise KeyCustodyError(f"{path} is readable by other users", hint=f"run 'chmod 600 {path}'")
    if info.st_size > limit:
        raise KekUnlockError(f"{path} is larger than {limit} bytes",
                             hint="the file is not an iotsec key-encryption key")
    with path.open("rb") as fh:
        return fh.read(limit + 1)[:limit]


class FileKekStore:
    """File KEKs in one directory (``<keys_dir>/kek``), unlocked with the CA passphrase.

    Implements :class:`KekResolver`; each KEK is unlocked (one key derivation) once per
    process.
    """

    def __init__(self, directory: Path, passphrase: bytes) -> None:
        if len(passphrase) < 16:
            raise KeyCustodyError("the CA passphrase is too short",
                                  hint="use at least 16 characters in IOTSEC_CA_PASSPHRASE")
        self.directory = directory
        self._passphrase = passphrase
        self._cache: dict[str, FileKek] = {}

    def __repr__(self) -> str:
        return f"FileKekStore({str(self.directory)!r})"

    def _path(self, key_id: str) -> Path:
        return self.directory / f"{check_kek_id(key_id)}.kek"

    def ids(self) -> list[str]:
        """Ids of the KEK files present (sorted)."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name[:-4] for p in self.directory.iterdir()
                      if p.name.endswith(".kek") and KEK_ID.fullmatch(p.name[:-4]))

    def generate(self) -> FileKek:
        """Create a new KEK file (not yet active) and return the KEK."""
        key_id = f"kek-{os.urandom(8).hex()}"
        key = os.urandom(32)
        if not _publish(self._path(key_id), _seal_file(key_id, key, self._passphrase)):
            raise KeyCustodyError(f"key-encryption key {key_id!r} already exists")  # 2**-64
        kek = FileKek(key_id, key)
        self._cache[key_id] = kek
        return kek

    def kek(self, key_id: str) -> FileKek:
        """Unlock the KEK ``key_id``: :class:`UnknownKekError` if there is no such file,
        :class:`KekUnlockError` for a wrong passphrase or an altered file."""
        cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        path = self._path(key_id)
        try:
            data = _read_private(path, MAX_KEK_FILE)
        except FileNotFoundError:
            raise UnknownKekError(f"key-encryption key {key_id!r} is not in {self.directory}"
                                  ) from None
        kek = FileKek(key_id, _open_file(data, key_id, self._passphrase, path))
        self._cache[key_id] = kek
        return kek

    def active_id(self) -> str | None:
        try:
            text = _read_private(self.directory / ACTIVE_FILE, 256)
        except FileNotFoundError:
            return None
        key_id = text.decode("ascii", "replace").strip()
        if not KEK_ID.fullmatch(key_id):
            raise KeyCustodyError(f"{self.directory / ACTIVE_FILE} does not name a KEK",
                                  hint="restore it from backup")
        return key_id

    def required_active_id(self) -> str:
        """The id of the KEK new data is wrapped under; :class:`NotFoundError` if none is
        active yet."""
        key_id = self.active_id()
        if key_id is None:
            raise NotFoundError(f"no active key-encryption key in {self.directory}",
                                hint="one is created with the first encrypted file or record")
        return key_id

    def active(self) -> FileKek:
        """The KEK new data is wrapped under."""
        return self.kek(self.required_active_id())

    def write_active(self, key_id: str) -> None:
        """Point the ``active`` file at ``key_id`` (whichever custody holds that KEK)."""
        write_private_file(self.directory / ACTIVE_FILE, f"{key_id}\n".encode("ascii"),
                           overwrite=True)

    def publish_active(self, key_id: str) -> bool:
        """Point the ``active`` file at ``key_id`` unless there is one (``False`` then: another
        process activated its KEK first)."""
        return _publish(self.directory / ACTIVE_FILE, f"{key_id}\n".encode("ascii"))

    def activate(self, key_id: str) -> None:
        """Make ``key_id`` the KEK for new data (it must unlock)."""
        self.kek(key_id)
        self.write_active(key_id)

    def active_or_create(self) -> FileKek:
        """The active KEK, creating and activating the first one if there is none."""
        if self.active_id() is None:
            kek = self.generate()
            if self.publish_active(kek.key_id):
                return kek
            # Another process activated its own first: use that one, so all new data is
            # wrapped under one KEK. Ours stays as an unused file.
        return self.active()
