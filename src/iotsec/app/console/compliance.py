"""The console's compliance view: a framework's report, held per framework and recomputed
in the background once older than :data:`COMPLIANCE_TTL` seconds (a report runs the whole
fleet audit: seconds at a hundred thousand devices)."""

from __future__ import annotations

from iotsec.app.compliance.reports import framework, report
from iotsec.app.console.cache import held, stale_while_refreshing
from iotsec.app.runtime import Runtime
from iotsec.compliance.evaluate import ComplianceResult
from iotsec.compliance.frameworks import FRAMEWORKS

__all__ = ["COMPLIANCE_TTL", "compliance_result", "held_scores"]

COMPLIANCE_TTL = 300.0


def compliance_result(rt: Runtime, framework_id: str, *, actor: str, fresh: bool = False
                      ) -> ComplianceResult:
    """The report of ``framework_id`` (checked first: an unknown one is refused before any
    work), computed by the first view, then at most :data:`COMPLIANCE_TTL` seconds old."""
    fw = framework(framework_id)
    value, _ = stale_while_refreshing(
        rt, f"compliance:{fw.id}", COMPLIANCE_TTL,
        lambda: report(rt, fw.id, actor=actor), fresh=fresh)
    return value


def held_scores(rt: Runtime) -> dict[str, float | None]:
    """The score of each framework whose report this process holds (nothing is computed:
    the overview shows what the compliance page last computed)."""
    scores: dict[str, float | None] = {}
    for fw_id in FRAMEWORKS:
        result = held(rt, f"compliance:{fw_id}")
        if isinstance(result, ComplianceResult):
            scores[fw_id] = result.score()
    return scores
