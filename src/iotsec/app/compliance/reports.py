"""Compliance reports and attestations: the service layer.

:func:`report` gathers the evidence (the fleet audit, iotsec's facts about itself, an
optional scan report, the latest attestations), judges every provision of the framework
(:mod:`iotsec.compliance.evaluate`) and records a ``compliance.report`` event.
:func:`attest` appends a new version of a provision's attestation; history is never
rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Row, func, insert, select

from iotsec.app.audit import run_audit
from iotsec.app.compliance.facts import gather_facts
from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.compliance.catalog import Framework, Provision, Status
from iotsec.compliance.evaluate import ComplianceResult, evaluate
from iotsec.compliance.evidence import (
    MAX_NOTE,
    Attestation,
    Evidence,
    ScanEvidence,
    parse_scan_report,
)
from iotsec.compliance.frameworks import FRAMEWORKS, framework_ids, get_framework
from iotsec.errors import (
    AttestationError,
    ConflictError,
    IotsecError,
    UnknownFrameworkError,
    UnknownProvisionError,
)
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = ["AttestationRequest", "attest", "attestations", "framework", "provision",
           "report"]

MAX_ACTOR = 160


def framework(framework_id: str) -> Framework:
    """The framework named, or :class:`UnknownFrameworkError`."""
    found = get_framework(framework_id)
    if found is None:
        shown = framework_id[:64].encode("ascii", "replace").decode()
        raise UnknownFrameworkError(f"unknown framework {shown!r}; known: "
                                    f"{', '.join(framework_ids())}")
    return found


def provision(fw: Framework, provision_id: str) -> Provision:
    found = fw.find(provision_id)
    if found is None:
        shown = provision_id[:32].encode("ascii", "replace").decode()
        raise UnknownProvisionError(f"{fw.name} has no provision {shown!r}",
                                    hint=f"the provisions are: {', '.join(fw.ids)}")
    return found


def _attestation(r: Row[Any]) -> Attestation:
    return Attestation(framework=r.framework, provision=r.provision, version=int(r.version),
                       status=Status(r.status), note=r.note, actor=r.actor, at=from_ts(r.at))


def attestations(rt: Runtime, framework_id: str | None = None, *, history: bool = False
                 ) -> list[Attestation]:
    """The latest attestation of each provision (with ``history``, every version), oldest
    provision first, versions in order."""
    fw = framework(framework_id) if framework_id is not None else None
    a = m.compliance_attestations.c
    query = select(m.compliance_attestations)
    if fw is not None:
        query = query.where(a.framework == fw.id)
    if not history:
        latest = (select(a.framework, a.provision, func.max(a.version).label("v"))
                  .group_by(a.framework, a.provision).subquery())
        query = query.join(latest, (a.framework == latest.c.framework)
                           & (a.provision == latest.c.provision) & (a.version == latest.c.v))
    with reading(rt.engine) as conn:
        rows = conn.execute(query.order_by(a.framework, a.provision, a.version)).all()
    found = [_attestation(r) for r in rows]
    # In the framework's own order (5.2-1 before 5.10-1), not the text order.
    order = {(f.id, p.id): i for f in FRAMEWORKS.values() for i, p in enumerate(f.provisions)}
    return sorted(found, key=lambda x: (x.framework, order.get((x.framework, x.provision), 0),
                                        x.version))


@dataclass(frozen=True, slots=True)
class AttestationRequest:
    framework: str
    provision: str
    status: str
    note: str
    actor: str


def _check_note(note: str) -> str:
    text = note.strip()
    if not text:
        raise AttestationError("the note is empty: an attestation needs its justification",
                               hint="say why, e.g. where the policy document is published")
    if len(text) > MAX_NOTE:
        raise AttestationError(f"the note is {len(text)} characters; the limit is {MAX_NOTE}",
                               hint="link to a longer document instead")
    if any(not (ch.isprintable() or ch in "\n\t") for ch in text):
        raise AttestationError("the note contains control characters",
                               hint="write plain text")
    return text


ATTEST_ATTEMPTS = 20


def _append(rt: Runtime, framework_id: str, provision_id: str, status: Status, note: str,
            actor: str, at: int) -> int:
    """Insert the next version; the version the row got. Two attestations racing for the
    same version: the unique index refuses the second, which then takes the next one."""
    a = m.compliance_attestations.c
    attempts = 0
    while True:
        try:
            with transaction(rt.engine) as conn:
                current = conn.execute(select(func.max(a.version)).where(
                    a.framework == framework_id, a.provision == provision_id)).scalar()
                version = int(current or 0) + 1
                conn.execute(insert(m.compliance_attestations).values(
                    framework=framework_id, provision=provision_id, version=version,
                    status=status.value, note=note, actor=actor, at=at))
            return version
        except ConflictError:
            attempts += 1
            if attempts >= ATTEST_ATTEMPTS:
                raise


def attest(rt: Runtime, request: AttestationRequest) -> Attestation:
    """Record version n+1 of the attestation of one provision. Nothing is written when the
    framework, provision, status or note is not acceptable."""
    fw = framework(request.framework)
    p = provision(fw, request.provision)
    try:
        status = Status(request.status.strip().lower())
    except ValueError:
        raise AttestationError(f"status {request.status[:32]!r} is not allowed",
                               hint="use one of: " + ", ".join(s.value for s in Status)
                               ) from None
    note = _check_note(request.note)
    actor = (request.actor or "unknown")[:MAX_ACTOR]
    now = rt.now()
    version = _append(rt, fw.id, p.id, status, note, actor, ts(now))
    rt.events.record(Event(now, "compliance.attest", "success", actor=actor,
                           subject=f"{fw.id}/{p.id}",
                           detail={"status": status.value, "version": version}))
    return Attestation(framework=fw.id, provision=p.id, version=version, status=status,
                       note=note, actor=actor, at=now)


def report(rt: Runtime, framework_id: str, *, scan_report: bytes | None = None,
           broker_dir: Path | None = None, actor: str | None = None) -> ComplianceResult:
    """Judge every provision of the framework from the fleet's current evidence
    (``broker_dir``: the Mosquitto directory the audit reads, default IOTSEC_BROKER_DIR)."""
    fw = framework(framework_id)
    scan: ScanEvidence | None = None
    if scan_report is not None:
        scan = parse_scan_report(scan_report)
    audit = None
    audit_missing = None
    try:
        audit = run_audit(rt, broker_dir=broker_dir, actor=actor)
    except IotsecError as exc:
        # The report still says what the other evidence shows; the provisions that rest on
        # the audit are left undecided with this reason.
        audit_missing = f"the fleet audit could not run: {exc}"
    latest = {x.provision: x for x in attestations(rt, fw.id)}
    evidence = Evidence(now=rt.now(), audit=audit, audit_missing=audit_missing, scan=scan,
                        facts=gather_facts(rt), attestations=latest)
    result = evaluate(fw, evidence)
    rt.events.record(Event(evidence.now, "compliance.report", "success", actor=actor,
                           subject=fw.id,
                           detail={"by_status": result.by_status(), "score": result.score(),
                                   "scan": scan is not None, "audit": audit is not None}))
    return result
