"""Key custody use cases: the configured key store (file or PKCS#11), the home's
key-encryption keys, secrets sealed in the store, and ``iotsec keys list|generate|
export-public``.

The token is reached only when the settings name one (``IOTSEC_PKCS11_MODULE``,
``IOTSEC_PKCS11_TOKEN``, ``IOTSEC_PKCS11_PIN``), and ``python-pkcs11`` is imported only then,
so a home that keeps its keys in files never loads a PKCS#11 module.

Secrets iotsec keeps in the store are sealed as record envelopes
(:func:`~iotsec.protect.records.seal_record`) under the home's active KEK, bound to their
table, row and column. :data:`SEALED_COLUMNS` lists every such column: the rotation walks
it, and the report counts from it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Column, Row, Table, select

from iotsec.app.events import Event
from iotsec.app.runtime import Runtime, read_passphrase
from iotsec.config import Settings
from iotsec.errors import (
    DataProtectionError,
    KeyCustodyError,
    KeyTypeMismatchError,
    NotFoundError,
    Pkcs11ModuleError,
    Pkcs11PinError,
    Pkcs11TokenNotFoundError,
    RecordFormatError,
)
from iotsec.keys.base import KeyStore, KeyType
from iotsec.keys.file import FileKeyStore
from iotsec.pki.x509 import spki_der
from iotsec.protect.custody import KekCustody, KekInfo, backend_of
from iotsec.protect.kek import KeyWrapper
from iotsec.protect.records import open_record, seal_record
from iotsec.store import models as m
from iotsec.store.db import reading

if TYPE_CHECKING:
    from iotsec.keys.pkcs11 import Pkcs11Config, Pkcs11KeyStore, Pkcs11Token

KEK_DIR: Final = "kek"  # the directory part 1 keeps file KEKs in (app.protect.KEK_DIR)
_CONNECTION_CACHE: Final = "keys.pkcs11_connection"
_CUSTODY_CACHE: Final = "keys.kek_custody"


# --- the token and the key store ------------------------------------------------------------


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
        from iotsec.keys.pkcs11 import Pkcs11Config
    except ImportError:
        raise Pkcs11ModuleError("the Python package python-pkcs11 is not installed",
                                hint="install iotsec with its dependencies") from None
    return Pkcs11Config(module=settings.pkcs11_module, token_label=settings.pkcs11_token,
                        pin=settings.pkcs11_pin.get_secret_value())


def connect_token(settings: Settings, *, lazy: bool = False) -> Pkcs11Token:
    """Log in to the configured token (a new connection; close it when done). With
    ``lazy``, the module is loaded and the PIN presented only when a key is first used."""
    config = pkcs11_config(settings)
    from iotsec.keys.pkcs11 import connect

    return connect(config, lazy=lazy)


def token(rt: Runtime) -> Pkcs11Token:
    """The runtime's token connection, once per process; it logs in on first use."""
    cached = rt.cache.get(_CONNECTION_CACHE)
    if cached is None:
        cached = connect_token(rt.settings, lazy=True)
        rt.cache[_CONNECTION_CACHE] = cached
    return cached  # type: ignore[return-value]


def close_token(rt: Runtime) -> None:
    """Close the runtime's token connections (its own, and its key store's), if any."""
    conn = rt.cache.pop(_CONNECTION_CACHE, None)
    if conn is not None:
        conn.close()  # type: ignore[attr-defined]
    if rt.settings.keystore == "pkcs11":
        from iotsec.keys.pkcs11 import Pkcs11KeyStore

        if isinstance(rt.keys, Pkcs11KeyStore):
            rt.keys.token.close()


def open_key_store(settings: Settings, *, create_passphrase: bool = False,
                   on_use: Callable[[str, str], None] | None = None) -> KeyStore:
    """The key store for CA and signing keys: the token when ``IOTSEC_KEYSTORE=pkcs11``,
    the encrypted-file store otherwise. ``on_use(label, operation)`` is told of every
    signature made in the token and of every firmware image signed with a custody key (for
    the audit trail). The token is connected lazily: a command that signs nothing never
    loads the module nor presents the PIN."""
    # The passphrase also protects the file KEKs, so a home keeps one whatever its keystore.
    passphrase = read_passphrase(settings, create=create_passphrase)
    if settings.keystore == "pkcs11":
        from iotsec.keys.pkcs11 import Pkcs11KeyStore

        return Pkcs11KeyStore(connect_token(settings, lazy=True), on_use=on_use)
    return FileKeyStore(settings.keys_dir, passphrase, on_use=on_use)


KEYSTORE_FILE: Final = "keystore.json"
MAX_KEYSTORE_FILE: Final = 4096


def remember_keystore(settings: Settings) -> None:
    """Record in the home which keystore it uses (for ``iotsec init --keystore pkcs11``):
    the module path and the token label, never the PIN."""
    doc = {"keystore": settings.keystore,
           "pkcs11_module": None if settings.pkcs11_module is None
           else str(settings.pkcs11_module),
           "pkcs11_token": settings.pkcs11_token}
    from iotsec.keys.file import write_private_file

    write_private_file(settings.resolved_home / KEYSTORE_FILE,
                       (json.dumps(doc, sort_keys=True) + "\n").encode("utf-8"), overwrite=True)


def with_remembered_keystore(settings: Settings) -> Settings:
    """``settings`` completed with what :func:`remember_keystore` recorded; a value set in
    the environment wins."""
    path = settings.resolved_home / KEYSTORE_FILE
    try:
        if path.stat().st_size > MAX_KEYSTORE_FILE:
            raise KeyCustodyError(f"{path} is larger than {MAX_KEYSTORE_FILE} bytes")
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return settings
    except ValueError:
        raise KeyCustodyError(f"{path} is not valid JSON", hint="restore it from backup") from None
    if not isinstance(doc, dict):
        raise KeyCustodyError(f"{path} is not a keystore record", hint="restore it from backup")
    update = {k: doc[k] for k in ("keystore", "pkcs11_module", "pkcs11_token")
              if doc.get(k) is not None and k not in settings.model_fields_set}
    try:
        return Settings.model_validate({**settings.model_dump(exclude_unset=True), **update})
    except ValueError:
        raise KeyCustodyError(f"{path} is not a valid keystore record",
                              hint="restore it from backup") from None


def audit_key_use(rt: Runtime, backend: str | None = None) -> Callable[[str, str], None]:
    """An ``on_use`` callback that records each use of a custody key as a ``key.use`` event
    (``backend``: where the key lives; by default the home's key store)."""
    where = backend or rt.settings.keystore

    def record(label: str, operation: str) -> None:
        rt.events.record(Event(at=rt.now(), kind="key.use", outcome="ok", subject=label,
                               detail={"operation": operation, "backend": where}))
    return record


def signing_store(rt: Runtime) -> KeyStore:
    """Where ``iotsec keys generate`` puts signing keys: the token or the runtime's files."""
    if rt.settings.keystore == "pkcs11":
        from iotsec.keys.pkcs11 import Pkcs11KeyStore

        return Pkcs11KeyStore(token(rt), on_use=audit_key_use(rt, "pkcs11"))
    return rt.keys


# --- key-encryption keys ------------------------------------------------------------------


def kek_custody(rt: Runtime) -> KekCustody:
    """The home's KEKs (files, and the token's when one is configured), once per process:
    unlocking a file KEK costs a scrypt, so the unlocked keys are kept."""
    cached = rt.cache.get(_CUSTODY_CACHE)
    if isinstance(cached, KekCustody):
        return cached
    settings = rt.settings
    hsm = None
    if settings.pkcs11_module is not None:
        def hsm_store() -> Any:
            from iotsec.keys.pkcs11_kek import Pkcs11KekStore

            return Pkcs11KekStore(token(rt))
        hsm = hsm_store
    custody = KekCustody(settings.keys_dir / KEK_DIR, read_passphrase(settings), hsm=hsm,
                         default_backend="pkcs11" if settings.keystore == "pkcs11" else "file")
    rt.cache[_CUSTODY_CACHE] = custody
    return custody


class AuditedKeks:
    """The KEKs of the home's custody, each unwrap recorded as a ``key.use`` event (operation
    ``unwrap``, subject the KEK id): opening a device secret or an encrypted file is on the
    audit trail. Bulk re-wrapping (``iotsec keys rotate kek``) goes to the custody directly and
    is recorded as one ``kek.rotate`` event with its counts."""

    def __init__(self, rt: Runtime) -> None:
        self._custody = kek_custody(rt)
        self._rt = rt

    def kek(self, key_id: str) -> KeyWrapper:
        inner = self._custody.kek(key_id)
        return _AuditedKek(inner, audit_key_use(self._rt, backend_of(key_id)))


class _AuditedKek:
    def __init__(self, inner: KeyWrapper, record: Callable[[str, str], None]) -> None:
        self._inner = inner
        self._record = record

    @property
    def key_id(self) -> str:
        return self._inner.key_id

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        return self._inner.wrap(data_key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        key = self._inner.unwrap(wrapped, aad)
        self._record(self._inner.key_id, "unwrap")
        return key


# --- sealed columns -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SealedColumn:
    """A column of the store holding record envelopes.

    ``marker`` is a prefix every stored value carries before its envelope (a format
    version); a value without it is refused as not an iotsec record.
    """

    name: str
    table: Table
    key: Column[Any]
    column: Column[Any]
    extra: tuple[Column[Any], ...]
    field: str
    record_id: Callable[[Row[Any]], str | int]
    marker: bytes = b""

    def envelope(self, stored: bytes) -> bytes:
        """The envelope inside a stored value (:class:`RecordFormatError` without the
        marker)."""
        if stored[:len(self.marker)] != self.marker:
            raise RecordFormatError(f"a value of {self.name} is not in the format iotsec "
                                    "writes")
        return stored[len(self.marker):]

    def seal(self, plaintext: bytes, kek: Any, row_id: str | int) -> bytes:
        return self.marker + seal_record(plaintext, kek, table=self.table.name,
                                         record_id=row_id, field=self.field)


#: The format of ``device_secrets.ciphertext``: 0x00 then a record envelope.
DEVICE_SECRET_V2: Final = b"\x00"


def device_secret_record_id(kid: str, device_id: str) -> str:
    """The record id a device secret is bound to: its kid *and* its device, so a row moved
    to another device does not open."""
    return f"{kid}|{device_id}"


DEVICE_SECRETS: Final = SealedColumn(
    name="device_secrets.ciphertext", table=m.device_secrets, key=m.device_secrets.c.kid,
    column=m.device_secrets.c.ciphertext, extra=(m.device_secrets.c.device_id,),
    field="ciphertext",
    record_id=lambda row: device_secret_record_id(row.kid, row.device_id),
    marker=DEVICE_SECRET_V2)

#: Every column whose values are sealed under the home's KEKs.
SEALED_COLUMNS: Final = (DEVICE_SECRETS,)


def seal_device_secret(rt: Runtime, kid: str, device_id: str, secret: bytes) -> bytes:
    """The stored form of a new device secret: an envelope under the active KEK."""
    return DEVICE_SECRETS.seal(secret, kek_custody(rt).active_or_create(),
                               device_secret_record_id(kid, device_id))


def open_device_secret(rt: Runtime, kid: str, device_id: str, stored: bytes) -> bytes:
    """A device secret from its stored form (a record envelope)."""
    try:
        envelope = DEVICE_SECRETS.envelope(stored)
        return open_record(envelope, AuditedKeks(rt), table=DEVICE_SECRETS.table.name,
                           record_id=device_secret_record_id(kid, device_id),
                           field=DEVICE_SECRETS.field)
    except KeyCustodyError:
        raise
    except DataProtectionError as exc:
        # Reported as a custody failure: the stored secret cannot be used, whatever the
        # reason (altered, moved to another row, or not in the format iotsec writes).
        raise KeyCustodyError(f"the secret {kid} cannot be decrypted: {exc}",
                              hint="create a new secret for the device") from None


# --- iotsec keys list | generate | export-public -------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One key in custody, as ``iotsec keys list`` shows it."""

    label: str
    purpose: str  # ca-root | ca-issuing | signing | firmware | kek | other
    backend: str  # file | pkcs11
    key_type: str
    state: str  # active | inactive | available | retired
    extractable: bool | None = None


def _kek_entry(info: KekInfo) -> KeyEntry:
    state = "retired" if info.retired else "active" if info.active else "available"
    return KeyEntry(info.key_id, "kek", info.backend, "aes-256", state,
                    False if info.backend == "pkcs11" else None)


def list_keys(rt: Runtime) -> list[KeyEntry]:
    """The CA keys the store names, the KEKs, and (with a token) the token's other keys."""
    a = m.authorities.c
    with reading(rt.engine) as conn:
        rows = conn.execute(select(a.role, a.key_label, a.key_type, a.active)
                            .order_by(a.id)).all()
    backend = "file" if isinstance(rt.keys, FileKeyStore) else "pkcs11"
    entries = [KeyEntry(r.key_label, f"ca-{r.role}", backend, r.key_type,
                        "active" if r.active else "inactive") for r in rows]
    entries += [_kek_entry(info) for info in kek_custody(rt).describe()]
    if isinstance(rt.keys, FileKeyStore):
        for label in rt.keys.image_labels():
            entries.append(KeyEntry(label, "firmware", "file",
                                    rt.keys.load_image_key(label).key_type.value, "available"))
    if rt.settings.pkcs11_module is not None:
        from iotsec.keys.pkcs11 import Pkcs11KeyStore

        named = {e.label for e in entries} | {e.label.removeprefix("hsm:") for e in entries}
        purposes = {"signing": "signing", "image-signing": "firmware"}
        for key in Pkcs11KeyStore(token(rt)).list():
            if key.label in named or key.kind in ("kek", "retired-kek"):
                continue
            entries.append(KeyEntry(key.label, purposes.get(key.kind, "other"), "pkcs11",
                                    key.key_type, "available", key.extractable))
    return entries


def generate_key(rt: Runtime, label: str, key_type: KeyType) -> KeyEntry:
    """Generate a signing key (a future CA or firmware key) in the configured custody."""
    store = signing_store(rt)
    signer = store.generate(label, key_type)
    rt.events.record(Event(at=rt.now(), kind="key.generate", outcome="ok", subject=label,
                           detail={"type": signer.key_type.value,
                                   "backend": rt.settings.keystore}))
    return KeyEntry(label, "signing", rt.settings.keystore, signer.key_type.value, "available",
                    False if rt.settings.keystore == "pkcs11" else None)


def export_public(rt: Runtime, label: str) -> bytes:
    """The public key of a signing key (SubjectPublicKeyInfo PEM). For a CA label the key
    is checked against the CA certificate the store holds."""
    store = signing_store(rt)
    if not store.exists(label):
        raise NotFoundError(f"no signing key labelled {label!r} in the "
                            f"{rt.settings.keystore} key store",
                            hint="see 'iotsec keys list'")
    try:
        public = store.load(label).public_key()
    except KeyTypeMismatchError:
        # Not a CA key: a firmware signing key (or, if not that either, the error stands).
        return store.load_image_key(label).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with reading(rt.engine) as conn:
        cert = conn.execute(select(m.authorities.c.cert_der)
                            .where(m.authorities.c.key_label == label)).scalar()
    if cert is not None and spki_der(x509.load_der_x509_certificate(cert).public_key()) \
            != spki_der(public):
        raise KeyCustodyError(f"the key {label!r} does not match its CA certificate",
                              hint="the home's keys and database belong to different CAs")
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def hsm_key_store(rt: Runtime) -> Pkcs11KeyStore:
    """The token's signing keys (for tests and tools that need the token explicitly)."""
    from iotsec.keys.pkcs11 import Pkcs11KeyStore

    return Pkcs11KeyStore(token(rt), on_use=audit_key_use(rt, "pkcs11"))
