"""Compliance reports: versioned JSON (with a published JSON Schema), SARIF 2.1.0, and one
self-contained HTML file.

In SARIF every provision is a rule (``etsi-en-303-645/5.1-1``) and every provision that
counts against the fleet (``fail``, ``partial``, or a missing justification) is a result, at
the level its severity gives (see :func:`iotsec.compliance.evaluate.result_severity`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from iotsec import __version__
from iotsec.compliance.catalog import Provision, Status
from iotsec.compliance.evaluate import ComplianceResult, ProvisionResult
from iotsec.findings.html import REPORT_CSS, html_document, html_sections
from iotsec.findings.html import escape as _e
from iotsec.findings.model import Severity
from iotsec.findings.report import ReportFormat, iso_time, json_bytes
from iotsec.findings.sarif import sarif_document, sarif_run

__all__ = ["COMPLIANCE_FORMAT", "COMPLIANCE_FORMAT_VERSION", "COMPLIANCE_REPORT",
           "compliance_html", "compliance_json", "compliance_json_bytes",
           "compliance_report_schema", "compliance_sarif", "compliance_sarif_bytes"]

COMPLIANCE_FORMAT = "iotsec-compliance-report"
COMPLIANCE_FORMAT_VERSION = 1
COMPLIANCE_REPORT = ReportFormat(
    COMPLIANCE_FORMAT, COMPLIANCE_FORMAT_VERSION, "urn:iotsec:schema:compliance-report:1",
    "iotsec.compliance", "schemas/compliance-report.schema.json")


def compliance_report_schema() -> dict[str, Any]:
    """The JSON Schema of the compliance report (``compliance-report.schema.json``)."""
    return COMPLIANCE_REPORT.schema()


# --------------------------------------------------------------------------- JSON


def _provision_dict(r: ProvisionResult) -> dict[str, Any]:
    p = r.provision
    att = r.attestation
    return {
        "id": p.id, "number": p.number, "title": p.title, "category": p.category,
        "level": p.level.value if p.level else None, "conditional": p.conditional,
        "condition": p.condition, "summary": p.summary, "elements": list(p.elements),
        "status": r.status.value,
        "automatic_status": r.automatic.value if r.automatic else None,
        "justification": r.justification,
        "needs_justification": r.needs_justification, "justified": r.justified,
        "conflict": r.conflict,
        "severity": r.severity.value if r.severity else None,
        "evidence": [e.to_dict() for e in r.evidence],
        "attestation": None if att is None else {
            "version": att.version, "status": att.status.value, "note": att.note,
            "actor": att.actor, "at": iso_time(att.at)},
    }


def _sources(result: ComplianceResult) -> dict[str, Any]:
    ev = result.evidence
    audit: dict[str, Any]
    if ev.audit is None:
        audit = {"ran": False, "reason": ev.audit_missing, "started_at": None, "findings": 0,
                 "checks": 0, "skipped": []}
    else:
        audit = {"ran": True, "reason": None, "started_at": iso_time(ev.audit.started_at),
                 "findings": len(ev.audit.findings), "checks": len(ev.audit.outcomes),
                 "skipped": sorted(k for k, o in ev.audit.outcomes.items() if not o.ran)}
    scan = None if ev.scan is None else {
        "started_at": ev.scan.started_at, "targets": list(ev.scan.targets),
        "services": ev.scan.services, "findings": len(ev.scan.findings)}
    facts = [{"name": f.name, "ok": f.ok, "detail": f.detail, "refs": list(f.refs)}
             for f in sorted(ev.facts.values(), key=lambda f: f.name)]
    return {"audit": audit, "scan": scan, "facts": facts,
            "attestations": len(ev.attestations)}


def _summary(result: ComplianceResult) -> dict[str, Any]:
    fw = result.framework
    by_severity = {s.value: 0 for s in Severity}
    for r in result.results:
        if r.severity is not None:
            by_severity[r.severity.value] += 1
    worst = result.worst
    return {
        "provisions": len(result.results), "by_status": result.by_status(),
        "score": result.score(), "by_severity": by_severity,
        "worst": worst.value if worst else None,
        "unjustified": sum(1 for r in result.results if r.unjustified),
        "conflicts": sum(1 for r in result.results if r.conflict),
        "categories": [{"id": c.id, "title": c.title,
                        "provisions": len(result.in_category(c.id)),
                        "by_status": result.by_status(result.in_category(c.id)),
                        "score": result.score(result.in_category(c.id))}
                       for c in fw.categories],
    }


def compliance_json(result: ComplianceResult) -> dict[str, Any]:
    """The report as a JSON-ready dict (format ``iotsec-compliance-report``, version 1)."""
    fw = result.framework
    return {
        **COMPLIANCE_REPORT.header(__version__),
        "framework": {"id": fw.id, "name": fw.name, "version": fw.version,
                      "reference": fw.reference},
        "generated_at": iso_time(result.generated_at),
        "sources": _sources(result),
        "summary": _summary(result),
        "provisions": [_provision_dict(r) for r in result.results],
    }


def compliance_json_bytes(result: ComplianceResult) -> bytes:
    """:func:`compliance_json` as the bytes of a report file."""
    return json_bytes(compliance_json(result))


# --------------------------------------------------------------------------- SARIF


def _rule_id(fw_id: str, p: Provision) -> str:
    return f"{fw_id}/{p.id}"


def _descriptor(fw_id: str, p: Provision) -> dict[str, Any]:
    level = p.level_text or "none"
    return {
        "id": _rule_id(fw_id, p),
        "name": "".join(part.capitalize() for part in p.title.replace("-", " ").split()),
        "shortDescription": {"text": f"{p.number} {p.title}"},
        "fullDescription": {"text": p.summary},
        "help": {"text": f"Requirement level: {level}. {p.summary}"},
        "properties": {"tags": ["compliance", fw_id, f"category:{p.category}"],
                       "level": p.level.value if p.level else None,
                       "conditional": p.conditional},
    }


def _message(r: ProvisionResult) -> str:
    parts = [f"{r.provision.number} {r.provision.title}: {r.status.value}"]
    if r.unjustified:
        parts.append("no justification is recorded (iotsec compliance attest)")
    if r.justification:
        parts.append(r.justification)
    if r.conflict:
        parts.append(r.conflict)
    return ". ".join(parts)


def _sarif_result(fw_id: str, r: ProvisionResult, index: int) -> dict[str, Any]:
    severity = r.severity or Severity.INFO
    rule_id = _rule_id(fw_id, r.provision)
    objects = sorted({o for e in r.evidence for o in e.objects})[:50]
    return {
        "ruleId": rule_id, "ruleIndex": index, "kind": "fail",
        "level": severity.sarif_level,
        "message": {"text": _message(r)},
        "locations": [{"logicalLocations": [{"name": r.provision.id,
                                             "fullyQualifiedName": rule_id,
                                             "kind": "resource"}]}],
        "partialFingerprints": {
            "iotsecProvision/v1": hashlib.sha256(rule_id.encode()).hexdigest()[:32]},
        "properties": {"status": r.status.value, "severity": severity.value,
                       "security-severity": severity.security_severity,
                       "unjustified": r.unjustified, "objects": objects,
                       "evidence": [e.to_dict() for e in r.evidence]},
    }


def compliance_sarif(result: ComplianceResult) -> dict[str, Any]:
    """A SARIF 2.1.0 log: one rule per provision, one result per provision counted
    against the fleet."""
    fw = result.framework
    index = {p.id: i for i, p in enumerate(fw.provisions)}
    results = [_sarif_result(fw.id, r, index[r.provision.id]) for r in result.results
               if r.severity is not None]
    # An evaluation is instantaneous (the evidence was gathered before), and has nothing
    # to notify: the invocation starts and ends at generation and carries no notes.
    return sarif_document(sarif_run(
        version=__version__, rules=[_descriptor(fw.id, p) for p in fw.provisions],
        results=results,
        automation_id=f"iotsec-compliance/{fw.id}/{iso_time(result.generated_at)}",
        started=result.generated_at, finished=result.generated_at,
        properties={"framework": fw.id, "frameworkVersion": fw.version,
                    "summary": {"byStatus": result.by_status(), "score": result.score()}}))


def compliance_sarif_bytes(result: ComplianceResult) -> bytes:
    """:func:`compliance_sarif` as the bytes of a report file."""
    return json_bytes(compliance_sarif(result))


# --------------------------------------------------------------------------- HTML

_STATUS_COLOURS = {Status.PASS: "#2e7d32", Status.FAIL: "#c0392b", Status.PARTIAL: "#d68910",
                   Status.MANUAL: "#6c7a89", Status.NOT_APPLICABLE: "#aab4c0"}
_CSS = REPORT_CSS + "".join(
    f".st-{s.value}{{background:{c}}}" for s, c in _STATUS_COLOURS.items()) + """
.st{display:inline-block;border-radius:4px;padding:0 6px;color:#fff;font-size:12px;
font-weight:600;text-transform:uppercase;white-space:nowrap}.score{font-size:34px;font-weight:700}
.warn{background:#fdf2e9;border-left:3px solid #d68910;padding:6px 10px;margin:8px 0 0}
svg text{font:12px system-ui,sans-serif;fill:#1d2330}
"""


def _chart(result: ComplianceResult) -> str:
    """One horizontal bar per category, split by status, with the category's score."""
    cats = result.framework.categories
    row, label_w, bar_w = 22, 330, 420
    height = row * len(cats) + 10
    parts = [f'<svg width="{label_w + bar_w + 70}" '
             f'height="{height}" role="img" aria-label="status per category">']
    for i, c in enumerate(cats):
        rs = result.in_category(c.id)
        y = 5 + i * row
        title = c.title if len(c.title) <= 48 else c.title[:45] + "..."
        parts.append(f'<text x="0" y="{y + 14}">{_e(c.id)} {_e(title)}</text>')
        x = float(label_w)
        for s in Status:
            n = sum(1 for r in rs if r.status is s)
            if not n:
                continue
            w = bar_w * n / len(rs)
            parts.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="15" '
                         f'fill="{_STATUS_COLOURS[s]}"><title>{_e(s.value)}: {n}</title></rect>')
            x += w
        score = result.score(rs)
        shown = "n/a" if score is None else f"{score:g}%"
        parts.append(f'<text x="{label_w + bar_w + 8}" y="{y + 14}">{shown}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _summary_html(result: ComplianceResult) -> str:
    counts = result.by_status()
    cards = "".join(f'<div class="card st-{s.value}"><b>{counts[s.value]}</b>'
                    f'{_e(s.value.replace("_", " "))}</div>' for s in Status)
    score = result.score()
    rows = "".join(
        f"<tr><td>{_e(c.id)}</td><td>{_e(c.title)}</td>"
        f"<td>{len(result.in_category(c.id))}</td>"
        f"<td>{_e('n/a' if (s := result.score(result.in_category(c.id))) is None else f'{s:g}%')}"
        f"</td></tr>" for c in result.framework.categories)
    unjustified = sum(1 for r in result.results if r.unjustified)
    return (f'<p><span class="score">{_e("n/a" if score is None else f"{score:g}%")}</span> '
            f'<span class="muted">overall score (pass 1, partial 0.5; not applicable left '
            f'out)</span></p><div class="cards">{cards}</div>'
            f'<p class="muted">{unjustified} provisions lack a recorded justification.</p>'
            f"{_chart(result)}<table><thead><tr><th>category</th><th>title</th>"
            f"<th>provisions</th><th>score</th></tr></thead><tbody>{rows}</tbody></table>")


def _sources_html(result: ComplianceResult) -> str:
    data = _sources(result)
    audit = data["audit"]
    audit_text = (f"ran at {audit['started_at']}: {audit['checks']} checks, "
                  f"{audit['findings']} findings" if audit["ran"]
                  else f"not run ({audit['reason']})")
    scan = data["scan"]
    scan_text = "none given" if scan is None else (
        f"{', '.join(scan['targets'])} at {scan['started_at']}: {scan['services']} services, "
        f"{scan['findings']} findings")
    facts = "".join(f"<tr><td class=\"mono\">{_e(f['name'])}</td>"
                    f"<td>{_e({True: 'yes', False: 'no', None: 'unknown'}[f['ok']])}</td>"
                    f"<td>{_e(f['detail'])}</td></tr>" for f in data["facts"])
    return (f"<dl><dt>fleet audit</dt><dd>{_e(audit_text)}</dd><dt>scan report</dt>"
            f"<dd>{_e(scan_text)}</dd><dt>attestations</dt><dd>{data['attestations']}</dd>"
            f"</dl><table><thead><tr><th>fact</th><th>holds</th><th>detail</th></tr></thead>"
            f"<tbody>{facts}</tbody></table>")


def _provision_html(r: ProvisionResult) -> str:
    p = r.provision
    evidence = "".join(
        f"<tr><td>{_e(e.source)}</td><td class=\"mono\">{_e(e.ref)}</td>"
        f"<td>{_e(e.outcome)}</td><td>{_e(e.detail)}"
        + (f"<br><span class=\"mono muted\">{_e(', '.join(e.objects))}</span>"
           if e.objects else "") + "</td></tr>" for e in r.evidence)
    evidence_html = ("<table><thead><tr><th>source</th><th>check</th><th>outcome</th>"
                     f"<th>detail</th></tr></thead><tbody>{evidence}</tbody></table>"
                     if evidence else '<p class="muted">No automatic evidence.</p>')
    att = r.attestation
    att_html = "" if att is None else (
        f"<dt>attestation</dt><dd>version {att.version}: {_e(att.status.value)} by "
        f"{_e(att.actor)} at {_e(iso_time(att.at))}: {_e(att.note)}</dd>")
    level = p.level_text or "none"
    elements = "".join(f"<li>{_e(el)}</li>" for el in p.elements)
    warn = ""
    if r.unjustified:
        warn += ('<div class="warn">No justification is recorded: record one with '
                 f"<code>iotsec compliance attest {_e(p.id)}</code>.</div>")
    if r.conflict:
        warn += f'<div class="warn">{_e(r.conflict)}</div>'
    is_open = " open" if r.status in (Status.FAIL, Status.PARTIAL) or r.unjustified else ""
    return (f'<details id="p-{_e(p.id)}"{is_open}><summary><span class="st st-{r.status.value}">'
            f'{_e(r.status.value.replace("_", " "))}</span> <span class="t">{_e(p.number)} '
            f'{_e(p.title)}</span> <span class="muted">level {_e(level)}</span></summary>'
            f"<p>{_e(p.summary)}</p>" + (f"<ul>{elements}</ul>" if elements else "")
            + (f'<p class="muted">Applies when {_e(p.condition)}.</p>' if p.condition else "")
            + f"<dl><dt>status</dt><dd>{_e(r.status.value)}"
            + (f" (evidence alone: {_e(r.automatic.value)})"
               if r.automatic and (r.automatic is not r.status or att) else "")
            + f"</dd><dt>justification</dt><dd>{_e(r.justification)}</dd>{att_html}</dl>"
            + f"{evidence_html}{warn}</details>")


def compliance_html(result: ComplianceResult) -> str:
    """One self-contained HTML file (inline CSS and SVG, no script, no external resource)."""
    fw = result.framework
    title = f"{fw.name} compliance report"
    sections = [("Summary", _summary_html(result)), ("Evidence used", _sources_html(result))]
    for c in fw.categories:
        body = "".join(_provision_html(r) for r in result.in_category(c.id))
        sections.append((f"{c.id} {c.title}" if c.id != c.title else c.title, body))
    return html_document(
        title=title, subtitle=f"{fw.reference} - generated {iso_time(result.generated_at)}",
        body=html_sections(sections), version=__version__, css=_CSS)
