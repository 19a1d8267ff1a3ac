"""Revoking device certificates: one by its serial, or every one of a device (when it is
disabled or retired), each marked with its CRL entry and its authority's CRL made stale."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, or_, select, update

from iotsec.app import changes
from iotsec.app.changes import Change
from iotsec.app.events import Event, append_events
from iotsec.app.pki.cert_records import CertificateRecord, get_certificate, locked_certificate
from iotsec.app.runtime import Runtime
from iotsec.errors import AlreadyRevokedError, InfrastructureCertificateError, NotFoundError
from iotsec.identity.registry import parse_device_id
from iotsec.pki.crl import RevocationReason, encode_entry
from iotsec.pki.serial import format_serial, parse_serial
from iotsec.store import models as m
from iotsec.store.db import transaction
from iotsec.store.direct import Direct, Unit
from iotsec.timeutil import ts

__all__ = [
    "ensure_revocable", "follow_revocations", "mark_revoked", "revocation_mark", "revoke",
    "revoke_device", "revoke_device_certificates"
]


_marks = itertools.count(1)
_last_mark = 0


def revocation_mark() -> int:
    """A number that changes whenever this process records a revocation (before or after
    its commit): what a per-process cache of the CRL compares to know it may be behind."""
    return _last_mark


def follow_revocations(rt: Runtime) -> None:
    """Follow the change feed: a revocation committed by another process moves
    :func:`revocation_mark` as one made here does, so this process's CRL and OCSP answers
    held in memory are read again from the store at the next request."""
    def on_changes(batch: list[Change] | None) -> None:
        if batch is None or any(change.kind == "cert" for change in batch):
            global _last_mark
            _last_mark = next(_marks)
    changes.subscribe(rt, on_changes)


def _marking(replaced: bool) -> Direct:
    values: dict[str, Any] = {"revoked_at": bindparam("at"),
                              "revocation_reason": bindparam("reason"),
                              "crl_entry": bindparam("entry")}
    if replaced:
        values["replaced_by"] = bindparam("by")
    return Direct(update(m.certificates).where(m.certificates.c.serial == bindparam("serial"))
                  .values(values))


def _staling(only_fresh: bool) -> tuple[Direct, ...]:
    statements = []
    for table, where in (
            (m.crls, m.crls.c.authority_id == bindparam("authority")),
            (m.delta_crls, m.delta_crls.c.authority_id == bindparam("authority")),
            # The certificate's partition CRL, if it has one (a row exists once served).
            (m.partition_crls, and_(
                m.partition_crls.c.authority_id == bindparam("authority"),
                m.partition_crls.c.partition == select(m.certificates.c.crl_partition)
                .where(m.certificates.c.serial == bindparam("serial")).scalar_subquery()))):
        stmt = update(table).where(where)
        if only_fresh:
            stmt = stmt.where(table.c.stale.is_(False))
        statements.append(Direct(stmt.values(stale=True)))
    return tuple(statements)


# On the driver (iotsec.store.direct), in the caller's unit of work, whichever it is: a
# renewal storm supersedes one certificate per re-enrolment.
_MARK = {False: _marking(False), True: _marking(True)}
_STALE = {False: _staling(False), True: _staling(True)}


def mark_revoked(conn: Unit, serial: str, when: datetime, reason: RevocationReason,
                 authority_id: int, replaced_by: str | None = None,
                 now: datetime | None = None) -> None:
    """Within ``conn``'s transaction: mark one certificate revoked (its CRL entry encoded
    now) and its authority's CRLs stale (complete, delta and its partition's) — unless the
    revocation takes effect later than ``now`` (a certificate superseded with a grace
    period): the CRLs then stay as they are until that moment, when
    :func:`iotsec.app.pki.crl.current_crl` finds the entry due.
    A renewal storm thus does not rebuild the CRL once per renewal."""
    values: dict[str, Any] = {
        "serial": serial, "at": ts(when), "reason": int(reason),
        "entry": encode_entry(int(serial, 16), when, reason)}
    if replaced_by is not None:
        values["by"] = replaced_by
    _MARK[replaced_by is not None].execute(conn, values).close()
    global _last_mark
    _last_mark = next(_marks)
    if now is None or when <= now:
        # On SQLite an update rewrites the whole row, the stored CRL included (53 MB at a
        # million entries): a row already stale is left alone. Writers are serialised
        # there (BEGIN IMMEDIATE), so no rebuild can be between its read and its write.
        # On PostgreSQL the update always runs: it waits for a rebuild holding the row and
        # then marks the CRL that rebuild signed stale, and an unchanged CRL is not
        # rewritten (it is TOASTed).
        for statement in _STALE[conn.dialect.name == "sqlite"]:
            statement.execute(conn, {"authority": authority_id, "serial": serial}).close()


def ensure_revocable(row: Row[Any], now: int) -> None:
    """Refuse a certificate whose revocation has already taken effect."""
    if row.revoked_at is not None and row.revoked_at <= now:
        reason = RevocationReason(row.revocation_reason).name
        raise AlreadyRevokedError(f"certificate {row.serial} is already revoked ({reason})",
                                  serial=row.serial, reason=reason)


def revoke(rt: Runtime, serial: str, reason: RevocationReason = RevocationReason.unspecified,
           *, actor: str | None = None) -> CertificateRecord:
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
        append_events(conn, [_revoked_event(moment, key, row.device_id, reason, actor)])
    return get_certificate(rt, key)


def revoke_device(rt: Runtime, device_id: str,
                  reason: RevocationReason = RevocationReason.unspecified, *,
                  actor: str | None = None) -> list[str]:
    """Revoke every certificate of a device that is not revoked yet; returns their serials
    (each a ``cert.revoked`` event of the same transaction)."""
    device_id = parse_device_id(device_id)
    moment = rt.now().replace(microsecond=0)
    now = ts(moment)
    with transaction(rt.engine) as conn:
        serials = revoke_device_certificates(conn, device_id, moment, reason, now)
        append_events(conn, [_revoked_event(moment, s, device_id, reason, actor)
                             for s in serials])
        return serials


def _revoked_event(moment: datetime, serial: str, device_id: str | None,
                   reason: RevocationReason, actor: str | None) -> dict[str, Any]:
    return Event(moment, "cert.revoked", "success", actor=actor, subject=serial,
                 detail={"device": device_id, "reason": reason.name}).row()


def revoke_device_certificates(conn: Connection, device_id: str, moment: datetime,
                               reason: RevocationReason, now: int) -> list[str]:
    """Within ``conn``'s transaction: revoke every certificate of the device that is
    neither revoked nor expired yet; returns their serials."""
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
