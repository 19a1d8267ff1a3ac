"""Issuing device certificates: a batch of CSRs in one transaction, one CSR, or a renewal
that supersedes the old certificate. Each is one transaction: a crash leaves either the
whole certificate row or nothing, and a serial is the primary key, so it can never be
reused. One key holds one identity: a key another device's valid certificate already
certifies is refused unless the caller allows it, and then recorded."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypedDict

from sqlalchemy import bindparam, insert, or_, select, update

from iotsec.app.events import Event, append_events
from iotsec.app.pki.cert_records import (
    CertificateRecord,
    certificate_row,
    locked_certificate,
    record_from_row,
)
from iotsec.app.pki.crl_urls import (
    ca_certificate_url,
    complete_crl_url,
    partition_crl_url,
    partitions_enabled,
)
from iotsec.app.pki.profiles import device_profile, load_profile, profiles_for
from iotsec.app.pki.revocation import mark_revoked
from iotsec.app.runtime import Runtime
from iotsec.config import Settings
from iotsec.errors import (
    ConflictError,
    DeviceStateError,
    InvalidInputError,
    NotFoundError,
    ProfileRefusedError,
)
from iotsec.identity.registry import DeviceState, parse_device_id
from iotsec.pki.ca import Authority
from iotsec.pki.crl import RevocationReason, crl_partition
from iotsec.pki.csr import CheckedCsr, parse_csr
from iotsec.pki.issue import IssuedCertificate, issue_device
from iotsec.pki.profiles import CertProfile
from iotsec.pki.serial import format_serial, parse_serial, random_serial
from iotsec.store import models as m
from iotsec.store.db import driver_transaction, transaction
from iotsec.store.direct import Direct, Unit, core
from iotsec.timeutil import ts

__all__ = [
    "MAX_BATCH", "MAX_GRACE", "SHARED_KEY_HINT", "RevocationUrls", "device_profile",
    "issue_batch", "issue_from_csr", "issue_in", "issue_prepared", "record_shared", "renew",
    "renew_in", "revocation_urls"
]

MAX_BATCH = 10_000
MAX_GRACE = timedelta(days=90)


_DEVICE_STATE = (select(m.devices.c.id, m.devices.c.state, m.devices.c.attributes)
                 .where(m.devices.c.id == bindparam("id")).with_for_update())
_ACTIVATE = (update(m.devices)
             .where(m.devices.c.id == bindparam("device"),
                    m.devices.c.state == DeviceState.PENDING.value)
             .values(state=DeviceState.ACTIVE.value, updated_at=bindparam("now")))


# One certificate per call runs its statements on the driver (iotsec.store.direct): through
# SQLAlchemy each costs more than the database's work.
_ONE_DEVICE_STATE = Direct(_DEVICE_STATE)
_ONE_ACTIVATE = Direct(_ACTIVATE)


def _lock_devices_for_issuance(conn: Unit, ids: Sequence[str], now: int
                               ) -> dict[str, str]:
    """Check every device exists and may hold certificates; pending ones become active.
    Returns each device's attributes (JSON), which a profile may take DNS names from."""
    attributes, pending = _locked_devices(conn, ids)
    _activate(conn, pending, now)
    return attributes


def _locked_devices(conn: Unit, ids: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Lock the devices and check that each exists and may hold certificates; returns each
    one's attributes and the pending ones (to activate once the issuance is sure)."""
    id_list = sorted(set(ids))
    states: dict[str, str] = {}
    attributes: dict[str, str] = {}
    if len(id_list) == 1:
        rows = _ONE_DEVICE_STATE.rows(conn, {"id": id_list[0]})
    else:
        rows = []
        for i in range(0, len(id_list), 500):
            rows += core(conn).execute(
                select(m.devices.c.id, m.devices.c.state, m.devices.c.attributes)
                .where(m.devices.c.id.in_(id_list[i:i + 500])).with_for_update()).all()
    for r in rows:
        states[r.id] = r.state
        attributes[r.id] = r.attributes
    for device_id in id_list:
        state = states.get(device_id)
        if state is None:
            raise NotFoundError(f"device {device_id!r} is not registered",
                                hint="register it first with 'iotsec device add'")
        if not DeviceState(state).may_hold_certificates:
            raise DeviceStateError(f"device {device_id!r} is {state}; it cannot get a certificate",
                                   hint="only pending or active devices are issued certificates")
    return attributes, [d for d in id_list if states[d] == DeviceState.PENDING.value]


def _activate(conn: Unit, pending: Sequence[str], now: int) -> None:
    if len(pending) == 1:
        _ONE_ACTIVATE.execute(conn, {"device": pending[0], "now": now}).close()
    elif pending:
        core(conn).execute(_ACTIVATE, [{"device": d, "now": now} for d in pending])


_INSERT_CERT = insert(m.certificates)
_ONE_INSERT_CERT = Direct(insert(m.certificates).values(
    {c.name: bindparam(c.name) for c in m.certificates.c}))
SHARED_KEY_HINT = ("generate a new key for this device, or revoke the other certificate; if "
                   "the devices really share one key, give --allow-shared-key (API: "
                   "allow_shared_key), which is recorded as a security event")


_C = m.certificates.c
_ONE_KEY_HOLDERS = Direct(select(_C.serial, _C.device_id, _C.spki_sha256).where(
    _C.spki_sha256 == bindparam("spki"), _C.not_after > bindparam("now"),
    or_(_C.revoked_at.is_(None), _C.revoked_at > bindparam("now"))))


def _key_holders(conn: Unit, requests: Sequence[tuple[str, str]], now: int
                 ) -> dict[str, list[tuple[str, str | None]]]:
    """For each ``(device_id, spki_sha256)`` request, the *other* identities that hold the
    same key: ``serial -> [(holder serial, holder device)]`` of valid (unrevoked, unexpired)
    certificates of another device or a server, and earlier requests of this batch."""
    c = m.certificates.c
    wanted = sorted({h for _, h in requests})
    valid: dict[str, list[tuple[str, str | None]]] = {}
    if len(wanted) == 1:
        for r in _ONE_KEY_HOLDERS.rows(conn, {"spki": wanted[0], "now": now}):
            valid.setdefault(r.spki_sha256, []).append((r.serial, r.device_id))
        wanted = []
    for i in range(0, len(wanted), 500):
        rows = core(conn).execute(select(c.serial, c.device_id, c.spki_sha256).where(
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


def _refuse_shared_keys(conn: Unit, requests: Sequence[tuple[str, str]], now: int,
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


def record_shared(rt: Runtime, issued: Sequence[dict[str, Any]],
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


def _sign(rt: Runtime, ca: Authority, device_id: str, csr_ok: CheckedCsr, profile: CertProfile,
          attributes: str, moment: datetime, days: int | None, *, serial: int,
          urls: RevocationUrls) -> IssuedCertificate:
    """Check the request against its profile (key type, validity, DNS names) and sign with
    ``serial``, naming the revocation pointers ``urls`` (see :func:`_crl_placement`)."""
    profile.check_key(csr_ok.public_key)
    return issue_device(ca, device_id=device_id, spki=csr_ok.spki, profile=profile, now=moment,
                        days=days, serial=serial,
                        attributes=json.loads(attributes) if profile.dns_attributes else None,
                        **urls)


class RevocationUrls(TypedDict):
    """The revocation pointers :func:`iotsec.pki.issue.issue_device` takes."""

    crl_url: str | None
    ocsp_url: str | None
    ca_issuers_url: str | None


def revocation_urls(settings: Settings, authority_id: int) -> RevocationUrls:
    """Where relying parties learn of a revocation of a certificate the CA ``authority_id``
    signs, as :func:`iotsec.pki.issue.issue_device` takes them: under IOTSEC_PUBLIC_URL,
    its /ocsp (AIA OCSP), /ca/<id>.der (AIA caIssuers) and /crl?ca=<id> (CRL distribution
    point); IOTSEC_CRL_URL, when set, is the CRL's base instead (see
    :mod:`iotsec.app.pki.crl_urls`)."""
    base = settings.public_base
    return RevocationUrls(crl_url=complete_crl_url(settings, authority_id),
                          ocsp_url=f"{base}/ocsp" if base else None,
                          ca_issuers_url=ca_certificate_url(settings, authority_id))


def issue_batch(rt: Runtime, requests: Sequence[tuple[str, bytes | CheckedCsr]], *,
                days: int | None = None, profile: str | None = None,
                before_commit: Callable[[], None] | None = None,
                allow_shared_key: bool = False, actor: str | None = None
                ) -> list[CertificateRecord]:
    """Issue one certificate per ``(device_id, csr)`` in a single transaction.

    Every CSR is checked before anything is written; one bad request refuses the batch. A
    key that another device's (or a server's) valid certificate already certifies is
    refused, unless ``allow_shared_key``: then each such issuance is a ``cert.shared-key``
    event naming the other holders. ``before_commit`` runs once everything is signed and
    written, before the commit: if it raises (or the process dies in it), nothing was
    issued. ``profile`` names the profile of every certificate; without it, each device's
    profile is resolved (:func:`iotsec.app.pki.profiles.profiles_for`).
    """
    if len(requests) > MAX_BATCH:
        raise InvalidInputError(f"a batch holds at most {MAX_BATCH} requests",
                                hint="split the requests into smaller batches")
    checked: list[tuple[str, CheckedCsr]] = []
    for device_id, csr in requests:
        parse_device_id(device_id)
        checked.append((device_id, csr if isinstance(csr, CheckedCsr) else parse_csr(csr)))
    rt.authority("issuing")  # loaded before the transaction: a first load reads the store
    moment = rt.now()
    # One request runs only statements on the driver: its unit of work is held on the
    # driver's connection too, without SQLAlchemy's connection, pool and transaction
    # objects, which cost more than its statements. A batch runs Core statements.
    unit = driver_transaction if len(checked) == 1 else transaction
    with rt.events.held() as signatures, unit(rt.engine) as conn:
        values, shared = _issue(conn, rt, checked, moment, days=days, profile=profile,
                                allow_shared_key=allow_shared_key)
        # In the chain with the certificates, last in the unit of work (the chain lock):
        # the CA key's uses (key.use) and the issuances commit with the rows.
        append_events(conn, [*signatures.take(), *(
            Event(moment, "cert.issued", "success", actor=actor, subject=v["serial"],
                  detail={"device": v["device_id"], "profile": v["profile"],
                          "not_after": v["not_after"]}).row() for v in values)])
        if before_commit is not None:
            before_commit()
    record_shared(rt, values, shared)
    return [record_from_row(v) for v in values]


def _crl_placement(rt: Runtime, authority_id: int) -> tuple[int, int | None, RevocationUrls]:
    """A new device certificate's serial, its CRL partition (None while partitioning is
    off) and its revocation pointers, whose CRL distribution point is the partition's CRL
    when partitioning is on, else the complete CRL's (:func:`revocation_urls`)."""
    serial = random_serial()
    urls = revocation_urls(rt.settings, authority_id)
    if not partitions_enabled(rt.settings):
        return serial, None, urls
    partition = crl_partition(serial, rt.settings.crl_partitions)
    urls["crl_url"] = partition_crl_url(rt.settings, partition, authority_id)
    return serial, partition, urls


def _issue(conn: Unit, rt: Runtime, checked: Sequence[tuple[str, CheckedCsr]],
           moment: datetime, *, days: int | None, profile: str | None,
           allow_shared_key: bool, fallback: str | None = None,
           registered: Mapping[str, str] | None = None
           ) -> tuple[list[dict[str, Any]], dict[str, list[tuple[str, str | None]]]]:
    ca = rt.authority("issuing")
    authority_id = rt.issuing_id()
    now = ts(moment)
    ids = [d for d, _ in checked]
    # Every check that can refuse (here, and the profile's in signing) comes before the
    # first write: a refused request leaves nothing behind, even in a transaction that goes
    # on (a group commit's).
    if registered is not None and registered.keys() >= set(ids):
        # Devices the caller's unit of work registered, active, just now: their rows are
        # this transaction's own, and their attributes are those it wrote.
        attributes: dict[str, str] = dict(registered)
        pending: list[str] = []
    else:
        attributes, pending = _locked_devices(conn, ids)
    profiles = profiles_for(conn, rt, ids, explicit=profile, fallback=fallback)
    shared = _refuse_shared_keys(
        conn, [(d, hashlib.sha256(c.spki).hexdigest()) for d, c in checked], now,
        allow=allow_shared_key)
    values = []
    for device_id, csr_ok in checked:
        chosen = profiles[device_id]
        serial, partition, urls = _crl_placement(rt, authority_id)
        issued = _sign(rt, ca, device_id, csr_ok, chosen, attributes[device_id], moment, days,
                       serial=serial, urls=urls)
        values.append(certificate_row(issued, authority_id=authority_id, device_id=device_id,
                                      kind="device", profile=chosen.name, now=now,
                                      crl_partition=partition))
    _activate(conn, pending, now)
    if len(values) == 1:
        _ONE_INSERT_CERT.execute(conn, values[0]).close()
    elif values:
        core(conn).execute(_INSERT_CERT, values)
    return values, shared


def issue_prepared(conn: Unit, rt: Runtime, device_id: str, csr: CheckedCsr,
                   moment: datetime, *, days: int | None, profile: str | None,
                   allow_shared_key: bool
                   ) -> tuple[dict[str, Any], dict[str, list[tuple[str, str | None]]]]:
    """Issue one certificate inside the caller's transaction and return its row and the
    other holders of its key (when ``allow_shared_key`` let it through), for a caller that
    appends the events itself (:mod:`iotsec.app.pki.group_issuance`). A refusal raises
    before anything is written."""
    values, shared = _issue(conn, rt, [(device_id, csr)], moment, days=days, profile=profile,
                            allow_shared_key=allow_shared_key)
    return values[0], shared


def issue_in(conn: Unit, rt: Runtime, device_id: str, csr: CheckedCsr, *,
             moment: datetime, fallback: str | None = None,
             registered: Mapping[str, str] | None = None) -> CertificateRecord:
    """Issue one certificate inside the caller's transaction (a use case that registers
    the device, or consumes a credential, in the same unit of work). A key that another
    identity holds is refused; the caller has loaded the issuing CA before opening the
    transaction. ``fallback`` is the profile used when neither the device nor its groups
    select one (an enrolment template's). ``registered``: the caller registered the device
    in this transaction, active, with these attributes (its row is neither read again nor
    activated)."""
    device_id = parse_device_id(device_id)
    values, _ = _issue(conn, rt, [(device_id, csr)], moment, days=None, profile=None,
                       allow_shared_key=False, fallback=fallback,
                       registered=None if registered is None else {
                           device_id: json.dumps(dict(registered), sort_keys=True)})
    return record_from_row(values[0])


def issue_from_csr(rt: Runtime, device_id: str, csr: bytes, *, days: int | None = None,
                   profile: str | None = None, allow_shared_key: bool = False,
                   actor: str | None = None) -> CertificateRecord:
    """Issue a client certificate for a registered device from its CSR."""
    return issue_batch(rt, [(device_id, csr)], days=days, profile=profile, actor=actor,
                       allow_shared_key=allow_shared_key)[0]


def renew_in(conn: Unit, rt: Runtime, key: str, checked: CheckedCsr, moment: datetime,
             *, days: int | None, grace: timedelta | None, allow_shared_key: bool,
             actor: str | None
             ) -> tuple[dict[str, Any], dict[str, list[tuple[str, str | None]]],
                        dict[str, Any]]:
    """:func:`renew` inside the caller's transaction (the certificate ``key``, a formatted
    serial): the new certificate's row, the other holders of its key, and the
    ``cert.renewed`` event row for the caller to append (after the CA signature's held
    ``key.use``). The caller has loaded the issuing CA before opening the transaction."""
    ca: Authority = rt.authority("issuing")
    authority_id = rt.issuing_id()
    now = ts(moment)
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
    attributes = _lock_devices_for_issuance(conn, [old.device_id], now)
    try:
        profile = load_profile(conn, rt, old.profile)
    except (NotFoundError, InvalidInputError):
        raise ProfileRefusedError(
            f"certificate {key} was issued under the profile {old.profile!r}, which no "
            "longer exists", hint="add the profile again ('iotsec profile add'), or issue "
            "a new certificate under another one ('iotsec cert issue --profile')") from None
    shared = _refuse_shared_keys(
        conn, [(old.device_id, hashlib.sha256(checked.spki).hexdigest())], now,
        allow=allow_shared_key)
    new_serial, partition, urls = _crl_placement(rt, authority_id)
    issued = _sign(rt, ca, old.device_id, checked, profile, attributes[old.device_id],
                   moment, days, serial=new_serial, urls=urls)
    values = certificate_row(issued, authority_id=authority_id, device_id=old.device_id,
                             kind="device", profile=old.profile, now=now,
                             crl_partition=partition)
    _ONE_INSERT_CERT.execute(conn, values).close()
    mark_revoked(conn, key, moment + (grace or timedelta(0)), RevocationReason.superseded,
                 old.authority_id, replaced_by=values["serial"], now=moment)
    renewed = Event(moment, "cert.renewed", "success", actor=actor,
                    subject=values["serial"], detail={
                        "device": old.device_id, "replaces": key,
                        "grace_seconds": int((grace or timedelta(0)).total_seconds())})
    return values, shared, renewed.row()


def renew(rt: Runtime, serial: str, csr: bytes | CheckedCsr, *, days: int | None = None,
          grace: timedelta | None = None, allow_shared_key: bool = False,
          actor: str | None = None) -> CertificateRecord:
    """Issue a new certificate for the same device from a new CSR and supersede the old one:
    revoked with reason ``superseded`` now, or when ``grace`` has passed. The new key may be
    the old one, but not another identity's (see :func:`issue_batch`). The new certificate
    has the old one's profile, checked as at issuance (a profile removed since refuses)."""
    if grace is not None and not timedelta(0) <= grace <= MAX_GRACE:
        raise InvalidInputError(f"the grace period must be between 0 and {MAX_GRACE.days} days")
    key = format_serial(parse_serial(serial))
    checked = csr if isinstance(csr, CheckedCsr) else parse_csr(csr)
    rt.authority("issuing")  # loaded before the transaction: a first load reads the store
    moment = rt.now().replace(microsecond=0)
    with rt.events.held() as signatures, transaction(rt.engine) as conn:
        values, shared, renewed = renew_in(conn, rt, key, checked, moment, days=days,
                                           grace=grace, allow_shared_key=allow_shared_key,
                                           actor=actor)
        append_events(conn, [*signatures.take(), renewed])
    record_shared(rt, [values], shared)
    return record_from_row(values)
