"""Key custody use cases: the configured key store (file or PKCS#11), the home's
key-encryption keys, secrets encrypted in the store, and ``iotsec keys list|generate|
export-public``.

The token is reached only when the settings name one (``IOTSEC_PKCS11_MODULE``,
``IOTSEC_PKCS11_TOKEN``, ``IOTSEC_PKCS11_PIN``), and ``python-pkcs11`` is imported only then,
so a home that keeps its keys in files never loads a PKCS#11 module.

Secrets iotsec keeps in the store are sealed as record envelopes
(:func:`~iotsec.protect.records.encrypt_record`) under the home's active KEK, bound to their
table, row and column. :data:`ENCRYPTED_COLUMNS` lists every such column: the rotation walks
it, and the report counts from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Column, Row, Table, select

from iotsec.app.events import Event
from iotsec.app.runtime import Runtime, record_key_use
from iotsec.custody.base import KeyStore, RecordedKek
from iotsec.custody.file_keys import FileKeyStore
from iotsec.custody.keks import KekInfo, backend_of
from iotsec.errors import (
    DataProtectionError,
    KeyCustodyError,
    KeyTypeMismatchError,
    NotFoundError,
    RecordFormatError,
)
from iotsec.pki.keys import KeyType
from iotsec.protect.kek import KeyWrapper
from iotsec.protect.records import decrypt_record, encrypt_record
from iotsec.store import models as m
from iotsec.store.db import reading

__all__ = [
    "DEVICE_SECRETS", "DEVICE_SECRET_V2", "ENCRYPTED_COLUMNS", "EncryptedColumn", "KeyEntry",
    "RecordedKeks", "device_secret_record_id", "export_public", "generate_key", "hsm_key_store",
    "list_keys", "open_device_secret", "signing_store"
]

if TYPE_CHECKING:
    from iotsec.custody.pkcs11 import Pkcs11KeyStore


# --- the key store ---------------------------------------------------------------------


def signing_store(rt: Runtime) -> KeyStore:
    """Where ``iotsec keys generate`` puts signing keys: the token or the runtime's files."""
    if rt.settings.keystore == "pkcs11":
        from iotsec.custody.pkcs11 import Pkcs11KeyStore  # deferred: loads python-pkcs11

        return Pkcs11KeyStore(rt.custody.token(), on_use=record_key_use(rt, "pkcs11"))
    return rt.keys


# --- key-encryption keys ------------------------------------------------------------------


class RecordedKeks:
    """The KEKs of the home's custody, each unwrap recorded as a ``key.use`` event (operation
    ``unwrap``, subject the KEK id): opening a device secret or an encrypted file is on the
    key-use record. Bulk re-wrapping (``iotsec keys rotate kek``) goes to the custody directly and
    is recorded as one ``kek.rotate`` event with its counts."""

    def __init__(self, rt: Runtime) -> None:
        self._custody = rt.custody.keks()
        self._rt = rt

    def kek(self, key_id: str) -> KeyWrapper:
        return RecordedKek(self._custody.kek(key_id), record_key_use(self._rt, backend_of(key_id)))


# --- encrypted columns --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncryptedColumn:
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
        return self.marker + encrypt_record(plaintext, kek, table=self.table.name,
                                         record_id=row_id, field=self.field)


#: The format of ``device_secrets.ciphertext``: 0x00 then a record envelope.
DEVICE_SECRET_V2: Final = b"\x00"


def device_secret_record_id(kid: str, device_id: str) -> str:
    """The record id a device secret is bound to: its kid *and* its device, so a row moved
    to another device does not open."""
    return f"{kid}|{device_id}"


DEVICE_SECRETS: Final = EncryptedColumn(
    name="device_secrets.ciphertext", table=m.device_secrets, key=m.device_secrets.c.kid,
    column=m.device_secrets.c.ciphertext, extra=(m.device_secrets.c.device_id,),
    field="ciphertext",
    record_id=lambda row: device_secret_record_id(row.kid, row.device_id),
    marker=DEVICE_SECRET_V2)

#: Every column whose values are encrypted under the home's KEKs.
ENCRYPTED_COLUMNS: Final = (DEVICE_SECRETS,)


def open_device_secret(rt: Runtime, kid: str, device_id: str, stored: bytes) -> bytes:
    """A device secret from its stored form (a record envelope)."""
    try:
        envelope = DEVICE_SECRETS.envelope(stored)
        return decrypt_record(envelope, RecordedKeks(rt), table=DEVICE_SECRETS.table.name,
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
    entries += [_kek_entry(info) for info in rt.custody.keks().describe()]
    if isinstance(rt.keys, FileKeyStore):
        for label in rt.keys.image_labels():
            entries.append(KeyEntry(label, "firmware", "file",
                                    rt.keys.load_image_key(label).key_type.value, "available"))
    if rt.settings.pkcs11_module is not None:
        from iotsec.custody.pkcs11 import Pkcs11KeyStore  # deferred: loads python-pkcs11

        named = {e.label for e in entries} | {e.label.removeprefix("hsm:") for e in entries}
        purposes = {"signing": "signing", "image-signing": "firmware"}
        for key in Pkcs11KeyStore(rt.custody.token()).list():
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
    # Deferred (start-up time): the X.509 and serialisation code is loaded by this command
    # only, not by every command that opens a device secret or an encrypted file.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from iotsec.pki.x509 import spki_der

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
    # Deferred: python-pkcs11 is loaded only by homes that use a token (start-up time).
    from iotsec.custody.pkcs11 import Pkcs11KeyStore

    return Pkcs11KeyStore(rt.custody.token(), on_use=record_key_use(rt, "pkcs11"))
