"""The credentials an EST enrolment presents, and what one use of each checks and records:
an enrolment secret (HTTP Basic) or a claim certificate (mutual TLS).

A use opens inside the enrolment's transaction (it locks what it consumes), tells which
device and template the request is for, checks that the credential has a use left, and
records the use; the enrolment flow (:mod:`iotsec.app.enrol.est`) does the rest.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Row, bindparam, insert, select, update

from iotsec.app.enrol.claims import (
    ClaimCa,
    ask_hook,
    check_allowed,
    find_claim_ca,
    hardware_id,
    load_claim_cas,
)
from iotsec.app.enrol.templates import load_template, template_of
from iotsec.app.runtime import Runtime
from iotsec.errors import EnrolmentAuthError, EnrolmentForbiddenError, InvalidInputError
from iotsec.identity.enrolment import (
    Template,
    device_id_for,
    parse_secret_id,
    secret_digest,
)
from iotsec.pki.serial import format_serial
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.store.direct import Direct, Unit
from iotsec.timeutil import ts

__all__ = [
    "BasicCredential", "ClaimUse", "ClientChain", "Credential", "CredentialUse", "SecretUse",
    "Subject", "check_label", "claim_use", "describe"
]


@dataclass(frozen=True, slots=True)
class BasicCredential:
    """An enrolment secret as HTTP Basic sends it (RFC 7030 3.2.3): id and secret."""

    id: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ClientChain:
    """The client certificate chain the TLS layer verified, leaf first."""

    certs: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if not self.certs:
            raise InvalidInputError("a client certificate chain holds at least the leaf")

    @property
    def leaf(self) -> x509.Certificate:
        return self.certs[0]


Credential = BasicCredential | ClientChain


def describe(credential: Credential) -> str:
    """How events name a credential: the secret's id, or the certificate's serial and
    issuer; never a secret."""
    if isinstance(credential, BasicCredential):
        return f"secret:{credential.id[:40]}"
    leaf = credential.leaf
    return f"certificate:{format_serial(leaf.serial_number)} from {leaf.issuer.rfc4514_string()}"


@dataclass(frozen=True, slots=True)
class Subject:
    """What a template may take a device id from in the CSR's subject."""

    cn: str | None
    serial_number: str | None


def check_label(label: str | None, template: str) -> None:
    """An EST label, when given, must name the credential's template."""
    if label is not None and label != template:
        raise EnrolmentForbiddenError("this credential does not enrol under this label")


class CredentialUse(Protocol):
    """One use of an enrolment credential, inside the enrolment's transaction."""

    #: How the pending-approval record names the credential (never a secret).
    key: str
    #: How events name the credential.
    name: str

    def open(self, conn: Unit, subject: Subject,
             label: str | None) -> tuple[str, Template | None]:
        """Check the credential; the device id and template (None: a registered device)."""

    def check_fresh(self, conn: Unit, now: datetime) -> None:
        """Refuse a credential with no use left (a waiting enrolment polls without one)."""

    def consume(self, conn: Unit, device_id: str, now: datetime) -> None:
        """Record this use."""


_SECRETS = m.enrolment_secrets
#: Compared against when the id is unknown, so that both paths cost one digest.
_NO_DIGEST = "0" * 64
# An enrolment's statements run on the driver (iotsec.store.direct): every EST enrolment
# pays for them.
_TEMPLATES = m.provisioning_templates
#: The secret, locked, and the template it enrols under (its columns as ``t_<name>``): one
#: statement, one round trip to the database.
_LOCK_SECRET = Direct(
    select(_SECRETS, *[c.label(f"t_{c.name}") for c in _TEMPLATES.c])
    .select_from(_SECRETS.outerjoin(_TEMPLATES, _TEMPLATES.c.name == _SECRETS.c.template))
    .where(_SECRETS.c.id == bindparam("sid")).with_for_update(of=_SECRETS))
_CONSUME_SECRET = Direct(update(_SECRETS).where(_SECRETS.c.id == bindparam("sid"))
                         .values(uses_left=_SECRETS.c.uses_left - 1))
_CLAIM_CA = Direct(select(m.claim_cas.c.template).where(
    m.claim_cas.c.name == bindparam("name"), m.claim_cas.c.fingerprint == bindparam("fp")))
_CLAIM_USED = Direct(select(m.claim_uses.c.fingerprint).where(
    m.claim_uses.c.fingerprint == bindparam("fp")))
_CLAIM_USE = Direct(insert(m.claim_uses).values(
    fingerprint=bindparam("fingerprint"), claim_ca=bindparam("claim_ca"),
    serial=bindparam("serial"), device_id=bindparam("device_id"),
    used_at=bindparam("used_at")))


class SecretUse:
    """A use of an enrolment secret."""

    def __init__(self, credential: BasicCredential) -> None:
        self._credential = credential
        self._row: Row[Any] | None = None
        self.key = self.name = describe(credential)

    def _locked(self, conn: Unit) -> Any:
        try:
            secret_id = parse_secret_id(self._credential.id)
            digest = secret_digest(self._credential.secret)
        except InvalidInputError:
            raise EnrolmentAuthError("malformed enrolment secret") from None
        row = _LOCK_SECRET.first(conn, {"sid": secret_id})
        expected = row.secret_sha256 if row is not None else _NO_DIGEST
        if not hmac.compare_digest(digest, expected) or row is None:
            raise EnrolmentAuthError("unknown enrolment secret or wrong secret")
        if row.revoked_at is not None:
            raise EnrolmentAuthError("revoked enrolment secret")
        return row

    def open(self, conn: Unit, subject: Subject,
             label: str | None) -> tuple[str, Template | None]:
        row = self._row = self._locked(conn)
        if row.device_id is not None:
            if label is not None:
                raise EnrolmentForbiddenError("this credential does not enrol under this label")
            return row.device_id, None
        # The template came with the secret; one removed since is looked up for its error.
        template = (template_of(row, "t_") if row.t_name is not None
                    else load_template(conn, row.template))
        check_label(label, template.name)
        return device_id_for(template, csr_subject_cn=subject.cn,
                             csr_subject_serial=subject.serial_number,
                             secret_id=row.id), template

    def check_fresh(self, conn: Unit, now: datetime) -> None:
        row = self._row
        assert row is not None, "open() comes first"
        if row.expires_at <= ts(now):
            raise EnrolmentAuthError("expired enrolment secret")
        if row.uses_left <= 0:
            raise EnrolmentAuthError("used enrolment secret")

    def consume(self, conn: Unit, device_id: str, now: datetime) -> None:
        assert self._row is not None, "open() comes first"
        _CONSUME_SECRET.execute(conn, {"sid": self._row.id}).close()


class ClaimUse:
    """The one use of a claim certificate, issued under ``ca`` (found and checked by
    :func:`iotsec.app.enrol.claims.find_claim_ca`)."""

    def __init__(self, leaf: x509.Certificate, ca: ClaimCa) -> None:
        self._leaf = leaf
        self._ca = ca
        self.fingerprint = hashlib.sha256(
            leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
        self.key = f"claim:{self.fingerprint}"
        self.name = f"claim:{ca.name}:{format_serial(leaf.serial_number)}"

    def open(self, conn: Unit, subject: Subject,
             label: str | None) -> tuple[str, Template | None]:
        # The CA may have been removed (or replaced) since the claim was checked.
        row = _CLAIM_CA.first(conn, {"name": self._ca.name, "fp": self._ca.fingerprint})
        if row is None:
            raise EnrolmentAuthError("the claim CA is no longer registered")
        template = load_template(conn, row.template)
        check_label(label, template.name)
        cns = self._leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return device_id_for(template, csr_subject_cn=subject.cn,
                             csr_subject_serial=subject.serial_number,
                             claim_subject_cn=str(cns[0].value) if cns else None,
                             claim_subject_serial=hardware_id(self._leaf)), template

    def used(self, conn: Unit) -> bool:
        """Has this claim certificate enrolled before?"""
        return _CLAIM_USED.first(conn, {"fp": self.fingerprint}) is not None

    def check_fresh(self, conn: Unit, now: datetime) -> None:
        if self.used(conn):
            raise EnrolmentForbiddenError("the claim certificate has already enrolled")

    def consume(self, conn: Unit, device_id: str, now: datetime) -> None:
        _CLAIM_USE.execute(conn, {
            "fingerprint": self.fingerprint, "claim_ca": self._ca.name,
            "serial": format_serial(self._leaf.serial_number), "device_id": device_id,
            "used_at": ts(now)}).close()


def claim_use(rt: Runtime, chain: ClientChain, moment: datetime, source: str | None) -> ClaimUse:
    """Find and check the claim (CA, validity, allow list, hook) before the transaction:
    the hook may take seconds, and nothing may wait on the store meanwhile."""
    with reading(rt.engine) as conn:
        ca = find_claim_ca(load_claim_cas(conn), chain.certs, moment)
        use = ClaimUse(chain.leaf, ca)
        waiting = conn.execute(select(m.pending_enrolments.c.device_id).where(
            m.pending_enrolments.c.credential == use.key)).first()
        if waiting is not None:
            return use  # a poll: the claim was checked when the enrolment began
        use.check_fresh(conn, moment)
    check_allowed(ca, chain.leaf)
    ask_hook(ca, chain.leaf, use.fingerprint, source)
    return use
