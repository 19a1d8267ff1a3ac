"""Claim CAs: manufacturers' (or factories') CAs whose certificates may each enrol once,
under a template, optionally only when on an allow list or when a pre-provisioning hook
agrees. The TLS layer trusts them for the handshake; the EST flows check every claim again
here, against what the store holds now."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, Row, delete, insert, select

from iotsec.app.enrol.templates import load_template
from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.errors import (
    ConflictError,
    EnrolmentAuthError,
    EnrolmentForbiddenError,
    InputTooLargeError,
    InvalidInputError,
    MalformedInputError,
    NotFoundError,
)
from iotsec.identity.enrolment import on_allow_list, parse_template_name
from iotsec.pki.serial import format_serial
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = [
    "HOOK_TIMEOUT", "MAX_CA_PEM", "MAX_CHAIN", "ClaimCa", "add_claim_ca", "ask_hook",
    "check_allowed", "check_hook_url", "claim_generation", "find_claim_ca", "hardware_id",
    "issued_by", "list_claim_cas", "load_claim_cas", "remove_claim_ca", "trust_anchors"
]

MAX_CA_PEM = 64 * 1024
#: Certificates between a claim certificate and its registered CA, at most.
MAX_CHAIN = 4
#: Seconds the pre-provisioning hook has to answer; silence refuses the claim.
HOOK_TIMEOUT = 5.0
_MAX_HOOK_URL = 2000


@dataclass(frozen=True, slots=True)
class ClaimCa:
    name: str
    certificate: x509.Certificate
    #: SHA-256 of the CA certificate's DER, hex.
    fingerprint: str
    template: str
    allow: frozenset[str] | None
    hook_url: str | None
    created_at: datetime

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _claim_ca(row: Row[Any]) -> ClaimCa:
    allow = row.allow_list
    return ClaimCa(name=row.name,
                   certificate=x509.load_pem_x509_certificate(row.certificate.encode("ascii")),
                   fingerprint=row.fingerprint, template=row.template,
                   allow=frozenset(json.loads(allow)) if allow is not None else None,
                   hook_url=row.hook_url, created_at=from_ts(row.created_at))


def _parse_ca(ca_pem: bytes, now: datetime) -> x509.Certificate:
    """One CA certificate (PEM): basicConstraints cA, keyCertSign, valid now."""
    if len(ca_pem) > MAX_CA_PEM:
        raise InputTooLargeError(f"the CA file is over {MAX_CA_PEM} bytes",
                                 hint="give the one PEM certificate of the claim CA")
    try:
        certs = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise MalformedInputError("the CA file is not a PEM certificate",
                                  hint="give the claim CA's certificate in PEM") from None
    if len(certs) != 1:
        raise InvalidInputError(f"the CA file holds {len(certs)} certificates; give exactly one")
    cert = certs[0]
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        constraints, usage = None, None
    if constraints is None or usage is None or not constraints.ca or not usage.key_cert_sign:
        raise InvalidInputError("the certificate is not a CA certificate",
                                hint="a claim CA needs basicConstraints cA=TRUE and the "
                                "keyCertSign key usage")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise InvalidInputError("the claim CA certificate is not valid now (expired or not "
                                "yet valid)")
    return cert


def check_hook_url(url: str) -> str:
    """A pre-provisioning hook URL: https, or plain http to this host (127.0.0.1, ::1 or
    localhost)."""
    parts = urllib.parse.urlsplit(url) if len(url) <= _MAX_HOOK_URL else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(f"{url[:60]!r} is not an http(s) URL of at most "
                                f"{_MAX_HOOK_URL} characters")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
        raise InvalidInputError("a hook over plain http must be on this host (loopback)",
                                hint="use an https URL")
    if parts.username or parts.password:
        raise InvalidInputError("a hook URL carries no user name or password")
    return url


def _own_authority(conn: Connection, cert: x509.Certificate) -> bool:
    der = cert.public_bytes(serialization.Encoding.DER)
    rows = conn.execute(select(m.authorities.c.cert_der)).scalars()
    return any(bytes(r) == der for r in rows)


def add_claim_ca(rt: Runtime, name: str, ca_pem: bytes, template: str, *,
                 allow: frozenset[str] | None = None, hook_url: str | None = None) -> ClaimCa:
    """Register a claim CA whose certificates enrol under ``template``; with ``allow``,
    only certificates on it; with ``hook_url``, only those the hook accepts."""
    key = parse_template_name(name)
    moment = rt.now().replace(microsecond=0)
    cert = _parse_ca(ca_pem, moment)
    hook = check_hook_url(hook_url) if hook_url is not None else None
    der = cert.public_bytes(serialization.Encoding.DER)
    fingerprint = hashlib.sha256(der).hexdigest()
    with transaction(rt.engine) as conn:
        load_template(conn, template)
        if _own_authority(conn, cert):
            raise ConflictError("this is one of iotsec's own CAs, not a manufacturer's",
                                hint="a device with an iotsec certificate re-enrols with it")
        taken = conn.execute(select(m.claim_cas.c.name).where(
            (m.claim_cas.c.name == key) | (m.claim_cas.c.fingerprint == fingerprint))).first()
        if taken is not None:
            raise ConflictError(f"claim CA {taken.name!r} already has this name or certificate",
                                hint="see 'iotsec enrol claim-ca list'")
        conn.execute(insert(m.claim_cas).values(
            name=key, certificate=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            fingerprint=fingerprint, template=template,
            allow_list=json.dumps(sorted(allow)) if allow is not None else None,
            hook_url=hook, created_at=ts(moment)))
    rt.events.record(Event(moment, "est.claim-ca-added", "success", subject=key,
                           detail={"fingerprint": fingerprint, "template": template,
                                   "allow_list": None if allow is None else len(allow),
                                   "hook": hook is not None}))
    return next(ca for ca in list_claim_cas(rt) if ca.name == key)


def load_claim_cas(conn: Connection) -> list[ClaimCa]:
    """Every claim CA, by name, inside the caller's unit of work."""
    return [_claim_ca(r) for r in conn.execute(select(m.claim_cas)
                                               .order_by(m.claim_cas.c.name))]


def list_claim_cas(rt: Runtime) -> list[ClaimCa]:
    with reading(rt.engine) as conn:
        return load_claim_cas(conn)


def remove_claim_ca(rt: Runtime, name: str) -> None:
    """Remove a claim CA: its certificates enrol no more (those that enrolled stay
    recorded, so they cannot enrol again if it comes back)."""
    key = parse_template_name(name)
    with transaction(rt.engine) as conn:
        gone = conn.execute(delete(m.claim_cas).where(m.claim_cas.c.name == key)).rowcount
    if not gone:
        raise NotFoundError(f"no claim CA {key!r}", hint="see 'iotsec enrol claim-ca list'")
    rt.events.record(Event(rt.now(), "est.claim-ca-removed", "success", subject=key))


def trust_anchors(rt: Runtime) -> list[x509.Certificate]:
    """The claim CAs' certificates, for the EST listener's trust store."""
    return [ca.certificate for ca in list_claim_cas(rt)]


def claim_generation(rt: Runtime) -> str:
    """A cheap fingerprint of the set of claim CAs (SHA-256 over their fingerprints): it
    changes when one is added or removed, so the TLS layer knows to reload."""
    with reading(rt.engine) as conn:
        prints = sorted(conn.execute(select(m.claim_cas.c.fingerprint)).scalars())
    return hashlib.sha256("\n".join(prints).encode("ascii")).hexdigest()


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Did ``issuer`` sign ``cert`` (names match and the signature verifies)?"""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _valid_at(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def find_claim_ca(cas: list[ClaimCa], chain: tuple[x509.Certificate, ...],
                  now: datetime) -> ClaimCa:
    """The registered claim CA that ``chain`` (leaf first, then any intermediates) leads
    to, every link checked here (issuer, signature, validity, CA flag of intermediates)
    whatever the TLS layer did; else :class:`EnrolmentAuthError`."""
    leaf = chain[0]
    if _is_ca(leaf) or not _valid_at(leaf, now):
        raise EnrolmentAuthError("the claim certificate is not valid")
    current = leaf
    for step, parent in enumerate((*chain[1:MAX_CHAIN], None)):
        for ca in cas:
            if issued_by(current, ca.certificate) and _valid_at(ca.certificate, now):
                return ca
        if parent is None or step == MAX_CHAIN - 1:
            break
        if not (_is_ca(parent) and _valid_at(parent, now) and issued_by(current, parent)):
            break
        current = parent
    raise EnrolmentAuthError("the claim certificate does not chain to a registered claim CA")


def hardware_id(cert: x509.Certificate) -> str | None:
    """The subject serialNumber of a claim certificate (its hardware id), if any."""
    values = cert.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
    return str(values[0].value) if values else None


def check_allowed(ca: ClaimCa, leaf: x509.Certificate) -> None:
    """Refuse a claim certificate missing from its CA's allow list (when it has one)."""
    if ca.allow is not None and not on_allow_list(ca.allow, serial=leaf.serial_number,
                                                  hardware_id=hardware_id(leaf)):
        raise EnrolmentForbiddenError("the claim certificate is not on the allow list")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def ask_hook(ca: ClaimCa, leaf: x509.Certificate, fingerprint: str, source: str | None) -> None:
    """Ask the CA's pre-provisioning hook (if it has one) whether this claim may enrol: a
    JSON POST that must answer 2xx within :data:`HOOK_TIMEOUT` seconds. Anything else
    (refusal, redirect, error, silence) refuses: the check fails closed."""
    if ca.hook_url is None:
        return
    body = json.dumps({"claim_ca": ca.name, "serial": format_serial(leaf.serial_number),
                       "subject": leaf.subject.rfc4514_string(), "fingerprint": fingerprint,
                       "source": source}).encode("utf-8")
    request = urllib.request.Request(ca.hook_url, data=body, method="POST",  # noqa: S310
                                     headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(request, timeout=HOOK_TIMEOUT) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        raise EnrolmentForbiddenError("the pre-provisioning hook did not answer",
                                      hint=type(exc).__name__) from None
    if not 200 <= status < 300:
        raise EnrolmentForbiddenError(f"the pre-provisioning hook refused ({status})")
