"""The console's compliance view: a framework's report, computed in a background thread,
held per framework and recomputed in the background once older than
:data:`COMPLIANCE_TTL` seconds (a report runs the whole fleet audit: seconds at a hundred
thousand devices, so a page never waits for it)."""

from __future__ import annotations

from iotsec.app.compliance.reports import framework, report
from iotsec.app.console.cache import Held, held, held_or_refreshing, value_now
from iotsec.app.runtime import Runtime
from iotsec.compliance.evaluate import ComplianceResult
from iotsec.compliance.frameworks import FRAMEWORKS

__all__ = ["COMPLIANCE_TTL", "compliance_now", "compliance_result", "held_scores"]

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


def held_scores(rt: Runtime) -> dict[str, float | None]:
    """The score of each framework whose report this process holds (nothing is computed:
    the overview shows what the compliance page last computed)."""
    scores: dict[str, float | None] = {}
    for fw_id in FRAMEWORKS:
        result = held(rt, f"compliance:{fw_id}")
        if isinstance(result, ComplianceResult):
            scores[fw_id] = result.score()
    return scores
