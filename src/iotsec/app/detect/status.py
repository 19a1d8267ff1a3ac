"""``iotsec detect status``: who holds the detector lease, how far each source is read,
how fast, and the rules in force."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from iotsec.app.detect.lease import LeaseInfo, lease_info
from iotsec.app.detect.rules import AppliedRules, current_rules
from iotsec.app.runtime import Runtime
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import from_ts, ts

__all__ = ["DetectStatus", "SourceStatus", "detect_status"]

_FRESH = 30


@dataclass(frozen=True, slots=True)
class SourceStatus:
    source: str
    position: int
    lines: int
    lag: int  # bytes (log) or events (EMQX) not read yet
    rate: float  # lines per second, recently
    last_line_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DetectStatus:
    lease: LeaseInfo | None
    live: bool  # the lease is held and not expired
    sources: list[SourceStatus]
    rules: AppliedRules


def detect_status(rt: Runtime) -> DetectStatus:
    lease = lease_info(rt)
    c = m.detect_cursors.c
    with reading(rt.engine) as conn:
        rows = conn.execute(select(m.detect_cursors).order_by(c.source)).all()
    now = ts(rt.now())
    # The rate is written when lines arrive; a source quiet for a while reads nothing now.
    sources = [SourceStatus(r.source, int(r.position), int(r.lines), int(r.lag),
                            float(r.rate) if now - r.updated_at <= _FRESH else 0.0,
                            from_ts(r.last_line_at) if r.last_line_at is not None else None,
                            from_ts(r.updated_at)) for r in rows]
    live = lease is not None and lease.expires_at >= rt.now().replace(microsecond=0)
    return DetectStatus(lease, live, sources, current_rules(rt))
