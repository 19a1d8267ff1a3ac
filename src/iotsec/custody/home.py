"""A home's key custody as its settings describe it: the CA passphrase, which key store it
uses (files or a PKCS#11 token), the token connection and the key-encryption keys.

The token is reached only when the settings name one (``IOTSEC_PKCS11_MODULE``,
``IOTSEC_PKCS11_TOKEN``, ``IOTSEC_PKCS11_PIN``), and ``python-pkcs11`` is imported only then
(deferred imports below), so a home that keeps its keys in files never loads a PKCS#11 module
and every command starts fast.

:class:`HomeCustody` keeps what one process unlocked: the lazily connected token and the
KEKs (unlocking a file KEK costs one key derivation: scrypt, or HKDF for a generated
secret, ADR 0030), and closes the token when the process is done.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from iotsec.custody.home_secret import new_generated_secret
from iotsec.errors import (
    ConfigError,
    KeyCustodyError,
    Pkcs11ModuleError,
    Pkcs11PinError,
    Pkcs11TokenNotFoundError,
)
from iotsec.filesystem import read_bounded, write_private_file

if TYPE_CHECKING:
    from iotsec.config import Settings
    from iotsec.custody.base import KeyStore
    from iotsec.custody.keks import KekCustody
    from iotsec.custody.pkcs11_kek import Pkcs11KekStore
    from iotsec.custody.pkcs11_token import Pkcs11Config, Pkcs11Token

__all__ = [
    "KEK_DIR", "KEYSTORE_FILE", "MAX_KEYSTORE_FILE", "HomeCustody", "connect_token",
    "open_key_store", "pkcs11_config", "read_passphrase", "read_passphrase_file",
    "remember_keystore", "with_remembered_keystore"
]

MAX_PASSPHRASE_FILE: Final = 4096
KEK_DIR: Final = "kek"  # file KEKs live in <keys_dir>/kek
KEYSTORE_FILE: Final = "keystore.json"
MAX_KEYSTORE_FILE: Final = 4096


def read_passphrase_file(path: Path) -> bytes | None:
    """The secret in the home's passphrase file ``path`` (which must be private), or None
    when there is none (no file, or an empty one)."""
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise KeyCustodyError(f"{path} is readable by other users",
                                  hint=f"run 'chmod 600 {path}'")
        with path.open("rb") as fh:
            data = fh.read(MAX_PASSPHRASE_FILE).strip()
        if data:
            return data
    return None


def read_passphrase(settings: Settings, *, create: bool = False) -> bytes:
    """The CA key passphrase: ``IOTSEC_CA_PASSPHRASE``, else the home's 0600 file (made with
    ``create`` when there is none, holding a generated secret: see
    :mod:`iotsec.custody.home_secret`)."""
    if settings.ca_passphrase is not None:
        return settings.ca_passphrase.get_secret_value().encode("utf-8")
    path = settings.passphrase_file
    data = read_passphrase_file(path)
    if data is not None:
        return data
    if not create:
        raise KeyCustodyError("no CA passphrase is available",
                              hint="set IOTSEC_CA_PASSPHRASE, or use the home created by "
                              "'iotsec init'")
    generated = new_generated_secret()
    write_private_file(path, generated + b"\n")
    return generated


def pkcs11_config(settings: Settings) -> Pkcs11Config:
    """The token the settings name, or a clear error saying which setting is missing."""
    if settings.pkcs11_module is None:
        raise Pkcs11ModuleError("no PKCS#11 module is configured (IOTSEC_PKCS11_MODULE)")
    if not settings.pkcs11_token:
        raise Pkcs11TokenNotFoundError("no PKCS#11 token label is configured "
                                       "(IOTSEC_PKCS11_TOKEN)")
    if settings.pkcs11_pin is None:
        raise Pkcs11PinError("no PKCS#11 user PIN is configured",
                             hint="set IOTSEC_PKCS11_PIN in the environment (never on a "
                             "command line)")
    try:
        # Deferred: python-pkcs11 is loaded only by homes that use a token (start-up time).
        from iotsec.custody.pkcs11_token import Pkcs11Config
    except ImportError:
        raise Pkcs11ModuleError("the Python package python-pkcs11 is not installed",
                                hint="install iotsec with its dependencies") from None
    return Pkcs11Config(module=settings.pkcs11_module, token_label=settings.pkcs11_token,
                        pin=settings.pkcs11_pin.get_secret_value())


def connect_token(settings: Settings, *, lazy: bool = False) -> Pkcs11Token:
    """Log in to the configured token (a new connection; close it when done). With
    ``lazy``, the module is loaded and the PIN presented only when a key is first used."""
    config = pkcs11_config(settings)
    from iotsec.custody.pkcs11_token import connect  # deferred: see pkcs11_config

    return connect(config, lazy=lazy)


def open_key_store(settings: Settings, *, create_passphrase: bool = False,
                   on_use: Callable[[str, str], None] | None = None) -> KeyStore:
    """The key store for CA and signing keys: the token when ``IOTSEC_KEYSTORE=pkcs11``,
    the encrypted-file store otherwise. ``on_use(label, operation)`` is told of every
    signature made in the token and of every firmware image signed with a custody key (for
    the key-use record). The token is connected lazily: a command that signs nothing never
    loads the module nor presents the PIN."""
    # The passphrase also protects the file KEKs, so a home keeps one whatever its keystore.
    passphrase = read_passphrase(settings, create=create_passphrase)
    if settings.keystore == "pkcs11":
        from iotsec.custody.pkcs11 import Pkcs11KeyStore  # deferred: see pkcs11_config

        return Pkcs11KeyStore(connect_token(settings, lazy=True), on_use=on_use)
    # Deferred: ``data encrypt`` reads this module's names without opening the key store.
    from iotsec.custody.file_keys import FileKeyStore

    return FileKeyStore(settings.keys_dir, passphrase, on_use=on_use)


def remember_keystore(settings: Settings) -> None:
    """Record in the home which keystore it uses (for ``iotsec init --keystore pkcs11``):
    the module path and the token label, never the PIN."""
    doc = {"keystore": settings.keystore,
           "pkcs11_module": None if settings.pkcs11_module is None
           else str(settings.pkcs11_module),
           "pkcs11_token": settings.pkcs11_token}
    write_private_file(settings.resolved_home / KEYSTORE_FILE,
                       (json.dumps(doc, sort_keys=True) + "\n").encode("utf-8"), overwrite=True)


def with_remembered_keystore(settings: Settings) -> Settings:
    """``settings`` completed with what :func:`remember_keystore` recorded; a value set in
    the environment wins."""
    path = settings.resolved_home / KEYSTORE_FILE
    try:
        if path.stat().st_size > MAX_KEYSTORE_FILE:
            raise KeyCustodyError(f"{path} is larger than {MAX_KEYSTORE_FILE} bytes")
        doc = json.loads(read_bounded(path, MAX_KEYSTORE_FILE))
    except FileNotFoundError:
        return settings
    except ValueError:
        raise KeyCustodyError(f"{path} is not valid JSON", hint="restore it from backup") from None
    if not isinstance(doc, dict):
        raise KeyCustodyError(f"{path} is not a keystore record", hint="restore it from backup")
    update = {k: doc[k] for k in ("keystore", "pkcs11_module", "pkcs11_token")
              if doc.get(k) is not None and k not in settings.model_fields_set}
    # Deferred (start-up time): this module is also read by commands that run without the
    # settings model (iotsec.app.direct_home).
    from iotsec.config import Settings

    try:
        return Settings.model_validate({**settings.model_dump(exclude_unset=True), **update})
    except (ValueError, ConfigError):
        raise KeyCustodyError(f"{path} is not a valid keystore record",
                              hint="restore it from backup") from None


class HomeCustody:
    """What one process holds of a home's custody: the key store, the token connection
    (made on first use) and the unlocked KEKs. :meth:`close` logs out of the token."""

    def __init__(self, settings: Settings, keys: KeyStore) -> None:
        self.settings = settings
        self.keys = keys
        self._token: Pkcs11Token | None = None
        self._keks: KekCustody | None = None

    def __repr__(self) -> str:
        return f"HomeCustody({self.settings.keystore!r})"

    def token(self) -> Pkcs11Token:
        """The process's token connection; it logs in on first use."""
        if self._token is None:
            self._token = connect_token(self.settings, lazy=True)
        return self._token

    def keks(self) -> KekCustody:
        """The home's KEKs (files, and the token's when one is configured)."""
        if self._keks is None:
            # Deferred: the KEK code is loaded by the commands that wrap or unwrap a key.
            from iotsec.custody.keks import KekCustody

            settings = self.settings
            hsm = None
            if settings.pkcs11_module is not None:
                def hsm_store() -> Pkcs11KekStore:
                    from iotsec.custody.pkcs11_kek import Pkcs11KekStore  # deferred

                    return Pkcs11KekStore(self.token())
                hsm = hsm_store
            self._keks = KekCustody(
                settings.keys_dir / KEK_DIR, read_passphrase(settings), hsm=hsm,
                default_backend="pkcs11" if settings.keystore == "pkcs11" else "file")
        return self._keks

    def close(self) -> None:
        """Close the token connections (this object's, and its key store's), if any."""
        token, self._token = self._token, None
        if token is not None:
            token.close()
        if self.settings.keystore == "pkcs11":
            from iotsec.custody.pkcs11 import Pkcs11KeyStore  # deferred: see pkcs11_config

            if isinstance(self.keys, Pkcs11KeyStore):
                self.keys.token.close()
