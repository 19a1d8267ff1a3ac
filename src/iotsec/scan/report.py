"""Reports: versioned JSON (with a published JSON Schema), SARIF 2.1.0, one-file HTML.

:func:`sarif_log` and :func:`html_page` take plain findings and rules, so the fleet audit
and the compliance reports write the same formats; the ``scan_*`` functions add what is
particular to a network scan (hosts, services, port counts).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from iotsec import __version__
from iotsec.scan.engine import ScanResult
from iotsec.scan.findings import Finding, Rule, Severity, count_by_severity, worst
from iotsec.scan.rules import ALL_RULES

__all__ = ["REPORT_CSS", "SARIF_SCHEMA_URI", "SCAN_FORMAT", "SCAN_FORMAT_VERSION", "html_page",
           "sarif_log", "scan_html", "scan_json", "scan_report_schema", "scan_sarif"]

SCAN_FORMAT = "iotsec-scan-report"
SCAN_FORMAT_VERSION = 1
SCAN_SCHEMA_ID = "urn:iotsec:schema:scan-report:1"
SARIF_SCHEMA_URI = ("https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/"
                    "sarif-schema-2.1.0.json")
INFORMATION_URI = "urn:iotsec"


def _time(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@cache
def scan_report_schema() -> dict[str, Any]:
    """The JSON Schema of the scan report (shipped as ``scan-report-1.schema.json``)."""
    text = resources.files("iotsec.scan").joinpath(
        "schemas/scan-report-1.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


# --------------------------------------------------------------------------- JSON


def scan_json(result: ScanResult) -> dict[str, Any]:
    """The scan report as a JSON-ready dict (format ``iotsec-scan-report``, version 1)."""
    findings = result.findings
    worst_severity = worst(findings)
    services = result.services
    return {
        "$schema": SCAN_SCHEMA_ID,
        "format": SCAN_FORMAT,
        "format_version": SCAN_FORMAT_VERSION,
        "tool": {"name": "iotsec", "version": __version__},
        "scan": {
            "started_at": _time(result.started_at), "finished_at": _time(result.finished_at),
            "duration_seconds": round(result.seconds, 3), "targets": list(result.targets),
            "ports": result.ports, "scope": result.scope, "hosts_planned": result.host_count,
            "options": result.options,
        },
        "summary": {
            "hosts_with_services": len(result.hosts), "services": len(services),
            "findings": len(findings), "by_severity": count_by_severity(findings),
            "worst": worst_severity.value if worst_severity else None,
        },
        "port_scan": {
            "attempted": result.port_stats.attempted, "open": len(result.port_stats.open),
            "closed": result.port_stats.closed, "filtered": result.port_stats.filtered,
            "unreachable": result.port_stats.unreachable,
            "seconds": round(result.port_stats.seconds, 3),
        },
        "hosts": [h.to_dict() for h in result.hosts],
        "findings": [f.to_dict() for f in findings],
        "rules": [r.to_dict() for r in ALL_RULES],
        "notes": list(result.notes),
        "cross_check": result.cross_check,
    }


def _dumps(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode()


def scan_json_bytes(result: ScanResult) -> bytes:
    return _dumps(scan_json(result))


# --------------------------------------------------------------------------- SARIF


def _rule_descriptor(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": "".join(part.capitalize() for part in rule.id.replace("/", "-").split("-")),
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.description},
        "help": {"text": f"Fix: {rule.fix}", "markdown": f"**Fix:** {rule.fix}"},
        "defaultConfiguration": {"level": rule.severity.sarif_level},
        "properties": {"tags": ["security", *rule.tags],
                       "security-severity": rule.severity.security_severity,
                       "severity": rule.severity.value, "precision": "high"},
    }


def _sarif_result(finding: Finding, index: int) -> dict[str, Any]:
    loc = finding.location
    return {
        "ruleId": finding.rule.id,
        "ruleIndex": index,
        "kind": "fail",
        "level": finding.severity.sarif_level,
        "message": {"text": f"{finding.message}. Fix: {finding.fix}"},
        "locations": [{
            "physicalLocation": {"artifactLocation": {"uri": loc.uri}},
            "logicalLocations": [{"name": loc.uri, "fullyQualifiedName": loc.uri,
                                  "kind": "resource"}],
        }],
        "partialFingerprints": {"iotsecFinding/v1": finding.fingerprint},
        "properties": {"severity": finding.severity.value,
                       "security-severity": finding.severity.security_severity,
                       "target": loc.to_dict(), "evidence": finding.evidence_dict(),
                       "fix": finding.fix},
    }


def sarif_log(*, rules: Sequence[Rule], findings: Iterable[Finding], started: datetime,
              finished: datetime, automation_id: str, notes: Sequence[str] = (),
              successful: bool = True, properties: Mapping[str, Any] | None = None,
              ) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run of iotsec. Every finding's rule must be in
    ``rules`` (findings of other rules are added to the rule list)."""
    rule_list = list(rules)
    index = {r.id: i for i, r in enumerate(rule_list)}
    results = []
    for f in findings:
        if f.rule.id not in index:
            index[f.rule.id] = len(rule_list)
            rule_list.append(f.rule)
        results.append(_sarif_result(f, index[f.rule.id]))
    run: dict[str, Any] = {
        "tool": {"driver": {
            "name": "iotsec", "version": __version__, "semanticVersion": __version__,
            "informationUri": INFORMATION_URI,
            "rules": [_rule_descriptor(r) for r in rule_list],
        }},
        "automationDetails": {"id": automation_id},
        "invocations": [{
            "executionSuccessful": successful,
            "startTimeUtc": _time(started), "endTimeUtc": _time(finished),
            "toolExecutionNotifications": [
                {"level": "note", "message": {"text": n}} for n in notes],
        }],
        "results": results,
    }
    if properties:
        run["properties"] = dict(properties)
    return {"$schema": SARIF_SCHEMA_URI, "version": "2.1.0", "runs": [run]}


def scan_sarif(result: ScanResult) -> dict[str, Any]:
    return sarif_log(
        rules=ALL_RULES, findings=result.findings, started=result.started_at,
        finished=result.finished_at, automation_id=f"iotsec-scan/{_time(result.started_at)}",
        notes=result.notes,
        properties={"targets": list(result.targets), "ports": result.ports,
                    "services": [{"host": s.host, "port": s.port, "transport": s.transport,
                                  "service": s.name} for s in result.services]})


def scan_sarif_bytes(result: ScanResult) -> bytes:
    return _dumps(scan_sarif(result))


# --------------------------------------------------------------------------- HTML

REPORT_CSS = """
:root{--crit:#7a0019;--high:#c0392b;--med:#d68910;--low:#2874a6;--info:#6c7a89;
--bg:#f6f7f9;--card:#fff;--ink:#1d2330;--muted:#5d6778;--line:#e2e6ec}
*{box-sizing:border-box}body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",
Roboto,sans-serif;color:var(--ink);background:var(--bg)}
header{background:#1d2330;color:#fff;padding:24px 32px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#c9d1dc}main{max-width:1100px;margin:0 auto;padding:24px 32px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:20px 24px;margin:0 0 20px}h2{margin:0 0 12px;font-size:18px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{flex:1;min-width:110px;border-radius:6px;
padding:12px 14px;color:#fff}.card b{display:block;font-size:26px;line-height:1.1}
.critical{background:var(--crit)}.high{background:var(--high)}.medium{background:var(--med)}
.low{background:var(--low)}.info{background:var(--info)}
.bar{display:flex;height:14px;border-radius:7px;overflow:hidden;margin:14px 0 4px;
background:var(--line)}.bar span{display:block}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:6px 8px;
border-bottom:1px solid var(--line);vertical-align:top}th{font-size:13px;color:var(--muted)}
.sev{display:inline-block;border-radius:4px;padding:0 6px;color:#fff;font-size:12px;
font-weight:600;text-transform:uppercase}details{border:1px solid var(--line);
border-radius:6px;margin:0 0 10px;padding:8px 12px}summary{cursor:pointer}
summary .t{font-weight:600}code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;
font-size:13px}dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:8px 0}
dt{color:var(--muted)}dd{margin:0;word-break:break-word}.fix{background:#eef6ee;
border-left:3px solid #2e7d32;padding:6px 10px;margin:8px 0 0}.muted{color:var(--muted)}
footer{color:var(--muted);font-size:13px;text-align:center;padding:0 0 24px}
"""

_ORDER = (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFO)


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _summary_cards(findings: Sequence[Finding]) -> str:
    counts = count_by_severity(findings)
    cards = "".join(f'<div class="card {s.value}"><b>{counts[s.value]}</b>{s.value}</div>'
                    for s in _ORDER)
    total = sum(counts.values())
    bar = "".join(f'<span class="{s.value}" style="width:{100 * counts[s.value] / total:.2f}%"'
                  f' title="{s.value}: {counts[s.value]}"></span>'
                  for s in _ORDER if counts[s.value]) if total else ""
    return (f'<div class="cards">{cards}</div><div class="bar" role="img" '
            f'aria-label="findings by severity">{bar}</div>')


def _finding_block(f: Finding) -> str:
    evidence = "".join(f"<dt>{_e(k)}</dt><dd class=\"mono\">"
                       f"{_e(', '.join(v) if isinstance(v, tuple) else v)}</dd>"
                       for k, v in f.evidence if v not in (None, "", ()))
    return (f'<details><summary><span class="sev {f.severity.value}">{_e(f.severity.value)}'
            f'</span> <span class="t">{_e(f.rule.title)}</span> '
            f'<span class="mono muted">{_e(f.location.uri)}</span><br>'
            f'<span class="muted">{_e(f.message)}</span></summary>'
            f"<p>{_e(f.message)}.</p><dl><dt>rule</dt><dd class=\"mono\">{_e(f.rule.id)}</dd>"
            f"{evidence}</dl><p class=\"muted\">{_e(f.rule.description)}</p>"
            f'<div class="fix"><b>Fix:</b> {_e(f.fix)}</div></details>')


def html_page(*, title: str, subtitle: str, findings: Sequence[Finding],
              sections: Sequence[tuple[str, str]] = (), facts: Sequence[tuple[str, str]] = (),
              ) -> str:
    """A self-contained HTML report (inline CSS, no script, no external resource).
    ``sections`` are (heading, HTML) pairs the caller has already escaped."""
    fact_rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    finding_html = "".join(_finding_block(f) for f in findings) or \
        '<p class="muted">No findings.</p>'
    extra = "".join(f"<section><h2>{_e(h)}</h2>{body}</section>" for h, body in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>{_e(title)}</title><style>{REPORT_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p>{_e(subtitle)}</p></header><main>"
        f"<section><h2>Summary</h2>{_summary_cards(findings)}<dl>{fact_rows}</dl></section>"
        f"<section><h2>Findings ({len(findings)})</h2>{finding_html}</section>{extra}"
        f"</main><footer>iotsec {_e(__version__)}</footer></body></html>\n")


def _services_table(result: ScanResult) -> str:
    rows = []
    for host in result.hosts:
        for s in sorted(host.services, key=lambda s: (s.transport, s.port)):
            who = host.address + (f" ({host.name})" if host.name else "") + \
                (f" [{host.device}]" if host.device else "")
            tls_info = s.details.get("tls") or {}
            tls_text = tls_info.get("version") or ("yes" if s.tls else "")
            notes = "; ".join(s.notes)
            rows.append(f"<tr><td class=\"mono\">{_e(who)}</td><td>{s.port}/{_e(s.transport)}"
                        f"</td><td>{_e(s.name)}</td><td>{_e(tls_text)}</td>"
                        f"<td class=\"mono\">{_e(s.banner)}</td><td>{_e(notes)}</td></tr>")
    if not rows:
        return '<p class="muted">No open service was found.</p>'
    return ("<table><thead><tr><th>host</th><th>port</th><th>service</th><th>TLS</th>"
            "<th>banner</th><th>notes</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>")


def scan_html(result: ScanResult) -> str:
    stats = result.port_stats
    facts = [
        ("targets", ", ".join(result.targets)), ("ports", result.ports),
        ("started", _time(result.started_at)), ("duration", f"{result.seconds:.1f} s"),
        ("addresses", str(result.host_count)),
        ("ports probed", f"{stats.attempted} ({len(stats.open)} open, {stats.closed} closed, "
                         f"{stats.filtered} filtered)"),
        ("scope file", result.scope or "none"),
    ]
    sections = [("Services", _services_table(result))]
    if result.notes:
        sections.append(("Notes", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in result.notes)
                         + "</ul>"))
    if result.cross_check:
        sections.append(("nmap cross-check", "<pre class=\"mono\">"
                         + _e(json.dumps(result.cross_check, indent=2)) + "</pre>"))
    return html_page(title="iotsec scan report",
                     subtitle=f"{', '.join(result.targets)} - {_time(result.started_at)}",
                     findings=result.findings, sections=sections, facts=facts)
