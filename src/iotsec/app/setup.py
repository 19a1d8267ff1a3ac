"""``iotsec init``: a new home with its store, CA hierarchy and first admin token."""

from __future__ import annotations

import secrets
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Engine, func, inspect, select, update

from iotsec.access.policy import default_device_role
from iotsec.app.access.api_tokens import Scope, create_token
from iotsec.app.access.roles import write_role
from iotsec.app.pki.authorities import chain_certificates, insert_authority
from iotsec.app.pki.ceremony import (
    adopt_key,
    check_root_passphrase,
    export_key,
    load_signing_key,
    offline_root_crl,
    root_token_signer,
)
from iotsec.app.runtime import Runtime, utcnow
from iotsec.app.store_location import with_remembered_database
from iotsec.config import Settings
from iotsec.custody.home import (
    connect_token,
    open_key_store,
    remember_keystore,
    with_remembered_keystore,
)
from iotsec.errors import ConflictError, InvalidInputError
from iotsec.filesystem import create_new
from iotsec.pki import x509 as enc
from iotsec.pki.ca import (
    Authority,
    check_ca_certificate,
    create_issuing,
    create_root,
    load_ca_certificate,
)
from iotsec.pki.keys import KeyType, LocalSigner, Signer
from iotsec.store import models as m
from iotsec.store.db import make_engine, reading, transaction
from iotsec.store.migrate import upgrade
from iotsec.timeutil import ts

if TYPE_CHECKING:
    from iotsec.custody.pkcs11_token import Pkcs11Config

__all__ = ["BOOTSTRAP_TOKEN_DAYS", "ImportedCa", "InitResult", "OfflineRoot", "init_home"]

#: Lifetime of the admin token 'iotsec init' prints.
BOOTSTRAP_TOKEN_DAYS = 90


@dataclass(frozen=True)
class OfflineRoot:
    """``init --offline-root``: where the encrypted root key goes, and its passphrase; or
    (``token``) a PKCS#11 token of its own, not the home's, that makes and keeps it."""

    key_file: Path | None = None
    passphrase: bytes = b""
    token: Pkcs11Config | None = None


@dataclass(frozen=True)
class ImportedCa:
    """``init --import-ca``: an existing issuing CA (certificate, and its key as a PEM file
    or the label of a key already in the PKCS#11 token) under an enterprise root."""

    certificate: bytes
    root: bytes
    key: bytes | None = None
    key_passphrase: bytes | None = None
    key_label: str | None = None


@dataclass(frozen=True)
class InitResult:
    home: str
    root: x509.Certificate
    issuing: Authority
    admin_token: str | None
    created: bool
    #: Whether the CA passphrase (which encrypts the key files and KEKs) is the embedded
    #: default: generated and kept in the home (``passphrase_file``), next to the keys;
    #: else it came from IOTSEC_CA_PASSPHRASE and is stored nowhere.
    passphrase_in_home: bool = True
    passphrase_file: str | None = None
    #: The encrypted root key written by ``--offline-root`` (the home keeps none).
    root_key_file: str | None = None
    imported: bool = False


def _passphrase_source(settings: Settings) -> tuple[bool, str | None]:
    if settings.ca_passphrase is not None:
        return False, None
    return True, str(settings.passphrase_file)


def _where_root_went(offline: OfflineRoot | None, label: str) -> str | None:
    if offline is None:
        return None
    if offline.token is not None:
        return f"PKCS#11 token {offline.token.token_label}, key {label}"
    return str(offline.key_file)


def _check_offline_root(offline: OfflineRoot, settings: Settings) -> None:
    if (offline.key_file is None) == (offline.token is None):
        raise InvalidInputError("an offline root goes to a key file or to a token of its own")
    if offline.token is not None:
        if settings.keystore == "pkcs11" and settings.pkcs11_token == offline.token.token_label:
            raise InvalidInputError("the root's token is the home's own token: the home could "
                                    "sign with it", hint="give the root a token of its own")
        return
    assert offline.key_file is not None
    check_root_passphrase(offline.passphrase)
    if offline.key_file.exists() or offline.key_file.is_symlink():
        raise ConflictError(f"{offline.key_file} exists: the root key is never written over "
                            "a file", hint="choose a new file for the root key")
    if not offline.key_file.parent.is_dir():
        raise InvalidInputError(f"{offline.key_file.parent} is not a directory")


def _token_key_spki(settings: Settings, label: str) -> bytes:
    """The public key (SPKI DER) of the token key ``label``: read before anything is
    written, so a label that names another key is refused with nothing written."""
    if settings.keystore != "pkcs11":
        raise InvalidInputError("--import-key-label names a key in a PKCS#11 token",
                                hint="use it with --keystore pkcs11, or give --import-key")
    # Deferred: python-pkcs11 is loaded only by homes that use a token (start-up time).
    from iotsec.custody.pkcs11 import Pkcs11KeyStore

    token = connect_token(settings)
    try:
        return enc.spki_der(Pkcs11KeyStore(token).load(label).public_key())
    finally:
        token.close()


def _check_import(imported: ImportedCa, now: datetime, settings: Settings
                  ) -> tuple[x509.Certificate, x509.Certificate, LocalSigner | None]:
    """The imported CA, its root and its key (``None``: a key in the token), refused
    unless the root is a self-signed CA, the CA is issued by it, may sign, is valid now and
    matches its key."""
    cert = load_ca_certificate(imported.certificate)
    root = load_ca_certificate(imported.root)
    check_ca_certificate(root, issuer=root, spki=enc.spki_der(root.public_key()), now=now)
    if (imported.key is None) == (imported.key_label is None):
        raise InvalidInputError("give the imported CA's key as a file or as a PKCS#11 label")
    signer = None
    if imported.key is not None:
        signer = load_signing_key(imported.key, imported.key_passphrase)
        spki = enc.spki_der(signer.public_key())
    else:
        spki = _token_key_spki(settings, imported.key_label or "")
    check_ca_certificate(cert, issuer=root, spki=spki, now=now)
    KeyType.of(cert.public_key())  # type: ignore[arg-type]
    return cert, root, signer


def _initialised(engine: Engine) -> bool:
    """Whether the store already holds a CA hierarchy."""
    with reading(engine) as conn:
        if not inspect(conn).has_table(m.authorities.name):
            return False
        return bool(conn.execute(select(func.count()).select_from(m.authorities)).scalar())


def _check_passphrase_choice(settings: Settings, store_passphrase: bool) -> None:
    """The CA passphrase comes from IOTSEC_CA_PASSPHRASE (stored nowhere) or, only when
    asked for with ``store_passphrase``, is the embedded default (generated and stored in
    the home, next to the keys). A home made with the default keeps its file: reusing it
    (``--exist-ok``) needs no new choice."""
    if settings.ca_passphrase is not None:
        if store_passphrase:
            raise InvalidInputError(
                "--store-passphrase and IOTSEC_CA_PASSPHRASE exclude each other",
                hint="unset IOTSEC_CA_PASSPHRASE to store a generated passphrase in the "
                "home, or drop --store-passphrase to keep it out of the home")
        return
    if not store_passphrase and not settings.passphrase_file.exists():
        raise InvalidInputError(
            "no CA passphrase: set IOTSEC_CA_PASSPHRASE (at least 16 characters, kept out of "
            "the home), or pass --store-passphrase to generate one and store it in the home "
            "next to the keys")


def init_home(settings: Settings, *, key_type: KeyType = KeyType.ECDSA_P256,
              now: datetime | None = None, exist_ok: bool = False,
              offline_root: OfflineRoot | None = None,
              imported: ImportedCa | None = None,
              store_passphrase: bool = False) -> InitResult:
    """Create (or, with ``exist_ok``, reuse) a home: migrate the store, make the CAs.

    The CA passphrase comes from ``IOTSEC_CA_PASSPHRASE``; without it, ``store_passphrase``
    (the embedded default) generates one and stores it in the home; with neither, nothing
    is written and the call is refused.

    ``offline_root``: the root key is made in memory, written encrypted to its file and
    never kept in the home (its first CRL is signed before). ``imported``: no CA is made;
    the given issuing CA and its root are adopted (the root's key stays with its owner).
    Both are checked before anything is written."""
    if offline_root is not None and imported is not None:
        raise InvalidInputError("--offline-root and --import-ca exclude each other",
                                hint="an imported CA's root is offline already")
    now = now or utcnow()
    _check_passphrase_choice(settings, store_passphrase)
    checked_import = None
    if offline_root is not None:
        _check_offline_root(offline_root, settings)
    if imported is not None:
        checked_import = _check_import(imported, now, with_remembered_database(settings))
    settings = with_remembered_database(settings)
    home = settings.resolved_home
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = make_engine(settings.store_url)
    try:
        # Checked before anything is written: a refused init changes nothing, neither the
        # schema nor the home's record of its keystore (which every later command reads).
        if _initialised(engine):
            if not exist_ok:
                raise ConflictError(f"{home} is already initialised",
                                    hint="use it as it is, or choose another IOTSEC_HOME")
            upgrade(engine)
            settings = with_remembered_keystore(settings)
            rt = Runtime(settings=settings, opened_engine=engine,
                         keys=open_key_store(settings),
                         clock=lambda: now)
            source, file = _passphrase_source(settings)
            root_cert = x509.load_der_x509_certificate(chain_certificates(rt)[-1].public_bytes(
                Encoding.DER))
            return InitResult(home=str(home), root=root_cert,
                              issuing=rt.authority("issuing"), admin_token=None, created=False,
                              passphrase_in_home=source, passphrase_file=file)
        upgrade(engine)
        keys = open_key_store(settings, create_passphrase=True)
        remember_keystore(settings)
        source, file = _passphrase_source(settings)
        tag = secrets.token_hex(4)
        root_crl: tuple[bytes, datetime] | None = None
        root_offline = offline_root is not None or imported is not None
        if checked_import is not None and imported is not None:
            cert, root_cert, key = checked_import
            issuing_label = imported.key_label or f"issuing-{tag}"
            if key is not None:
                adopt_key(keys, issuing_label, key)
            issuing = Authority.from_der(cert.public_bytes(Encoding.DER),
                                         keys.load(issuing_label))
            root_der = root_cert.public_bytes(Encoding.DER)
            root_label = f"root-external-{tag}"
        else:
            with ExitStack() as held:
                root_key = None
                if offline_root is not None and offline_root.token is not None:
                    root_signer: Signer = held.enter_context(root_token_signer(
                        offline_root.token, f"root-{tag}", generate=key_type))
                elif offline_root is not None:
                    root_key = key_type.generate()
                    root_signer = LocalSigner(root_key)
                else:
                    root_signer = keys.generate(f"root-{tag}", key_type)
                root = Authority.from_der(create_root(root_signer, now, label=tag),
                                          root_signer)
                issuing_label = f"issuing-{tag}"
                issuing_signer = keys.generate(issuing_label, key_type)
                issuing = Authority.from_der(
                    create_issuing(root, issuing_signer, now, label=tag), issuing_signer)
                root_der, root_label = root.der, f"root-{tag}"
                if offline_root is not None:
                    root_crl = offline_root_crl(root, now)
                if offline_root is not None and root_key is not None and offline_root.key_file:
                    # Written before the store records the CA: a home never names a root
                    # key that was not saved. The key never touches the home.
                    create_new(offline_root.key_file,
                               export_key(root_key, offline_root.passphrase))
        root_type = KeyType.of(x509.load_der_x509_certificate(root_der).public_key()  # type: ignore[arg-type]
                               ).value if imported is not None else key_type.value
        with transaction(engine) as conn:
            root_id = insert_authority(conn, role="root", parent_id=None, key_label=root_label,
                                       key_type=root_type, der=root_der, now=now,
                                       key_offline=root_offline)
            if root_crl is not None:
                crl_der, next_update = root_crl
                conn.execute(update(m.crls).where(m.crls.c.authority_id == root_id).values(
                    number=ts(now.replace(microsecond=0)), this_update=ts(now),
                    next_update=ts(next_update), stale=False, der=crl_der))
            insert_authority(conn, role="issuing", parent_id=root_id, key_label=issuing_label,
                             key_type=issuing.signer.key_type.value, der=issuing.der, now=now)
            write_role(conn, default_device_role(), ts(now), replace=False)
            # The bootstrap token expires like any other (audit/token-no-expiry); on the
            # host, 'iotsec token create' mints the next one without a token.
            token = create_token(conn, name="admin", scope=Scope.ADMIN, now=ts(now),
                                 expires_at=ts(now) + BOOTSTRAP_TOKEN_DAYS * 86_400)
        return InitResult(home=str(home), root=x509.load_der_x509_certificate(root_der),
                          issuing=issuing, admin_token=token, created=True,
                          passphrase_in_home=source, passphrase_file=file,
                          root_key_file=_where_root_went(offline_root, root_label),
                          imported=imported is not None)
    finally:
        engine.dispose()
