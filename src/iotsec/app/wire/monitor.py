"""Wire models of monitoring: the event chain's verification and its checkpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from iotsec.app.monitor.alerts import Alert
from iotsec.app.wire.base import Wire
from iotsec.eventlog.chain import ChainFault, ChainReport
from iotsec.eventlog.timeline import TimelineEntry
from iotsec.timeutil import from_ts

__all__ = [
    "AlertOut", "ChainFaultOut", "ChainReportOut", "CheckResultOut", "CheckpointOut",
    "TimelineEntryOut"
]


class ChainFaultOut(Wire):
    """One thing wrong with the event chain, where it was found."""

    fault: str
    seq: int | None
    id: int | None
    message: str
    #: A signed checkpoint covers the place: the change was made without the audit key.
    covered: bool

    @classmethod
    def from_domain(cls, f: ChainFault) -> ChainFaultOut:
        return cls(fault=f.fault.value, seq=f.seq, id=f.id, message=f.message,
                   covered=f.covered)


class ChainReportOut(Wire):
    """The result of verifying the event chain."""

    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    checkpoints: int
    checkpointed_seq: int
    unchained: int
    faults: list[ChainFaultOut]

    @classmethod
    def from_domain(cls, r: ChainReport) -> ChainReportOut:
        return cls(ok=r.ok, entries=r.entries, head_seq=r.head_seq, head_hash=r.head_hash,
                   checkpoints=r.checkpoints, checkpointed_seq=r.checkpointed_seq,
                   unchained=r.unchained,
                   faults=[ChainFaultOut.from_domain(f) for f in r.faults])


class CheckpointOut(Wire):
    """A checkpoint of the event chain (``made``: signed now, or already there)."""

    seq: int
    hash: str
    made: bool


class AlertOut(Wire):
    """An alert: what was detected, how bad, what to do, and where it was delivered."""

    id: int
    rule: str
    severity: str
    subject: str
    state: str
    summary: str
    suggested: str
    evidence: dict[str, Any]
    count: int
    created_at: datetime
    updated_at: datetime
    acknowledged_by: str | None
    resolved_by: str | None
    deliveries: dict[str, str]

    @classmethod
    def from_domain(cls, a: Alert) -> AlertOut:
        return cls(id=a.id, rule=a.rule, severity=a.severity.value, subject=a.subject,
                   state=a.state.value, summary=a.summary, suggested=a.suggested,
                   evidence=a.evidence, count=a.count, created_at=a.created_at,
                   updated_at=a.updated_at, acknowledged_by=a.acknowledged_by,
                   resolved_by=a.resolved_by, deliveries=a.deliveries)


class CheckResultOut(Wire):
    """What one run of the scheduled checks raised, counted again and resolved."""

    raised: list[int]
    repeated: list[int]
    resolved: list[int]


class TimelineEntryOut(Wire):
    """One entry of a device's incident timeline: an event or an alert."""

    at: datetime
    source: str
    kind: str
    outcome: str
    actor: str | None
    subject: str | None
    summary: str
    detail: dict[str, Any]
    seq: int | None
    id: int | None

    @classmethod
    def from_domain(cls, e: TimelineEntry) -> TimelineEntryOut:
        return cls(at=from_ts(e.at), source=e.source, kind=e.kind, outcome=e.outcome,
                   actor=e.actor, subject=e.subject, summary=e.summary, detail=e.detail,
                   seq=e.seq, id=e.id)
