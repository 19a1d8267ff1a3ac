"""The EST flows (RFC 7030): CA certificates, CSR attributes, enrolment with a bootstrap
secret or a claim certificate, re-enrolment with the device's own certificate, server-side
key generation, and an operator's approval of a device that waits for it.

Each flow is one unit of work and one security event (``est.enrolled``, ``est.pending``,
``est.reenrolled``, ``est.serverkeygen``, ``est.refused``, ``est.approved``) naming the
source address and the credential used (a secret's id, a claim CA and serial, a
certificate serial; never a secret, never a key). Concurrent enrolments of a serving
process share one transaction (the group commit of :mod:`iotsec.app.pki.group_issuance`),
each in a savepoint of its own, each answered after the commit. The identity in a
certificate comes from the registry or the template, never from the CSR. Failed attempts
are throttled per source, with the same throttle as the API's credentials.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError

from iotsec.app.enrol.credentials import (
    BasicCredential,
    ClientChain,
    Credential,
    CredentialUse,
    SecretUse,
    Subject,
    claim_use,
    describe,
)
from iotsec.app.enrol.renewal import issued_here, key_like, renewal_in
from iotsec.app.enrol.templates import get_template
from iotsec.app.events import Event
from iotsec.app.identity.bindings import policy_changed
from iotsec.app.identity.devices import NewDevice, get_device, insert_devices, set_state
from iotsec.app.pki.authorities import trusted_certificates
from iotsec.app.pki.cert_records import CertificateRecord, record_from_row
from iotsec.app.pki.group_issuance import (
    Unit,
    run_grouped_async,
    run_grouped_on_driver,
)
from iotsec.app.pki.issuance import SHARED_KEY_HINT, issue_in, renew_in
from iotsec.app.pki.profiles import load_profile
from iotsec.app.runtime import Runtime
from iotsec.app.throttle import failure_throttle
from iotsec.errors import (
    ConflictError,
    DeviceStateError,
    EnrolmentAuthError,
    EnrolmentForbiddenError,
    IotsecError,
    NotFoundError,
)
from iotsec.identity.enrolment import Template, parse_template_name
from iotsec.identity.registry import Device, DeviceState, parse_device_id
from iotsec.pki.csr import CheckedCsr, parse_csr
from iotsec.pki.est import certs_only, csr_attributes
from iotsec.pki.keys import KeyType
from iotsec.pki.x509 import spki_der
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.store.direct import Direct
from iotsec.store.direct import Unit as StoreUnit
from iotsec.store.failures import unique_violation
from iotsec.timeutil import ts

__all__ = [
    "BasicCredential", "ClientChain", "Credential", "Issued", "Pending", "approve", "cacerts",
    "csrattrs", "enrol", "enrol_async", "reenrol", "reenrol_async", "serverkeygen"
]

_T = TypeVar("_T")
#: What a client learns of a refused credential; the event says why.
_NOT_VALID = "the enrolment credential is not valid"
_KEY_HELD = "the key in the request already belongs to another identity"


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate issued over EST, and the certs-only PKCS#7 (DER) that carries it."""

    record: CertificateRecord
    chain_der: bytes


@dataclass(frozen=True, slots=True)
class Pending:
    """The device waits for an operator's approval: ask again with the same credential and
    key after ``retry_after`` seconds."""

    device_id: str
    retry_after: int


@dataclass(frozen=True, slots=True)
class _Request:
    proof: CheckedCsr  # the CSR the client sent: its key proves who asked
    certified: CheckedCsr  # the key the certificate certifies (the CSR's, or one made here)
    subject: Subject
    label: str | None
    source: str | None
    moment: datetime
    kind: str  # the event a success records

    @property
    def spki_sha256(self) -> str:
        return hashlib.sha256(self.proof.spki).hexdigest()


def _csr_subject(proof: CheckedCsr) -> Subject:
    """What a template may take the device's id from: the CSR's CN and serialNumber (the
    subject :func:`~iotsec.pki.csr.parse_csr` read, not parsed again)."""
    name = proof.name if proof.name is not None else x509.Name([])

    def first(oid: x509.ObjectIdentifier) -> str | None:
        values = name.get_attributes_for_oid(oid)
        return str(values[0].value) if values else None

    return Subject(cn=first(x509.NameOID.COMMON_NAME),
                   serial_number=first(x509.NameOID.SERIAL_NUMBER))


def _request(rt: Runtime, csr_der: bytes, *, label: str | None, source: str | None,
             kind: str, certified: CheckedCsr | None = None) -> _Request:
    proof = parse_csr(csr_der)
    if label is not None:
        parse_template_name(label)
    return _Request(proof=proof, certified=certified or proof, subject=_csr_subject(proof),
                    label=label, source=source, moment=rt.now().replace(microsecond=0),
                    kind=kind)


def _refused(rt: Runtime, operation: str, credential: str, source: str | None,
             exc: IotsecError) -> None:
    reason = str(exc) if exc.__cause__ is None else f"{exc}: {exc.__cause__}"
    rt.events.record(Event(rt.now(), "est.refused", "failure", source=source,
                           subject=operation,
                           detail={"credential": credential, "reason": reason[:500],
                                   "error": exc.code}))


@contextmanager
def _guard(rt: Runtime, operation: str, credential: Credential, source: str | None
           ) -> Iterator[None]:
    """Around a flow for ``source``: refused while throttled; a refusal is an event and
    counts against the source; a refused credential is named to the client by one
    generic message."""
    where = source or "unknown"
    throttle = failure_throttle(rt)
    throttle.check(where)
    try:
        yield
    except IotsecError as exc:
        if _failed(rt, operation, credential, source, exc):
            raise EnrolmentAuthError(_NOT_VALID) from None
        raise
    throttle.succeeded(where)


def _guarded(rt: Runtime, operation: str, credential: Credential, source: str | None,
             run: Callable[[], _T]) -> _T:
    """``run()`` inside :func:`_guard`."""
    with _guard(rt, operation, credential, source):
        return run()


def _failed(rt: Runtime, operation: str, credential: Credential, source: str | None,
            exc: IotsecError) -> bool:
    """A refused flow: its event, and its count against the source. True when the client
    is to be told only that the credential is not valid."""
    _refused(rt, operation, describe(credential), source, exc)
    if isinstance(exc, EnrolmentAuthError | EnrolmentForbiddenError):
        failure_throttle(rt).failed(source or "unknown")
    return isinstance(exc, EnrolmentAuthError)


def _event(req: _Request, kind: str, device_id: str, credential: str,
           **detail: Any) -> Event:
    """A successful flow's event: the device, the source, the credential used."""
    return Event(req.moment, kind, "success", actor=device_id, source=req.source,
                 subject=detail.pop("serial", None),
                 detail={"credential": credential, "label": req.label, **detail})


def _issued(record: CertificateRecord) -> Issued:
    return Issued(record=record,
                  chain_der=certs_only([x509.load_der_x509_certificate(record.der)]))


# --- enrolment: a bootstrap secret or a claim certificate --------------------------------


# An enrolment's statements run on the driver (iotsec.store.direct): each costs more through
# SQLAlchemy than in the database.
# Every one of them does (iotsec.store.direct.Direct), so that a group of enrolments is held
# on the driver's own connection (iotsec.store.db.driver_transaction).
_WAITING = Direct(select(m.pending_enrolments).where(
    m.pending_enrolments.c.device_id == bindparam("device")).with_for_update())
_DEVICE_STATE = Direct(select(m.devices.c.state).where(m.devices.c.id == bindparam("id")))
_TEMPLATE_PROFILE = Direct(select(m.provisioning_templates.c.profile).where(
    m.provisioning_templates.c.name == bindparam("name")))
_STOP_WAITING = Direct(delete(m.pending_enrolments)
                       .where(m.pending_enrolments.c.device_id == bindparam("device")))
_WAIT = Direct(insert(m.pending_enrolments).values(
    device_id=bindparam("device_id"), credential=bindparam("credential"),
    spki_sha256=bindparam("spki_sha256"), template=bindparam("template"),
    source=bindparam("source"), requested_at=bindparam("requested_at")))


def _create_device(conn: StoreUnit, device_id: str, template: Template, now: int
                   ) -> NewDevice:
    """Register the device the template describes: awaiting approval when the template
    asks for it, else active (its certificate is issued in the same unit of work, which
    is undone whole if the issuance refuses). An existing device is never taken: its
    registration fails on the device's key, and the unit of work is rolled back."""
    state = (DeviceState.AWAITING_APPROVAL if template.require_approval
             else DeviceState.ACTIVE)
    new = NewDevice.parse(device_id, template.groups, dict(template.attributes),
                          template.roles or None)
    try:
        insert_devices(conn, [new], now, state=state)
        return new
    except IntegrityError as exc:
        if not unique_violation(exc.orig):
            raise
        raise EnrolmentForbiddenError("the device is already registered; this credential "
                                      "enrols new devices only") from None


def _issue(conn: StoreUnit, rt: Runtime, req: _Request, device_id: str,
           profile: str | None, registered: NewDevice | None = None) -> CertificateRecord:
    """The certificate (``registered``: the device as this unit of work registered it,
    active)."""
    # The template's profile applies when neither the device nor its groups name one.
    try:
        return issue_in(conn, rt, device_id, req.certified, moment=req.moment,
                        fallback=profile, registered=None if registered is None
                        else registered.attributes or {})
    except ConflictError as exc:  # a key another identity holds, or a disabled device
        message = _KEY_HELD if not isinstance(exc, DeviceStateError) else (
            "the device may not hold a certificate")
        raise EnrolmentForbiddenError(message) from exc


def _poll(conn: StoreUnit, rt: Runtime, req: _Request, waiting: Any
          ) -> CertificateRecord | Pending:
    """A later request of an enrolment waiting for approval: still waiting, or issued
    once (the waiting record is then gone)."""
    if waiting.spki_sha256 != req.spki_sha256:
        raise EnrolmentForbiddenError("the request is not for the key waiting for approval")
    state = _DEVICE_STATE.rows(conn, {"id": waiting.device_id})[0].state
    if state == DeviceState.AWAITING_APPROVAL.value:
        return Pending(device_id=waiting.device_id, retry_after=rt.settings.est_retry_after)
    template = _TEMPLATE_PROFILE.first(conn, {"name": waiting.template})
    _STOP_WAITING.execute(conn, {"device": waiting.device_id}).close()
    return _issue(conn, rt, req, waiting.device_id,
                  template.profile if template is not None else None)


def _wait_for_approval(conn: StoreUnit, rt: Runtime, req: _Request, use: CredentialUse,
                       device_id: str, template: Template) -> Pending:
    _WAIT.execute(conn, {
        "device_id": device_id, "credential": use.key, "spki_sha256": req.spki_sha256,
        "template": template.name, "source": (req.source or "")[:64] or None,
        "requested_at": ts(req.moment)}).close()
    return Pending(device_id=device_id, retry_after=rt.settings.est_retry_after)


def _enrol_in(conn: StoreUnit, rt: Runtime, req: _Request, use: CredentialUse
              ) -> tuple[str, Template | None, CertificateRecord | Pending]:
    """The enrolment inside its transaction: (device id, template, outcome)."""
    device_id, template = use.open(conn, req.subject, req.label)
    waiting = _WAITING.first(conn, {"device": device_id})
    if waiting is not None and waiting.credential == use.key:
        return device_id, template, _poll(conn, rt, req, waiting)
    use.check_fresh(conn, req.moment)
    registered = (None if template is None
                  else _create_device(conn, device_id, template, ts(req.moment)))
    use.consume(conn, device_id, req.moment)
    if template is not None and template.require_approval:
        return device_id, template, _wait_for_approval(conn, rt, req, use, device_id, template)
    return device_id, template, _issue(conn, rt, req, device_id,
                                       template.profile if template else None, registered)


def _enrol_work(rt: Runtime, use: CredentialUse, req: _Request
                ) -> Callable[[StoreUnit, datetime], Unit[CertificateRecord | Pending]]:
    """The enrolment's unit of work in its group (every statement on the driver), with its
    event (enrolled, or waiting for approval): in the chain in the same transaction as
    the device, the credential's use and the certificate.

    After the commit nothing this process keeps is stale: a device registered just in
    time is in none of its caches (an unknown device is never cached, whether for
    decisions or a DTLS peer's standing), and the policy did not change (the new device's
    role bindings leave the policy version alone: ADR 0044). So an enrolment storm leaves
    the decisions of every server answered from memory."""
    def work(conn: StoreUnit, _moment: datetime) -> Unit[CertificateRecord | Pending]:
        device_id, template, outcome = _enrol_in(conn, rt, req, use)
        detail: dict[str, Any] = {"template": template.name if template else None}
        if isinstance(outcome, Pending):
            event = _event(req, "est.pending", device_id, use.name, **detail)
        else:
            event = _event(req, req.kind, device_id, use.name, serial=outcome.serial,
                           **detail)
        return Unit(outcome, [event.row()])

    return work


_ALREADY = "the device is already registered, or the claim certificate has already enrolled"


def _enrol(rt: Runtime, credential: Credential, req: _Request) -> CertificateRecord | Pending:
    use: CredentialUse = (SecretUse(credential) if isinstance(credential, BasicCredential)
                          else claim_use(rt, credential, req.moment, req.source))
    rt.authority("issuing")  # loaded before the transaction: a first load reads the store
    try:
        # Concurrent enrolments share one transaction (group commit), each in a savepoint
        # of its own; the CA signature's key.use event commits with the certificate it
        # made, and the answer comes after the commit. Every statement of an enrolment runs
        # on the driver, so its group may be held on the driver's own connection.
        return run_grouped_on_driver(rt, _enrol_work(rt, use, req))
    except ConflictError as exc:  # a concurrent request registered the device or the claim
        raise EnrolmentForbiddenError(_ALREADY) from exc


def enrol(rt: Runtime, credential: Credential, csr_der: bytes, *, label: str | None,
          source: str | None) -> Issued | Pending:
    """``simpleenroll``: a certificate for the device the credential stands for.

    A device-bound secret enrols that device; a template secret or a claim certificate
    enrols the device the template names (created just in time; an existing device is
    never taken). Under a template that requires approval the device waits
    (:class:`Pending`) until an operator approves it; a later request with the same
    credential and the same key then gets the certificate (even once the secret has expired:
    the approval is what counts), exactly once.
    """
    def run() -> Issued | Pending:
        outcome = _enrol(rt, credential, _request(rt, csr_der, label=label, source=source,
                                                  kind="est.enrolled"))
        return outcome if isinstance(outcome, Pending) else _issued(outcome)

    return _guarded(rt, "simpleenroll", credential, source, run)


async def enrol_async(rt: Runtime, credential: BasicCredential, csr_der: bytes, *,
                      label: str | None, source: str | None) -> Issued | Pending:
    """:func:`enrol` with a bootstrap secret, awaited on the running event loop: the same
    checks, unit of work, events and answers, but no thread waits for the group's commit
    (:meth:`iotsec.app.pki.group_issuance.IssuanceGroups.run_async`). What runs on the loop
    reads and writes nothing (the request's CSR checked, the throttle, a refusal's event
    buffered by a serving process's sink); the unit of work, with the enrolment's event,
    runs in the group commit's thread. A
    claim certificate's enrolment reads the store and may ask a hook first: :func:`enrol`,
    in a thread."""
    with _guard(rt, "simpleenroll", credential, source):
        req = _request(rt, csr_der, label=label, source=source, kind="est.enrolled")
        use = SecretUse(credential)
        try:
            outcome = await run_grouped_async(rt, _enrol_work(rt, use, req))
        except ConflictError as exc:
            raise EnrolmentForbiddenError(_ALREADY) from exc
        return outcome if isinstance(outcome, Pending) else _issued(outcome)


# --- re-enrolment: the device's own certificate -----------------------------------------


def _check_label(rt: Runtime, label: str | None) -> None:
    if label is not None:
        get_template(rt, label)


def _reenrol_work(rt: Runtime, chain: ClientChain, req: _Request
                  ) -> Callable[[StoreUnit, datetime], Unit[CertificateRecord]]:
    """The re-enrolment's unit of work in its group (every statement on the driver): may
    this certificate renew (read in the unit of work), the renewal, and its event. A retry
    of a renewal whose answer was lost gets the same certificate again, and only its
    event is written."""
    grace = timedelta(seconds=rt.settings.renew_grace)

    def work(conn: StoreUnit, _moment: datetime) -> Unit[CertificateRecord]:
        old, repeated = renewal_in(conn, rt, chain.leaf, req.certified.spki, req.moment)
        if repeated:
            return Unit(old, [_event(req, req.kind, old.device_id or "", describe(chain),
                                     serial=old.serial, repeated=True).row()])
        values, _shared, renewed = renew_in(conn, rt, old.serial, req.certified,
                                            req.moment, days=None, grace=grace,
                                            allow_shared_key=False, actor=None)
        # The re-enrolment's event commits with the renewal (cert.renewed) it made.
        event = _event(req, req.kind, values["device_id"] or "", f"certificate:{old.serial}",
                       serial=values["serial"], replaces=old.serial)
        return Unit(record_from_row(values), [renewed, event.row()])

    return work


def _not_renewable(exc: ConflictError) -> EnrolmentForbiddenError:
    """A renewal refused in its unit of work: renewed or revoked meanwhile, or a key held
    elsewhere."""
    return EnrolmentForbiddenError(_KEY_HELD if exc.hint == SHARED_KEY_HINT
                                   else "this certificate cannot be renewed")


def _reenrol(rt: Runtime, chain: ClientChain, req: _Request) -> CertificateRecord:
    _check_label(rt, req.label)
    try:
        # Concurrent renewals (and enrolments) share one transaction (group commit); every
        # statement of a renewal runs on the driver, so its group may be held on the
        # driver's own connection.
        return run_grouped_on_driver(rt, _reenrol_work(rt, chain, req))
    except ConflictError as exc:
        raise _not_renewable(exc) from exc


def reenrol(rt: Runtime, chain: ClientChain, csr_der: bytes, *, label: str | None,
            source: str | None) -> Issued:
    """``simplereenroll``: a new certificate for the device whose current certificate
    authenticated the TLS connection; the old one is superseded after the configured grace
    (``IOTSEC_RENEW_GRACE``). The CSR's subject is ignored."""
    def run() -> Issued:
        return _issued(_reenrol(rt, chain, _request(rt, csr_der, label=label, source=source,
                                                    kind="est.reenrolled")))

    return _guarded(rt, "simplereenroll", chain, source, run)


async def reenrol_async(rt: Runtime, chain: ClientChain, csr_der: bytes, *,
                        source: str | None) -> Issued:
    """:func:`reenrol` without a label, awaited on the running event loop: the same
    checks, unit of work, events and answers, but no thread waits for the group's commit
    (as :func:`enrol_async`). What runs on the loop reads and writes nothing (the CSR's
    check, the throttle, a refusal's event buffered by a serving process's sink); whether
    the certificate may renew is read in the unit of work, in the group commit's thread.
    A labelled request reads its template first: :func:`reenrol`, in a thread."""
    with _guard(rt, "simplereenroll", chain, source):
        req = _request(rt, csr_der, label=None, source=source, kind="est.reenrolled")
        try:
            record = await run_grouped_async(rt, _reenrol_work(rt, chain, req))
        except ConflictError as exc:
            raise _not_renewable(exc) from exc
        return _issued(record)


# --- server-side key generation ---------------------------------------------------------


def serverkeygen(rt: Runtime, credential: Credential, csr_der: bytes, *, label: str | None,
                 source: str | None) -> tuple[bytes, Issued] | Pending:
    """``serverkeygen`` (RFC 7030 4.4): as :func:`enrol` (a secret or a claim
    certificate) or :func:`reenrol` (one of iotsec's device certificates), but the key is
    made here, of the CSR key's kind; the CSR only proves who asked. Returns the key as
    unencrypted PKCS#8 DER, for the TLS connection only: it is never stored nor logged.
    An enrolment waiting for approval is :class:`Pending`, as with :func:`enrol`."""
    def run() -> tuple[bytes, Issued] | Pending:
        key = key_like(parse_csr(csr_der).public_key)
        made = CheckedCsr(public_key=key.public_key(), spki=spki_der(key.public_key()))
        req = _request(rt, csr_der, label=label, source=source, kind="est.serverkeygen",
                       certified=made)
        if isinstance(credential, ClientChain) and issued_here(rt, credential.leaf):
            outcome: CertificateRecord | Pending = _reenrol(rt, credential, req)
        else:
            outcome = _enrol(rt, credential, req)
        if isinstance(outcome, Pending):
            return outcome
        return key.private_bytes(serialization.Encoding.DER,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()), _issued(outcome)

    return _guarded(rt, "serverkeygen", credential, source, run)


# --- CA certificates, CSR attributes, approval ------------------------------------------


def cacerts(rt: Runtime, label: str | None) -> bytes:
    """``cacerts``: the trusted CA certificates (the issuing CA and the root; during a
    rollover also the retiring CAs and the cross certificate) as a DER certs-only PKCS#7."""
    _check_label(rt, label)
    # During a rollover: the active issuing CA first, the retiring one, the cross
    # certificate and both roots (RFC 7030 4.1.3 publishes the rollover certificates).
    return certs_only(trusted_certificates(rt))


#: Key types CsrAttrs can name, by their profile names.
_ADVERTISED = {"p256": KeyType.ECDSA_P256, "p384": KeyType.ECDSA_P384,
               "rsa3072": KeyType.RSA_3072}


def _advertised_key_type(rt: Runtime, template: Template | None) -> KeyType:
    """The issuing CA's key type, unless the label's template names a profile that does not
    allow it: then the first type it allows that CsrAttrs can name."""
    key_type = rt.authority("issuing").signer.key_type
    if template is None:
        return key_type
    with reading(rt.engine) as conn:
        allowed = load_profile(conn, rt, template.profile).key_types
    if not allowed or any(_ADVERTISED.get(k) is key_type for k in allowed):
        return key_type
    return next((_ADVERTISED[k] for k in allowed if k in _ADVERTISED), key_type)


def csrattrs(rt: Runtime, label: str | None) -> bytes:
    """``csrattrs``: what a CSR should hold (DER CsrAttrs): the issuing CA's key type (or one
    the template's profile allows) and signature algorithm, and the subject attributes the
    label's template takes the device id from."""
    template = get_template(rt, label) if label is not None else None
    id_from = template.id_from.value if template is not None else None
    return csr_attributes(key_type=_advertised_key_type(rt, template),
                          require_cn=id_from == "csr-cn",
                          require_serial_number=id_from == "serial-number")


def approve(rt: Runtime, device_id: str, *, actor: str | None = None) -> Device:
    """Approve a device waiting for it: awaiting-approval becomes pending, so its next
    enrolment request gets the certificate."""
    key = parse_device_id(device_id)
    moment = rt.now().replace(microsecond=0)
    with transaction(rt.engine) as conn:
        state = conn.execute(select(m.devices.c.state).where(m.devices.c.id == key)
                             .with_for_update()).scalar_one_or_none()
        if state is None:
            raise NotFoundError(f"device {key!r} is not registered",
                                hint="see 'iotsec device list --state awaiting-approval'")
        if state != DeviceState.AWAITING_APPROVAL.value:
            raise DeviceStateError(f"device {key!r} is {state}, not awaiting approval",
                                   hint="see 'iotsec device list --state awaiting-approval'")
        set_state(conn, key, DeviceState.PENDING, ts(moment))
        waiting = conn.execute(select(m.pending_enrolments).where(
            m.pending_enrolments.c.device_id == key)).first()
    policy_changed(rt)
    rt.events.record(Event(moment, "est.approved", "success", actor=actor, subject=key,
                           detail={
                               "template": waiting.template if waiting else None,
                               "credential": waiting.credential if waiting else None,
                               "requested_from": waiting.source if waiting else None}))
    return get_device(rt, key)
