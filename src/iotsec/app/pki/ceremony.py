"""The offline-root ceremony and imported issuing CAs.

A home made with ``iotsec init --offline-root`` never holds its root key: the key is
written once, encrypted (PKCS#8, PBES2-scrypt/AES-256-CBC, which ``openssl pkey`` reads),
to a file the operator takes offline, and the root's first CRL is signed for
:data:`OFFLINE_ROOT_CRL_DAYS` before the key leaves. A new issuing CA then takes three
steps:

1. ``iotsec ca request`` (online): a new key in custody and its PKCS#10 request, kept as
   pending in the store;
2. ``iotsec ca sign-intermediate --root-key FILE --root-cert FILE CSR`` (offline, no home
   needed): the issuing CA certificate, signed with the root key;
3. ``iotsec ca import CERT`` (online): checked (a CA allowed to sign, valid now, issued by
   the active root, certifying the key of a pending request) and installed as the active
   issuing CA; the previous one becomes retiring. A refused import writes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import delete, insert, select, update

from iotsec.app.events import Event
from iotsec.app.pki.authorities import (
    AuthorityRecord,
    get_authority,
    insert_authority,
    set_state,
)
from iotsec.app.pki.crl import PublishedCrl
from iotsec.app.runtime import Runtime
from iotsec.custody.base import KeyStore
from iotsec.custody.file_keys import FileKeyStore
from iotsec.errors import CaImportError, InvalidInputError, NotFoundError, PkiError
from iotsec.pki import pkcs8
from iotsec.pki import x509 as enc
from iotsec.pki.ca import (
    Authority,
    ca_request,
    check_ca_certificate,
    issuing_subject,
    load_ca_certificate,
    sign_intermediate,
)
from iotsec.pki.crl import build_crl
from iotsec.pki.csr import MAX_CSR_BYTES
from iotsec.pki.keys import KeyType, LocalSigner, Signer
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import ts

if TYPE_CHECKING:
    from iotsec.custody.pkcs11_token import Pkcs11Config

__all__ = [
    "MAX_CRL_IMPORT_BYTES",
    "MAX_KEY_FILE_BYTES",
    "MIN_ROOT_PASSPHRASE",
    "OFFLINE_ROOT_CRL_DAYS",
    "CaRequest",
    "adopt_key",
    "check_root_passphrase",
    "export_key",
    "import_issuing",
    "import_root_crl",
    "load_signing_key",
    "offline_root_crl",
    "request_issuing",
    "sign_intermediate_offline",
    "sign_root_crl_offline"
]

#: How long the CRL a root signs before its key goes offline stays valid.
OFFLINE_ROOT_CRL_DAYS = 365
#: The shortest passphrase an exported root key may be encrypted with.
MIN_ROOT_PASSPHRASE = 12
#: The largest CRL ``ca import-crl`` reads (an offline root's CRL is nearly empty).
MAX_CRL_IMPORT_BYTES = 1024 * 1024
#: The largest key file read (an encrypted RSA-4096 key is about 3.5 KiB).
MAX_KEY_FILE_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class CaRequest:
    id: int
    key_label: str
    key_type: str
    subject: str
    csr_der: bytes


def check_root_passphrase(passphrase: bytes) -> None:
    if len(passphrase) < MIN_ROOT_PASSPHRASE:
        raise InvalidInputError(f"the root key passphrase needs at least {MIN_ROOT_PASSPHRASE} "
                                "characters")


def export_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, passphrase: bytes
               ) -> bytes:
    """``key`` as encrypted PKCS#8 PEM under ``passphrase``."""
    check_root_passphrase(passphrase)
    return pkcs8.encrypt_private_key(key, passphrase)


def load_signing_key(data: bytes, passphrase: bytes | None) -> LocalSigner:
    """A CA key from a PEM file: encrypted PKCS#8 (with ``passphrase``) or, for an imported
    CA only, unencrypted PKCS#8/SEC1/PKCS#1. Bounded; errors never echo key material."""
    if len(data) > MAX_KEY_FILE_BYTES:
        raise InvalidInputError(f"the key file is larger than {MAX_KEY_FILE_BYTES} bytes",
                                hint="give one PEM private key")
    try:
        if b"ENCRYPTED PRIVATE KEY" in data:
            if not passphrase:
                raise InvalidInputError("the key file is encrypted and no passphrase was given")
            key = pkcs8.decrypt_private_key(data, passphrase)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except InvalidInputError:
        raise
    except Exception:
        raise InvalidInputError("cannot read the key file (not a PEM private key, or a "
                                "wrong passphrase)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidInputError("the key is neither ECDSA nor RSA",
                                hint="CA keys are ECDSA P-256/P-384 or RSA-3072")
    return LocalSigner(key)


def adopt_key(keys: KeyStore, label: str, signer: LocalSigner) -> None:
    """Keep an imported CA's key in the home's file key store (a PKCS#11 home names a key
    already in its token instead)."""
    key = signer.private_key
    if not isinstance(keys, FileKeyStore) or not isinstance(
            key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidInputError("this home keeps its CA keys in a PKCS#11 token: import the "
                                "key into the token and give its label",
                                hint="'iotsec init --import-ca CERT --import-key-label LABEL'")
    keys.adopt(label, key)


def offline_root_crl(root: Authority, now: datetime, *, days: int = OFFLINE_ROOT_CRL_DAYS
                     ) -> tuple[bytes, datetime]:
    """The empty CRL an offline root publishes (number: ``now`` in Unix seconds, so a CRL
    signed later offline always has a higher one), valid for ``days``. Empty: iotsec
    retires CAs, it never revokes one."""
    if not 1 <= days <= 3 * 365:
        raise InvalidInputError("a root CRL is valid for 1 to 1095 days")
    moment = now.replace(microsecond=0)
    next_update = moment + timedelta(days=days)
    return build_crl(root, iter(()), number=ts(moment), this_update=moment,
                     next_update=next_update), next_update


def request_issuing(rt: Runtime, *, key_type: KeyType | None = None) -> CaRequest:
    """Step 1: a new issuing CA key in custody and its PKCS#10 request, kept pending."""
    now = rt.now()
    with reading(rt.engine) as conn:
        current = conn.execute(select(m.authorities.c.key_type).where(
            m.authorities.c.role == "issuing", m.authorities.c.state == "active")
            .order_by(m.authorities.c.id.desc()).limit(1)).scalar()
    kind = key_type or KeyType.parse(current or KeyType.ECDSA_P256.value)
    tag = secrets.token_hex(4)
    label = f"issuing-{tag}"
    signer = rt.keys.generate(label, kind)
    subject = issuing_subject(tag)
    csr = ca_request(signer, subject)
    spki = enc.spki_der(signer.public_key())
    with transaction(rt.engine) as conn:
        request_id = int(conn.execute(insert(m.ca_requests).values(
            key_label=label, key_type=kind.value,
            subject=x509.load_der_x509_csr(csr).subject.rfc4514_string(), csr_der=csr,
            spki_sha256=hashlib.sha256(spki).hexdigest(),
            created_at=ts(now)).returning(m.ca_requests.c.id)).scalar_one())
    rt.events.record(Event(now, "ca.request", "success", subject=label,
                           detail={"request": request_id}))
    return CaRequest(request_id, label, kind.value,
                     x509.load_der_x509_csr(csr).subject.rfc4514_string(), csr)


def sign_intermediate_offline(*, root_key: bytes | Signer, passphrase: bytes,
                              root_cert: bytes, csr: bytes, now: datetime) -> bytes:
    """Step 2, offline and without a home: the issuing CA certificate (DER) for the PKCS#10
    ``csr``, signed with the root key (encrypted PKCS#8 under ``passphrase``, or a signer
    from :func:`root_token_signer`). The CSR's
    self-signature and key strength are checked, and the root certificate must match the
    key."""
    if len(csr) > MAX_CSR_BYTES:
        raise InvalidInputError(f"the CSR is larger than {MAX_CSR_BYTES} bytes")
    root = _offline_root(root_key, passphrase, root_cert)
    request = _parse_ca_csr(csr)
    KeyType.of(request.public_key())  # type: ignore[arg-type]
    return sign_intermediate(root, enc.spki_der(request.public_key()),
                             request.subject.public_bytes(), now)


@contextmanager
def root_token_signer(config: Pkcs11Config, key_label: str, *,
                      generate: KeyType | None = None) -> Iterator[Signer]:
    """The root key ``key_label`` in a PKCS#11 token of its own (``generate``: made there
    first, non-extractable), the token closed afterwards. The home's token never holds it."""
    # Deferred: python-pkcs11 is loaded only where a token is used (start-up time).
    from iotsec.custody.pkcs11 import Pkcs11KeyStore
    from iotsec.custody.pkcs11_token import connect

    token = connect(config)
    try:
        keys = Pkcs11KeyStore(token)
        yield keys.generate(key_label, generate) if generate is not None else keys.load(key_label)
    finally:
        token.close()


def _offline_root(root_key: bytes | Signer, passphrase: bytes, root_cert: bytes) -> Authority:
    signer = (root_key if not isinstance(root_key, bytes)
              else load_signing_key(root_key, passphrase))
    root_der = load_ca_certificate(root_cert).public_bytes(Encoding.DER)
    try:
        return Authority.from_der(root_der, signer)
    except PkiError:
        raise PkiError("the root certificate does not match the root key",
                       hint="give the root's own certificate with --root-cert") from None


def sign_root_crl_offline(*, root_key: bytes | Signer, passphrase: bytes, root_cert: bytes,
                          now: datetime, days: int = OFFLINE_ROOT_CRL_DAYS) -> bytes:
    """Offline, without a home: the offline root's next CRL (DER), for ``ca import-crl``."""
    return offline_root_crl(_offline_root(root_key, passphrase, root_cert), now, days=days)[0]


def import_root_crl(rt: Runtime, data: bytes) -> PublishedCrl:
    """Store a CRL signed offline by a CA whose key is offline (its root): refused, with
    nothing written, unless its signature verifies with that CA's key, its number is higher
    than the stored one, its thisUpdate is not in the future and its nextUpdate is."""
    if len(data) > MAX_CRL_IMPORT_BYTES:
        raise InvalidInputError(f"the CRL is larger than {MAX_CRL_IMPORT_BYTES} bytes")
    try:
        stripped = data.lstrip()
        crl = (x509.load_pem_x509_crl(stripped) if stripped.startswith(b"-----BEGIN")
               else x509.load_der_x509_crl(data))
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        this_update, next_update = crl.last_update_utc, crl.next_update_utc
    except (ValueError, x509.ExtensionNotFound):
        raise InvalidInputError("the file is not a PEM or DER CRL with a CRL number",
                                hint="make it with 'iotsec ca sign-crl'") from None
    now = rt.now()
    with reading(rt.engine) as conn:
        offline = conn.execute(select(m.authorities.c.id, m.authorities.c.cert_der).where(
            m.authorities.c.key_offline.is_(True))).all()
    issuer_id = None
    for row in offline:
        cert = x509.load_der_x509_certificate(bytes(row.cert_der))
        if cert.subject == crl.issuer and crl.is_signature_valid(
                cert.public_key()):  # type: ignore[arg-type]
            issuer_id = int(row.id)
    if issuer_id is None:
        raise CaImportError("the CRL is not signed by a CA of this home whose key is offline",
                            hint="sign it with the offline root ('iotsec ca sign-crl')")
    if next_update is None or next_update <= now or this_update > now + timedelta(minutes=5):
        raise CaImportError("the CRL is not current (thisUpdate in the future or nextUpdate "
                            "past)", hint="check the offline machine's clock and sign again")
    with transaction(rt.engine) as conn:
        stored = conn.execute(select(m.crls.c.number).where(
            m.crls.c.authority_id == issuer_id).with_for_update()).scalar()
        if stored is not None and number <= stored:
            raise CaImportError(f"the CRL's number {number} is not above the published "
                                f"{stored}: refusing to roll back")
        values = {"number": number, "this_update": ts(this_update),
                  "next_update": ts(next_update), "stale": False,
                  "der": crl.public_bytes(Encoding.DER)}
        if stored is None:
            conn.execute(insert(m.crls).values(authority_id=issuer_id, **values))
        else:
            conn.execute(update(m.crls).where(m.crls.c.authority_id == issuer_id)
                         .values(**values))
    rt.events.record(Event(now, "ca.crl-import", "success", subject=str(issuer_id),
                           detail={"number": number}))
    return PublishedCrl(der=crl.public_bytes(Encoding.DER), number=number,
                        this_update=this_update, next_update=next_update)


def _parse_ca_csr(data: bytes) -> x509.CertificateSigningRequest:
    try:
        stripped = data.lstrip()
        csr = (x509.load_pem_x509_csr(stripped) if stripped.startswith(b"-----BEGIN")
               else x509.load_der_x509_csr(data))
        valid = csr.is_signature_valid
        csr.subject.rfc4514_string()
    except Exception:
        raise InvalidInputError("the file is not a PEM or DER PKCS#10 request",
                                hint="make it with 'iotsec ca request'") from None
    if not valid:
        raise PkiError("the CSR's signature does not verify",
                       hint="the request was altered; make a new one with 'iotsec ca request'")
    return csr


def import_issuing(rt: Runtime, data: bytes) -> list[AuthorityRecord]:
    """Step 3: install a certificate signed for a pending request as the active issuing CA
    (the previous one becomes retiring). Refused, with nothing written, unless it is a CA
    allowed to sign certificates and CRLs, valid now, issued by the active root and
    certifying the key of a pending request. Returns the new CA, then the retiring one."""
    cert = load_ca_certificate(data)
    now = rt.now()
    spki = enc.spki_der(cert.public_key())
    digest = hashlib.sha256(spki).hexdigest()
    with reading(rt.engine) as conn:
        requests = conn.execute(select(m.ca_requests)).all()
        root = conn.execute(select(m.authorities.c.id, m.authorities.c.cert_der).where(
            m.authorities.c.role == "root", m.authorities.c.state == "active")
            .order_by(m.authorities.c.id.desc()).limit(1)).first()
    if root is None:
        raise NotFoundError("no active root CA", hint="run 'iotsec init'")
    pending = next((r for r in requests if hmac.compare_digest(r.spki_sha256, digest)), None)
    if pending is None:
        raise CaImportError("the certificate does not certify the key of any pending request",
                            hint="import the certificate signed for the CSR 'iotsec ca "
                            "request' wrote")
    check_ca_certificate(cert, issuer=x509.load_der_x509_certificate(bytes(root.cert_der)),
                         spki=spki, now=now)
    der = cert.public_bytes(Encoding.DER)
    signer = rt.keys.load(pending.key_label)
    Authority.from_der(der, signer)  # the key in custody is the certificate's
    with transaction(rt.engine) as conn:
        previous = conn.execute(select(m.authorities.c.id).where(
            m.authorities.c.role == "issuing", m.authorities.c.state == "active")
            .with_for_update()).scalars().all()
        if conn.execute(delete(m.ca_requests).where(
                m.ca_requests.c.id == pending.id)).rowcount != 1:
            raise CaImportError("the request was imported by another process meanwhile")
        set_state(conn, previous, "retiring", now)
        new_id = insert_authority(conn, role="issuing", parent_id=int(root.id),
                                  key_label=pending.key_label, key_type=pending.key_type,
                                  der=der, now=now)
    rt.authorities_changed()
    rt.events.record(Event(now, "ca.import", "success", subject=str(new_id),
                           detail={"retiring": list(previous), "request": pending.id}))
    return [get_authority(rt, new_id), *(get_authority(rt, int(i)) for i in previous)]
