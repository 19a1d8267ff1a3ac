"""The console's compliance view: a framework's report, computed in a background thread,
held per framework and recomputed in the background once older than
:data:`COMPLIANCE_TTL` seconds (a report runs the whole fleet audit: seconds at a hundred
thousand devices, so a page never waits for it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from iotsec.app.compliance.reports import framework, report
from iotsec.app.console.cache import Held, held_or_refreshing, value_now
from iotsec.app.runtime import Runtime
from iotsec.compliance.evaluate import ComplianceResult
from iotsec.compliance.frameworks import FRAMEWORKS
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import from_ts

__all__ = ["COMPLIANCE_TTL", "FrameworkScore", "compliance_now", "compliance_result",
           "latest_scores"]

COMPLIANCE_TTL = 300.0


def compliance_result(rt: Runtime, framework_id: str, *, actor: str, fresh: bool = False
                      ) -> Held[ComplianceResult] | None:
    """The report of ``framework_id`` (checked first: an unknown one is refused before any
    work) with its age, ``None`` while a first one is computed; at most
    :data:`COMPLIANCE_TTL` seconds old, or ``fresh`` (at most every few seconds), a newer
    one is computed in the background. Never waits for the audit."""
    fw = framework(framework_id)
    return held_or_refreshing(rt, f"compliance:{fw.id}", COMPLIANCE_TTL,
                              lambda: report(rt, fw.id, actor=actor), fresh=fresh)


def compliance_now(rt: Runtime, framework_id: str, *, actor: str) -> ComplianceResult:
    """The report of ``framework_id``, waiting for it if none is held (a download)."""
    fw = framework(framework_id)
    return value_now(rt, f"compliance:{fw.id}", COMPLIANCE_TTL,
                     lambda: report(rt, fw.id, actor=actor))


@dataclass(frozen=True, slots=True)
class FrameworkScore:
    framework: str
    #: The score of the newest report (``None`` when nothing could be judged automatically).
    score: float | None
    at: datetime


def latest_scores(rt: Runtime) -> list[FrameworkScore]:
    """The score of each framework's newest report, from its ``compliance.report`` event
    (made by ``iotsec compliance report``, the API or this page): one indexed read per
    framework, nothing computed."""
    e = m.events.c
    scores = []
    with reading(rt.engine) as conn:
        for fw_id in FRAMEWORKS:
            row = conn.execute(select(e.at, e.detail)
                               .where(e.kind == "compliance.report", e.subject == fw_id)
                               .order_by(e.at.desc()).limit(1)).first()
            if row is None:
                continue
            try:
                score = json.loads(row.detail or "{}").get("score")
            except ValueError:
                score = None
            scores.append(FrameworkScore(fw_id, float(score)
                                         if isinstance(score, (int, float)) else None,
                                         from_ts(row.at)))
    return scores
