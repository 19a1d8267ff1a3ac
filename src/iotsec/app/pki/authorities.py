"""The CA hierarchy over time: listing the CAs, rotating the issuing CA (or the root, with a
cross certificate), retiring a CA at the end of its overlap, the chain and trust bundle
that follow from their states, and the CRL of any CA that is not expired.

States (docs/adr/0014-ca-states.md):

- ``active``: the one CA of its role that signs (device certificates for an issuing CA,
  issuing CAs for a root);
- ``retiring``: no longer signs certificates, still trusted: it stays in the chain and the
  trust bundle (the broker's CA file, the EST listener), and its CRL keeps being
  re-signed and published;
- ``retired``: the end of the overlap: out of the trust bundle, so what it issued no longer
  authenticates anywhere iotsec decides; its CRL is still re-signed and served until the
  CA itself expires (RFC 5280 5: a CRL issuer keeps publishing CRLs for the certificates it
  issued while they may be relied on, and issuance never outlives the CA);
- ``expired`` is not stored: a CA past its notAfter is shown as expired, whatever its
  state, and has no CRL any more (its certificates expired with it).

A cross certificate (role ``cross``) is the new root's subject and key signed by the old
root: published in the chain while the old root is trusted, so a device that trusts only
the old root accepts chains from the new one.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, Row, func, insert, select, update

from iotsec.app.events import Event
from iotsec.app.pki.crl import PublishedCrl, current_crl
from iotsec.app.runtime import Runtime
from iotsec.errors import CaStateError, ConflictError, NotFoundError, OfflineKeyError
from iotsec.pki.ca import Authority, create_issuing, create_root, cross_certificate
from iotsec.pki.keys import KeyType
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = [
    "STATES", "AuthorityRecord", "Rotation", "authority_crl", "chain_certificates",
    "get_authority", "has_crl", "insert_authority", "list_authorities", "pem_of",
    "resolve_ca", "retire", "rotate", "set_state", "trust_generation", "trusted_authorities",
    "trusted_certificates"
]

#: The stored states, in the order a CA goes through them.
STATES = ("active", "retiring", "retired")


@dataclass(frozen=True, slots=True)
class AuthorityRecord:
    """One CA of the store, as listed."""

    id: int
    role: str  # root | issuing | cross
    parent_id: int | None
    subject: str
    state: str  # active | retiring | retired
    key_type: str
    key_label: str
    key_offline: bool
    not_before: datetime
    not_after: datetime
    issued: int
    der: bytes
    created_at: datetime
    state_changed_at: datetime | None

    def expired(self, now: datetime) -> bool:
        return now >= self.not_after

    def shown_state(self, now: datetime) -> str:
        """The state, or ``expired`` once the CA is past its notAfter."""
        return "expired" if self.expired(now) else self.state

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)


@dataclass(frozen=True, slots=True)
class Rotation:
    """What ``ca rotate`` made and what it moved to ``retiring``."""

    issuing: AuthorityRecord
    root: AuthorityRecord | None
    cross: AuthorityRecord | None
    retiring: tuple[AuthorityRecord, ...]


_A = m.authorities.c


def _record(row: Row[Any], issued: int) -> AuthorityRecord:
    cert = x509.load_der_x509_certificate(bytes(row.cert_der))
    return AuthorityRecord(
        id=int(row.id), role=row.role, parent_id=row.parent_id, subject=row.subject,
        state=row.state, key_type=row.key_type, key_label=row.key_label,
        key_offline=bool(row.key_offline), not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc, issued=issued, der=bytes(row.cert_der),
        created_at=from_ts(row.created_at),
        state_changed_at=None if row.state_changed_at is None else from_ts(row.state_changed_at))


def _issued_counts(conn: Connection) -> dict[int, int]:
    c = m.certificates.c
    return {int(a): int(n) for a, n in conn.execute(
        select(c.authority_id, func.count()).group_by(c.authority_id))}


def list_authorities(rt: Runtime, *, counts: bool = True) -> list[AuthorityRecord]:
    """Every CA of the store, oldest first, with the number of certificates each issued
    (without ``counts``: 0, and no pass over the certificates: for the chain and bundles,
    built on every issuance that hands them out)."""
    with reading(rt.engine) as conn:
        issued = _issued_counts(conn) if counts else {}
        rows = conn.execute(select(m.authorities).order_by(_A.id)).all()
    return [_record(r, issued.get(int(r.id), 0)) for r in rows]


def get_authority(rt: Runtime, authority_id: int, *, counts: bool = True) -> AuthorityRecord:
    """One CA (``counts``: with the number of certificates it issued)."""
    with reading(rt.engine) as conn:
        row = conn.execute(select(m.authorities).where(_A.id == authority_id)).first()
        if row is None:
            raise NotFoundError(f"no CA with id {authority_id}",
                                hint="'iotsec ca list' shows the CAs and their ids")
        issued = conn.execute(select(func.count()).select_from(m.certificates).where(
            m.certificates.c.authority_id == authority_id)).scalar_one() if counts else 0
    return _record(row, int(issued))


def resolve_ca(rt: Runtime, ca: str) -> int:
    """The id of the CA named by ``ca``: ``issuing`` or ``root`` (the active one) or an id."""
    text = ca.strip()
    if text in ("issuing", "root"):
        with reading(rt.engine) as conn:
            found = conn.execute(select(_A.id).where(_A.role == text, _A.state == "active")
                                 .order_by(_A.id.desc()).limit(1)).scalar()
        if found is None:
            raise NotFoundError(f"no active {text} CA")
        return int(found)
    if text.isdigit() and len(text) <= 9:
        return int(text)
    raise NotFoundError(f"unknown CA {ca[:40]!r}",
                        hint="give 'issuing', 'root' or an id from 'iotsec ca list'")


def trusted_authorities(rt: Runtime) -> list[AuthorityRecord]:
    """The CAs that are trusted now (active or retiring, not expired), in the order a
    bundle lists them: issuing CAs (the active one first), cross certificates, roots."""
    now = rt.now()
    order = {"issuing": 0, "cross": 1, "root": 2}
    found = [a for a in list_authorities(rt, counts=False)
             if a.state != "retired" and not a.expired(now)]
    return sorted(found, key=lambda a: (order.get(a.role, 3), a.state != "active", -a.id))


def trusted_certificates(rt: Runtime) -> list[x509.Certificate]:
    """The trust bundle: every CA certificate of :func:`trusted_authorities`."""
    return [a.certificate for a in trusted_authorities(rt)]


def trust_generation(rt: Runtime) -> str:
    """A cheap fingerprint of the CAs and their states: it changes with every rotation,
    import or retirement, so a TLS listener knows to load the new trust anchors."""
    with reading(rt.engine) as conn:
        rows = conn.execute(select(_A.id, _A.state).order_by(_A.id)).all()
    return hashlib.sha256(";".join(f"{r.id}:{r.state}" for r in rows).encode()).hexdigest()


def chain_certificates(rt: Runtime, *, cross: bool = False) -> list[x509.Certificate]:
    """The chain handed out with a certificate: the active issuing CA, then the active
    root. With ``cross``, the cross certificates that link the active root to an older root
    still trusted come before the root: the chain a server presents (the broker), or the
    intermediates a relying party that trusts only the old root is given. Never in a file
    used as a trust store: OpenSSL takes the first certificate of a subject it finds
    there, and the cross certificate would then lead to a root the file may not hold.
    Read from the store: no key is needed (the root may be offline)."""
    trusted = trusted_authorities(rt)
    issuing = [a for a in trusted if a.role == "issuing" and a.state == "active"]
    roots = [a for a in trusted if a.role == "root" and a.state == "active"]
    if not issuing or not roots:
        raise NotFoundError("the store holds no active issuing CA and root",
                            hint="run 'iotsec init'")
    root = roots[0]
    links = [a for a in trusted if cross and a.role == "cross" and a.key_label == root.key_label]
    return [a.certificate for a in (issuing[0], *links, root)]


def insert_authority(conn: Connection, *, role: str, parent_id: int | None, key_label: str,
                     key_type: str, der: bytes, now: datetime, state: str = "active",
                     key_offline: bool = False, with_crl: bool = True) -> int:
    """Store a CA (and, with ``with_crl``, its empty CRL state, built when first asked)."""
    cert = x509.load_der_x509_certificate(der)
    authority_id = int(conn.execute(insert(m.authorities).values(
        role=role, parent_id=parent_id, key_label=key_label, key_type=key_type,
        subject=cert.subject.rfc4514_string(), cert_der=der,
        not_after=ts(cert.not_valid_after_utc), active=state == "active", created_at=ts(now),
        state=state, state_changed_at=ts(now), key_offline=key_offline,
    ).returning(_A.id)).scalar_one())
    if with_crl:
        conn.execute(insert(m.crls).values(authority_id=authority_id, number=0, this_update=0,
                                           next_update=0, stale=True, der=None))
    return authority_id


def set_state(conn: Connection, ids: Iterable[int], state: str, now: datetime) -> None:
    ids = list(ids)
    if ids:
        conn.execute(update(m.authorities).where(_A.id.in_(ids)).values(
            state=state, active=state == "active", state_changed_at=ts(now)))


def _active_row(conn: Connection, role: str) -> Row[Any]:
    row = conn.execute(select(m.authorities).where(_A.role == role, _A.state == "active")
                       .order_by(_A.id.desc()).limit(1).with_for_update()).first()
    if row is None:
        raise NotFoundError(f"no active {role} CA", hint="run 'iotsec init'")
    return row


def _signing_root(rt: Runtime) -> tuple[int, Authority]:
    with reading(rt.engine) as conn:
        row = conn.execute(select(_A.id, _A.key_offline).where(
            _A.role == "root", _A.state == "active").order_by(_A.id.desc()).limit(1)).first()
    if row is None:
        raise NotFoundError("no active root CA", hint="run 'iotsec init'")
    if row.key_offline:
        raise OfflineKeyError("the root's key is offline: this home cannot sign a new "
                              "issuing CA (or cross-sign a new root)")
    return int(row.id), rt.authority_by_id(int(row.id))


def rotate(rt: Runtime, *, new_root: bool = False, cross: bool = True,
           key_type: KeyType | None = None) -> Rotation:
    """Make a new active issuing CA under the active root (with ``new_root``: under a new
    root, cross-signed by the old one unless not ``cross``; the old root becomes
    retiring). The previous issuing CA
    becomes retiring: trusted, its CRL published, issuing nothing. One transaction; the
    new keys are made in custody first."""
    rt.authorities_changed()
    now = rt.now()
    root_id, root = _signing_root(rt)
    with reading(rt.engine) as conn:
        old_issuing = conn.execute(select(_A.id, _A.key_type).where(
            _A.role == "issuing", _A.state == "active").order_by(_A.id.desc()).limit(1)).first()
    if old_issuing is None:
        raise NotFoundError("no active issuing CA", hint="run 'iotsec init'")
    kind = key_type or KeyType.parse(old_issuing.key_type)
    tag = secrets.token_hex(4)
    cross_der = new_root_der = None
    signing_root = root
    if new_root:
        root_signer = rt.keys.generate(f"root-{tag}", kind)
        new_root_der = create_root(root_signer, now, label=tag)
        signing_root = Authority.from_der(new_root_der, root_signer)
        if cross:
            cross_der = cross_certificate(root, signing_root.certificate, now)
    issuing_signer = rt.keys.generate(f"issuing-{tag}", kind)
    issuing_der = create_issuing(signing_root, issuing_signer, now, label=tag)
    with transaction(rt.engine) as conn:
        if int(_active_row(conn, "issuing").id) != int(old_issuing.id) or int(
                _active_row(conn, "root").id) != root_id:
            raise ConflictError("another process changed the CAs meanwhile",
                                hint="look at 'iotsec ca list' and run the rotation again")
        retiring = [int(old_issuing.id)]
        parent = root_id
        new_root_id = cross_id = None
        if new_root_der is not None:
            new_root_id = parent = insert_authority(
                conn, role="root", parent_id=None, key_label=f"root-{tag}",
                key_type=kind.value, der=new_root_der, now=now)
            if cross_der is not None:
                cross_id = insert_authority(conn, role="cross", parent_id=root_id,
                                            key_label=f"root-{tag}", key_type=kind.value,
                                            der=cross_der, now=now, with_crl=False)
            retiring.append(root_id)
        set_state(conn, retiring, "retiring", now)
        issuing_id = insert_authority(conn, role="issuing", parent_id=parent,
                                      key_label=f"issuing-{tag}", key_type=kind.value,
                                      der=issuing_der, now=now)
    rt.authorities_changed()
    rt.events.record(Event(now, "ca.rotate", "success", subject=str(issuing_id), detail={
        "issuing": issuing_id, "root": new_root_id, "cross": cross_id, "retiring": retiring}))
    return Rotation(
        issuing=get_authority(rt, issuing_id),
        root=None if new_root_id is None else get_authority(rt, new_root_id),
        cross=None if cross_id is None else get_authority(rt, cross_id),
        retiring=tuple(get_authority(rt, i) for i in retiring))


def retire(rt: Runtime, authority_id: int) -> Sequence[AuthorityRecord]:
    """End the overlap of a retiring CA: it leaves the chain and the trust bundle, so its
    certificates stop authenticating; its CRL is still served until it expires. Refused for
    the active issuing CA and the active root, for a root that still has a trusted issuing
    CA under it, and for a CA already retired. Retiring a root retires the cross
    certificates it signed. Returns the CAs retired."""
    now = rt.now()
    with transaction(rt.engine) as conn:
        row = conn.execute(select(m.authorities).where(_A.id == authority_id)
                           .with_for_update()).first()
        if row is None:
            raise NotFoundError(f"no CA with id {authority_id}",
                                hint="'iotsec ca list' shows the CAs and their ids")
        if row.state == "retired":
            raise CaStateError(f"CA {authority_id} is already retired")
        if row.state == "active" and row.role in ("issuing", "root"):
            raise CaStateError(f"CA {authority_id} is the active {row.role} CA: it cannot "
                               "be retired",
                               hint="rotate first ('iotsec ca rotate'), then retire the "
                               "previous CA")
        ids = [authority_id]
        if row.role == "root":
            children = conn.execute(select(_A.id).where(
                _A.parent_id == authority_id, _A.role == "issuing",
                _A.state != "retired")).scalars().all()
            if children:
                raise CaStateError(
                    f"root {authority_id} still has trusted issuing CAs under it: "
                    f"{', '.join(str(c) for c in children)}",
                    hint="retire those first ('iotsec ca retire ID')")
            ids += [int(i) for i in conn.execute(select(_A.id).where(
                _A.parent_id == authority_id, _A.role == "cross",
                _A.state != "retired")).scalars()]
        set_state(conn, ids, "retired", now)
    rt.authorities_changed()
    rt.events.record(Event(now, "ca.retire", "success", subject=str(authority_id),
                           detail={"retired": ids}))
    return [get_authority(rt, i) for i in ids]


def has_crl(rt: Runtime, authority_id: int) -> bool:
    """Whether a CRL of the CA was ever published (an imported root's never is here)."""
    with reading(rt.engine) as conn:
        return conn.execute(select(m.crls.c.der).where(
            m.crls.c.authority_id == authority_id)).scalar() is not None


def authority_crl(rt: Runtime, authority_id: int, *, force: bool = False) -> PublishedCrl:
    """The current CRL of any CA that is not expired (active, retiring or retired), re-signed
    when due. For a CA whose key is offline, the CRL signed offline is served while it is
    current (it cannot be re-signed here)."""
    record = get_authority(rt, authority_id, counts=False)
    now = rt.now()
    if record.role == "cross":
        raise NotFoundError(f"CA {authority_id} is a cross certificate: the CRL of its "
                            "subject is the new root's",
                            hint="ask for the root's CRL ('--ca root')")
    if record.expired(now):
        raise NotFoundError(f"CA {authority_id} expired on {record.not_after:%Y-%m-%d}: it "
                            "publishes no CRL any more (its certificates expired with it)")
    if record.key_offline:
        with reading(rt.engine) as conn:
            row = conn.execute(select(m.crls).where(
                m.crls.c.authority_id == authority_id)).first()
        if row is None or row.der is None or row.next_update <= ts(now):
            raise OfflineKeyError(f"the CRL of CA {authority_id} (key offline) is missing or "
                                  "past its nextUpdate",
                                  hint="sign a new one with the offline root key")
        return PublishedCrl(der=bytes(row.der), number=int(row.number),
                            this_update=from_ts(row.this_update),
                            next_update=from_ts(row.next_update))
    return current_crl(rt, authority_id=authority_id, force=force)


def pem_of(certificates: Iterable[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii")
                   for c in certificates)
