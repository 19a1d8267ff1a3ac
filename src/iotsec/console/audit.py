"""The console's audit page: the fleet audit's findings (filtered by severity), each with
what was seen and the command that fixes it, and the report to download as JSON, SARIF or
HTML."""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response

from iotsec.app.console.audit import AUDIT_TTL, audit_now, audit_result
from iotsec.audit.model import AuditResult
from iotsec.audit.report import audit_html, audit_json_bytes, audit_sarif_bytes
from iotsec.console.web import Ctx, page
from iotsec.errors import InvalidInputError
from iotsec.findings.model import Finding, Severity

__all__ = ["FORMATS", "SHOWN", "audit", "download"]

#: Findings shown on the page; the downloads have them all.
SHOWN = 500


def _html(result: AuditResult) -> bytes:
    return audit_html(result).encode("utf-8")


FORMATS: dict[str, tuple[str, Callable[[AuditResult], bytes]]] = {
    "json": ("application/json", audit_json_bytes),
    "sarif": ("application/sarif+json", audit_sarif_bytes),
    "html": ("text/html; charset=utf-8", _html),
}


def _severity(ctx: Ctx) -> Severity | None:
    wanted = ctx.query.get("severity", "")
    if not wanted:
        return None
    try:
        return Severity(wanted)
    except ValueError:
        raise InvalidInputError(f"unknown severity {wanted[:20]!r}",
                                hint="use critical, high, medium, low or info") from None


def audit(ctx: Ctx) -> Response:
    """The newest audit: run in the background, so while it runs the page asks for it again
    (htmx) and gets only the findings' fragment back."""
    severity = _severity(ctx)
    held = audit_result(ctx.rt, actor=f"console:{ctx.user.name}",
                        fresh=ctx.query.get("fresh") == "1")
    view = held.value if held is not None else None
    findings: tuple[Finding, ...] = ()
    if view is not None:
        findings = view.by_severity.get(severity.value, ()) if severity else view.ordered
    return page(ctx, "audit.html", result=view.result if view is not None else None,
                findings=findings[:SHOWN], hidden=max(0, len(findings) - SHOWN),
                counts=view.counts if view is not None else {},
                severity=severity.value if severity else "",
                severities=[s.value for s in Severity], formats=list(FORMATS),
                pending=held is None or held.refreshing, ttl=int(AUDIT_TTL),
                fragment="_audit_findings.html")


def download(ctx: Ctx) -> Response:
    kind = str(ctx.params.get("kind", ""))
    if kind not in FORMATS:
        raise InvalidInputError(f"no report format {kind[:20]!r}",
                                hint="ask for report.json, report.sarif or report.html")
    result = audit_now(ctx.rt, actor=f"console:{ctx.user.name}")
    media, render = FORMATS[kind]
    return Response(render(result), media_type=media, headers={
        "content-disposition": f'attachment; filename="audit.{kind}"'})
