"""The console's compliance page: each framework's score, its provisions with their status
and evidence, and the report to download as JSON, SARIF or HTML."""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response

from iotsec.app.console.compliance import COMPLIANCE_TTL, compliance_now, compliance_result
from iotsec.compliance.evaluate import ComplianceResult
from iotsec.compliance.frameworks import FRAMEWORKS
from iotsec.compliance.report import (
    compliance_html,
    compliance_json_bytes,
    compliance_sarif_bytes,
)
from iotsec.console.web import Ctx, page
from iotsec.errors import InvalidInputError

__all__ = ["FORMATS", "compliance", "download"]

def _html(result: ComplianceResult) -> bytes:
    return compliance_html(result).encode("utf-8")


FORMATS: dict[str, tuple[str, Callable[[ComplianceResult], bytes]]] = {
    "json": ("application/json", compliance_json_bytes),
    "sarif": ("application/sarif+json", compliance_sarif_bytes),
    "html": ("text/html; charset=utf-8", _html),
}


def compliance(ctx: Ctx) -> Response:
    """The chosen framework's report: computed in the background, so while it is being
    computed the page asks for it again (htmx) and gets only the report's fragment back."""
    chosen = ctx.query.get("framework", "")
    held = None
    if chosen:
        held = compliance_result(ctx.rt, chosen, actor=f"console:{ctx.user.name}",
                                 fresh=ctx.query.get("fresh") == "1")
    pending = bool(chosen) and (held is None or held.refreshing)
    return page(ctx, "compliance.html", frameworks=list(FRAMEWORKS.values()), chosen=chosen,
                result=held.value if held is not None else None, pending=pending,
                ttl=int(COMPLIANCE_TTL), formats=list(FORMATS),
                fragment="_compliance_result.html")


def download(ctx: Ctx) -> Response:
    name = str(ctx.params.get("name", ""))
    framework_id, _, kind = name.rpartition(".")
    if kind not in FORMATS or not framework_id:
        raise InvalidInputError(f"no report {name[:80]!r}",
                                hint="ask for FRAMEWORK.json, .sarif or .html")
    result = compliance_now(ctx.rt, framework_id, actor=f"console:{ctx.user.name}")
    media, render = FORMATS[kind]
    return Response(render(result), media_type=media, headers={
        "content-disposition": f'attachment; filename="compliance-{result.framework.id}.{kind}"'})
