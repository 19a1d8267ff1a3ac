"""Certificate use cases: issue (from a CSR or with server-side key generation), list,
revoke, renew. Each state change is one transaction: a crash leaves either the whole
certificate row or nothing, and a serial is the primary key, so it can never be reused."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from sqlalchemy import Connection, Row, bindparam, insert, or_, select, update

from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.errors import (
    AlreadyRevokedError,
    ConflictError,
    DeviceStateError,
    InfrastructureCertificateError,
    InvalidInputError,
    NotFoundError,
)
from iotsec.identity.registry import DeviceState, parse_device_id
from iotsec.pki import x509 as enc
from iotsec.pki.ca import Authority
from iotsec.pki.crl import RevocationReason, encode_entry
from iotsec.pki.csr import CheckedCsr, parse_csr
from iotsec.pki.issue import IssuedCertificate, issue_device
from iotsec.pki.keys import KeyType
from iotsec.pki.profiles import DEVICE, CertProfile
from iotsec.pki.serial import format_serial, parse_serial
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = [
    "MAX_BATCH",
    "MAX_GRACE",
    "MIN_P12_PASSPHRASE",
    "SHARED_KEY_HINT",
    "CertificateRecord",
    "DeviceKey",
    "KeygenBundle",
    "certificate_row",
    "chain_pem",
    "check_p12_passphrase",
    "device_profile",
    "ensure_revocable",
    "get_certificate",
    "issue_batch",
    "issue_from_csr",
    "issue_with_keygen",
    "keygen_bundle",
    "list_certificates",
    "locked_certificate",
    "mark_revoked",
    "renew",
    "revoke",
    "revoke_device",
    "revoke_device_certificates",
]

MAX_BATCH = 10_000
MAX_GRACE = timedelta(days=90)
MIN_P12_PASSPHRASE = 8
#: The private keys ``--keygen`` makes (see :class:`~iotsec.pki.keys.KeyType`).
DeviceKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    serial: str
    device_id: str | None
    kind: str
    profile: str
    subject: str
    not_before: datetime
    not_after: datetime
    sha256: str
    der: bytes
    revoked_at: datetime | None
    revocation_reason: RevocationReason | None
    replaced_by: str | None

    @property
    def pem(self) -> str:
        return x509.load_der_x509_certificate(self.der).public_bytes(
            serialization.Encoding.PEM).decode("ascii")

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.not_after <= now:
            return "expired"
        if self.revoked_at is not None:
            return "superseded"  # revocation scheduled at the end of a grace period
        return "valid"


def _record(r: Row[Any]) -> CertificateRecord:
    return CertificateRecord(
        serial=r.serial, device_id=r.device_id, kind=r.kind, profile=r.profile,
        subject=r.subject, not_before=from_ts(r.not_before), not_after=from_ts(r.not_after),
        sha256=r.sha256, der=r.der,
        revoked_at=from_ts(r.revoked_at) if r.revoked_at is not None else None,
        revocation_reason=RevocationReason(r.revocation_reason)
        if r.revocation_reason is not None else None,
        replaced_by=r.replaced_by)


def certificate_row(issued: IssuedCertificate, *, authority_id: int, device_id: str | None,
                kind: str, profile: str, now: int) -> dict[str, Any]:
    return {
        "serial": format_serial(issued.serial), "authority_id": authority_id,
        "device_id": device_id, "kind": kind, "profile": profile,
        "subject": issued.subject_cn, "not_before": ts(issued.not_before),
        "not_after": ts(issued.not_after), "sha256": issued.sha256, "der": issued.der,
        "created_at": now, "revoked_at": None, "revocation_reason": None, "crl_entry": None,
        "replaced_by": None, "spki_sha256": issued.spki_sha256,
    }


def _record_from_values(v: dict[str, Any]) -> CertificateRecord:
    return CertificateRecord(
        serial=v["serial"], device_id=v["device_id"], kind=v["kind"], profile=v["profile"],
        subject=v["subject"], not_before=from_ts(v["not_before"]),
        not_after=from_ts(v["not_after"]), sha256=v["sha256"], der=v["der"], revoked_at=None,
        revocation_reason=None, replaced_by=None)


_DEVICE_STATE = (select(m.devices.c.id, m.devices.c.state)
                 .where(m.devices.c.id == bindparam("id")).with_for_update())
_ACTIVATE = (update(m.devices)
             .where(m.devices.c.id == bindparam("device"),
                    m.devices.c.state == DeviceState.PENDING.value)
             .values(state=DeviceState.ACTIVE.value, updated_at=bindparam("now")))


def _lock_devices_for_issuance(conn: Connection, ids: Sequence[str], now: int) -> None:
    """Check every device exists and may hold certificates; pending ones become active."""
    id_list = sorted(set(ids))
    states: dict[str, str] = {}
    if len(id_list) == 1:
        states.update({r.id: r.state for r in conn.execute(_DEVICE_STATE, {"id": id_list[0]})})
    else:
        for i in range(0, len(id_list), 500):
            rows = conn.execute(select(m.devices.c.id, m.devices.c.state)
                                .where(m.devices.c.id.in_(id_list[i:i + 500])).with_for_update())
            states.update({r.id: r.state for r in rows})
    for device_id in id_list:
        state = states.get(device_id)
        if state is None:
            raise NotFoundError(f"device {device_id!r} is not registered",
                                hint="register it first with 'iotsec device add'")
        if not DeviceState(state).may_hold_certificates:
            raise DeviceStateError(f"device {device_id!r} is {state}; it cannot get a certificate",
                                   hint="only pending or active devices are issued certificates")
    pending = [{"device": d, "now": now} for d in id_list
               if states[d] == DeviceState.PENDING.value]
    if pending:
        conn.execute(_ACTIVATE, pending)


_INSERT_CERT = insert(m.certificates)
SHARED_KEY_HINT = ("generate a new key for this device, or revoke the other certificate; if "
                   "the devices really share one key, give --allow-shared-key (API: "
                   "allow_shared_key), which is recorded as a security event")


def _key_holders(conn: Connection, requests: Sequence[tuple[str, str]], now: int
                 ) -> dict[str, list[tuple[str, str | None]]]:
    """For each ``(device_id, spki_sha256)`` request, the *other* identities that hold the
    same key: ``serial -> [(holder serial, holder device)]`` of valid (unrevoked, unexpired)
    certificates of another device or a server, and earlier requests of this batch."""
    c = m.certificates.c
    wanted = sorted({h for _, h in requests})
    valid: dict[str, list[tuple[str, str | None]]] = {}
    for i in range(0, len(wanted), 500):
        rows = conn.execute(select(c.serial, c.device_id, c.spki_sha256).where(
            c.spki_sha256.in_(wanted[i:i + 500]), c.not_after > now,
            or_(c.revoked_at.is_(None), c.revoked_at > now)))
        for r in rows:
            valid.setdefault(r.spki_sha256, []).append((r.serial, r.device_id))
    shared: dict[str, list[tuple[str, str | None]]] = {}
    for device_id, digest in requests:
        others = [(serial, holder) for serial, holder in valid.get(digest, [])
                  if holder != device_id]
        if others:
            shared[device_id] = others
        valid.setdefault(digest, []).append(("(this request)", device_id))
    return shared


def _refuse_shared_keys(conn: Connection, requests: Sequence[tuple[str, str]], now: int,
                        *, allow: bool) -> dict[str, list[tuple[str, str | None]]]:
    """One key, one identity: refuse a key another device's (or a server's) valid
    certificate already certifies, unless ``allow``; returns what was shared."""
    shared = _key_holders(conn, requests, now)
    if shared and not allow:
        device_id, others = next(iter(shared.items()))
        serial, holder = others[0]
        whose = f"device {holder!r}" if holder is not None else "a server"
        where = ("another request of this batch" if serial == "(this request)"
                 else f"the valid certificate {serial} of {whose}")
        raise ConflictError(f"the public key in the CSR for {device_id!r} already belongs to "
                            f"{where}: one key must not hold two identities",
                            hint=SHARED_KEY_HINT)
    return shared


def _record_shared(rt: Runtime, issued: Sequence[dict[str, Any]],
                   shared: dict[str, list[tuple[str, str | None]]]) -> None:
    for values in issued:
        others = shared.get(values["device_id"])
        if others:
            rt.events.record(Event(rt.now(), "cert.shared-key", "success",
                                   actor=values["device_id"], subject=values["serial"],
                                   detail={"allow_shared_key": True,
                                           "spki_sha256": values["spki_sha256"],
                                           "shared_with": [
                                               {"serial": s, "device": d}
                                               for s, d in others[:20]]}))


def device_profile(rt: Runtime) -> CertProfile:
    """The device profile, with the DNS names the deployment configures
    (``IOTSEC_DEVICE_DNS_NAMES``, templates such as ``{device_id}.devices.example.com``)."""
    names = tuple(rt.settings.device_dns_names)
    return replace(DEVICE, dns_templates=names) if names else DEVICE


def issue_batch(rt: Runtime, requests: Sequence[tuple[str, bytes | CheckedCsr]], *,
                days: int | None = None, profile: CertProfile | None = None,
                before_commit: Callable[[], None] | None = None,
                allow_shared_key: bool = False) -> list[CertificateRecord]:
    """Issue one certificate per ``(device_id, csr)`` in a single transaction.

    Every CSR is checked before anything is written; one bad request refuses the batch. A
    key that another device's (or a server's) valid certificate already certifies is
    refused, unless ``allow_shared_key``: then each such issuance is a ``cert.shared-key``
    event naming the other holders. ``before_commit`` runs once everything is signed and
    written, before the commit: if it raises (or the process dies in it), nothing was
    issued.
    """
    if len(requests) > MAX_BATCH:
        raise InvalidInputError(f"a batch holds at most {MAX_BATCH} requests",
                                hint="split the requests into smaller batches")
    profile = profile or device_profile(rt)
    checked: list[tuple[str, CheckedCsr]] = []
    for device_id, csr in requests:
        parse_device_id(device_id)
        checked.append((device_id, csr if isinstance(csr, CheckedCsr) else parse_csr(csr)))
    ca = rt.authority("issuing")
    authority_id = rt.issuing_id()
    moment = rt.now()
    now = ts(moment)
    values = []
    with transaction(rt.engine) as conn:
        _lock_devices_for_issuance(conn, [d for d, _ in checked], now)
        shared = _refuse_shared_keys(
            conn, [(d, hashlib.sha256(c.spki).hexdigest()) for d, c in checked], now,
            allow=allow_shared_key)
        for device_id, csr_ok in checked:
            issued = issue_device(ca, device_id=device_id, spki=csr_ok.spki, profile=profile,
                                  now=moment, days=days, crl_url=rt.settings.crl_url)
            values.append(certificate_row(issued, authority_id=authority_id, device_id=device_id,
                                      kind="device", profile=profile.name, now=now))
        if values:
            conn.execute(_INSERT_CERT, values)
        if before_commit is not None:
            before_commit()
    _record_shared(rt, values, shared)
    return [_record_from_values(v) for v in values]


def issue_from_csr(rt: Runtime, device_id: str, csr: bytes, *, days: int | None = None,
                   profile: CertProfile | None = None,
                   allow_shared_key: bool = False) -> CertificateRecord:
    """Issue a client certificate for a registered device from its CSR."""
    return issue_batch(rt, [(device_id, csr)], days=days, profile=profile,
                       allow_shared_key=allow_shared_key)[0]


@dataclass(frozen=True)
class KeygenBundle:
    certificate: CertificateRecord
    key_pem: bytes
    pkcs12: bytes
    chain_pem: str


def issue_with_keygen(rt: Runtime, device_id: str, *, p12_passphrase: bytes,
                      key_type: KeyType = KeyType.ECDSA_P256,
                      days: int | None = None, key: DeviceKey | None = None,
                      save_key: Callable[[bytes], None] | None = None) -> KeygenBundle:
    """Generate the device's key here (for devices that cannot), issue, and hand both back.

    The private key is returned to the caller and not kept by iotsec. ``key`` certifies a
    key made earlier instead (one saved by an interrupted run). ``save_key`` receives the
    key (PKCS#8 PEM) after the certificate is signed and before it is committed: when it
    fails, or the process dies in it, nothing was issued, so a valid certificate whose
    private key was never saved cannot exist.
    """
    check_p12_passphrase(p12_passphrase)
    key = key_type.generate() if key is None else key
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    spki = enc.spki_der(key.public_key())
    before_commit = None if save_key is None else (lambda: save_key(key_pem))
    record = issue_batch(rt, [(device_id, CheckedCsr(public_key=key.public_key(), spki=spki,
                                                     requested_subject=""))], days=days,
                         before_commit=before_commit)[0]
    return keygen_bundle(rt, record, key, p12_passphrase)


def check_p12_passphrase(p12_passphrase: bytes) -> None:
    """Refuse a PKCS#12 passphrase shorter than :data:`MIN_P12_PASSPHRASE`."""
    if len(p12_passphrase) < MIN_P12_PASSPHRASE:
        raise InvalidInputError(f"the PKCS#12 passphrase needs at least {MIN_P12_PASSPHRASE} "
                                "characters")


def keygen_bundle(rt: Runtime, record: CertificateRecord, key: DeviceKey,
                  p12_passphrase: bytes) -> KeygenBundle:
    """The files handed out for ``record`` and its private ``key``: the key, a PKCS#12
    (key, certificate and issuing CA) under ``p12_passphrase``, and the chain."""
    check_p12_passphrase(p12_passphrase)
    cert = x509.load_der_x509_certificate(record.der)
    issuing = rt.authority("issuing")
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                  .kdf_rounds(100_000)
                  .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                  .hmac_hash(hashes.SHA256())
                  .build(p12_passphrase))
    p12 = pkcs12.serialize_key_and_certificates(
        name=(record.device_id or record.subject).encode("utf-8"), key=key, cert=cert,
        cas=[issuing.certificate], encryption_algorithm=encryption)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return KeygenBundle(certificate=record, key_pem=key_pem, pkcs12=p12,
                        chain_pem=chain_pem(rt))


def chain_pem(rt: Runtime) -> str:
    """The issuing chain, intermediate first, then the root."""
    return "".join(a.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
                   for a in (rt.authority("issuing"), rt.authority("root")))


def get_certificate(rt: Runtime, serial: str) -> CertificateRecord:
    key = format_serial(parse_serial(serial))
    with reading(rt.engine) as conn:
        row = conn.execute(select(m.certificates).where(m.certificates.c.serial == key)).first()
    if row is None:
        raise NotFoundError(f"no certificate with serial {key}",
                            hint="list certificates with 'iotsec cert list'")
    return _record(row)


def list_certificates(rt: Runtime, *, device_id: str | None = None,
                      expiring_within: timedelta | None = None,
                      limit: int = 1000) -> list[CertificateRecord]:
    """Certificates, newest first; with ``expiring_within``, the unrevoked ones that expire
    in that window, soonest first (an index range scan on ``not_after``)."""
    if not 1 <= limit <= 100_000:
        raise InvalidInputError("limit must be between 1 and 100000")
    c = m.certificates.c
    query = select(m.certificates).limit(limit)
    if device_id is not None:
        query = query.where(c.device_id == parse_device_id(device_id))
    now = ts(rt.now())
    if expiring_within is not None:
        query = (query.where(c.not_after > now,
                             c.not_after <= now + int(expiring_within.total_seconds()),
                             or_(c.revoked_at.is_(None), c.revoked_at > now))
                 .order_by(c.not_after))
    else:
        query = query.order_by(c.created_at.desc(), c.serial)
    with reading(rt.engine) as conn:
        return [_record(r) for r in conn.execute(query)]


def mark_revoked(conn: Connection, serial: str, when: datetime, reason: RevocationReason,
                 authority_id: int, replaced_by: str | None = None) -> None:
    """Within ``conn``'s transaction: mark one certificate revoked (its CRL entry encoded
    now) and its authority's CRL stale."""
    values: dict[str, Any] = {
        "revoked_at": ts(when), "revocation_reason": int(reason),
        "crl_entry": encode_entry(int(serial, 16), when, reason)}
    if replaced_by is not None:
        values["replaced_by"] = replaced_by
    conn.execute(update(m.certificates).where(m.certificates.c.serial == serial).values(values))
    conn.execute(update(m.crls).where(m.crls.c.authority_id == authority_id).values(stale=True))


def locked_certificate(conn: Connection, serial: str) -> Row[Any]:
    """The certificate row, locked for the rest of the transaction, or NotFoundError."""
    row = conn.execute(select(m.certificates).where(m.certificates.c.serial == serial)
                       .with_for_update()).first()
    if row is None:
        raise NotFoundError(f"no certificate with serial {serial}",
                            hint="list certificates with 'iotsec cert list'")
    return row


def ensure_revocable(row: Row[Any], now: int) -> None:
    """Refuse a certificate whose revocation has already taken effect."""
    if row.revoked_at is not None and row.revoked_at <= now:
        reason = RevocationReason(row.revocation_reason).name
        raise AlreadyRevokedError(f"certificate {row.serial} is already revoked ({reason})",
                                  serial=row.serial, reason=reason)


def revoke(rt: Runtime, serial: str, reason: RevocationReason = RevocationReason.unspecified
           ) -> CertificateRecord:
    """Revoke one device certificate. A certificate superseded with a grace period can be
    revoked at once (e.g. for keyCompromise).

    iotsec's own certificates (those of no device: the API's and the broker's server
    certificates, the broker's probe and canary) are refused: revoked alone, the probe
    would make every broker sync fail its check and roll back, freezing the broker's CRL.
    They are replaced with :func:`iotsec.app.broker.infrastructure.replace_infrastructure`.
    """
    key = format_serial(parse_serial(serial))
    moment = rt.now().replace(microsecond=0)
    with transaction(rt.engine) as conn:
        row = locked_certificate(conn, key)
        if row.device_id is None:
            raise InfrastructureCertificateError(
                f"certificate {key} is iotsec's own {row.kind} certificate, not a device's: "
                "it is not revoked through the device commands and routes",
                hint=f"an admin replaces it with 'iotsec cert revoke {key} --infrastructure' "
                f"(or POST /v1/infrastructure/certificates/{key}/revoke), which revokes it "
                "and issues its replacement at once")
        ensure_revocable(row, ts(moment))
        mark_revoked(conn, key, moment, reason, row.authority_id)
    return get_certificate(rt, key)


def revoke_device(rt: Runtime, device_id: str,
                  reason: RevocationReason = RevocationReason.unspecified) -> list[str]:
    """Revoke every certificate of a device that is not revoked yet; returns their serials."""
    device_id = parse_device_id(device_id)
    moment = rt.now().replace(microsecond=0)
    now = ts(moment)
    with transaction(rt.engine) as conn:
        return revoke_device_certificates(conn, device_id, moment, reason, now)


def revoke_device_certificates(conn: Connection, device_id: str, moment: datetime,
                               reason: RevocationReason,
                now: int) -> list[str]:
    if conn.execute(select(m.devices.c.id).where(m.devices.c.id == device_id)).first() is None:
        raise NotFoundError(f"device {device_id!r} is not registered",
                            hint="check the id with 'iotsec device list'")
    c = m.certificates.c
    rows = conn.execute(select(c.serial, c.authority_id).where(
        c.device_id == device_id, or_(c.revoked_at.is_(None), c.revoked_at > now),
        c.not_after > now).with_for_update()).all()
    for row in rows:
        mark_revoked(conn, row.serial, moment, reason, row.authority_id)
    return [r.serial for r in rows]


def renew(rt: Runtime, serial: str, csr: bytes, *, days: int | None = None,
          grace: timedelta | None = None, allow_shared_key: bool = False
          ) -> CertificateRecord:
    """Issue a new certificate for the same device from a new CSR and supersede the old one:
    revoked with reason ``superseded`` now, or when ``grace`` has passed. The new key may be
    the old one, but not another identity's (see :func:`issue_batch`)."""
    if grace is not None and not timedelta(0) <= grace <= MAX_GRACE:
        raise InvalidInputError(f"the grace period must be between 0 and {MAX_GRACE.days} days")
    key = format_serial(parse_serial(serial))
    checked = parse_csr(csr)
    ca: Authority = rt.authority("issuing")
    authority_id = rt.issuing_id()
    moment = rt.now().replace(microsecond=0)
    now = ts(moment)
    with transaction(rt.engine) as conn:
        old = locked_certificate(conn, key)
        if old.revoked_at is not None and old.revoked_at <= now:
            raise ConflictError(f"certificate {key} is revoked and can never be renewed",
                                hint="issue a new certificate with 'iotsec cert issue'")
        if old.replaced_by is not None:
            raise ConflictError(f"certificate {key} was already renewed as {old.replaced_by}",
                                hint=f"renew {old.replaced_by} instead")
        if old.device_id is None:
            raise ConflictError(f"certificate {key} does not belong to a device",
                                hint="only device certificates are renewed this way")
        _lock_devices_for_issuance(conn, [old.device_id], now)
        shared = _refuse_shared_keys(
            conn, [(old.device_id, hashlib.sha256(checked.spki).hexdigest())], now,
            allow=allow_shared_key)
        issued = issue_device(ca, device_id=old.device_id, spki=checked.spki,
                              profile=device_profile(rt),
                              now=moment, days=days, crl_url=rt.settings.crl_url)
        values = certificate_row(issued, authority_id=authority_id, device_id=old.device_id,
                             kind="device", profile=old.profile, now=now)
        conn.execute(insert(m.certificates).values(values))
        mark_revoked(conn, key, moment + (grace or timedelta(0)), RevocationReason.superseded,
                      old.authority_id, replaced_by=values["serial"])
    _record_shared(rt, [values], shared)
    return _record_from_values(values)
