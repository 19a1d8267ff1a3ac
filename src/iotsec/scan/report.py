"""Scan reports: versioned JSON (with a published JSON Schema), SARIF 2.1.0, one-file HTML.

The formats themselves are :mod:`iotsec.findings` (shared with the fleet audit and the
compliance reports); this module adds what is particular to a network scan (hosts,
services, port counts).
"""

from __future__ import annotations

import json
from typing import Any

from iotsec import __version__
from iotsec.findings.html import escape as _e
from iotsec.findings.html import html_page
from iotsec.findings.report import ReportFormat, iso_time, json_bytes, severity_summary
from iotsec.findings.sarif import sarif_log
from iotsec.scan.model import ScanResult
from iotsec.scan.rules import ALL_RULES

__all__ = [
    "SCAN_FORMAT", "SCAN_FORMAT_VERSION", "SCAN_REPORT", "scan_html", "scan_json",
    "scan_json_bytes", "scan_report_schema", "scan_sarif", "scan_sarif_bytes"
]

SCAN_FORMAT = "iotsec-scan-report"
SCAN_FORMAT_VERSION = 1
SCAN_REPORT = ReportFormat(SCAN_FORMAT, SCAN_FORMAT_VERSION, "urn:iotsec:schema:scan-report:1",
                           "iotsec.scan", "schemas/scan-report-1.schema.json")


def scan_report_schema() -> dict[str, Any]:
    """The JSON Schema of the scan report (shipped as ``scan-report-1.schema.json``)."""
    return SCAN_REPORT.schema()


# --------------------------------------------------------------------------- JSON


def scan_json(result: ScanResult) -> dict[str, Any]:
    """The scan report as a JSON-ready dict (format ``iotsec-scan-report``, version 1)."""
    services = result.services
    return {
        **SCAN_REPORT.header(__version__),
        "scan": {
            "started_at": iso_time(result.started_at),
            "finished_at": iso_time(result.finished_at),
            "duration_seconds": round(result.seconds, 3), "targets": list(result.targets),
            "ports": result.ports, "scope": result.scope, "hosts_planned": result.host_count,
            "options": result.options,
        },
        "summary": {
            "hosts_with_services": len(result.hosts), "services": len(services),
            **severity_summary(result.findings),
        },
        "port_scan": {
            "attempted": result.port_stats.attempted, "open": len(result.port_stats.open),
            "closed": result.port_stats.closed, "filtered": result.port_stats.filtered,
            "unreachable": result.port_stats.unreachable,
            "seconds": round(result.port_stats.seconds, 3),
        },
        "hosts": [h.to_dict() for h in result.hosts],
        "findings": [f.to_dict() for f in result.findings],
        "rules": [r.to_dict() for r in ALL_RULES],
        "notes": list(result.notes),
        "cross_check": result.cross_check,
    }


def scan_json_bytes(result: ScanResult) -> bytes:
    """:func:`scan_json` as the bytes of a report file."""
    return json_bytes(scan_json(result))


# --------------------------------------------------------------------------- SARIF


def scan_sarif(result: ScanResult) -> dict[str, Any]:
    """The scan as a SARIF 2.1.0 log (the services found are run properties)."""
    return sarif_log(
        version=__version__, rules=ALL_RULES, findings=result.findings,
        started=result.started_at, finished=result.finished_at,
        automation_id=f"iotsec-scan/{iso_time(result.started_at)}", notes=result.notes,
        properties={"targets": list(result.targets), "ports": result.ports,
                    "services": [{"host": s.host, "port": s.port, "transport": s.transport,
                                  "service": s.name} for s in result.services]})


def scan_sarif_bytes(result: ScanResult) -> bytes:
    """:func:`scan_sarif` as the bytes of a report file."""
    return json_bytes(scan_sarif(result))


# --------------------------------------------------------------------------- HTML


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
    """The scan as one self-contained HTML page (findings, then the services found)."""
    stats = result.port_stats
    facts = [
        ("targets", ", ".join(result.targets)), ("ports", result.ports),
        ("started", iso_time(result.started_at)), ("duration", f"{result.seconds:.1f} s"),
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
                     subtitle=f"{', '.join(result.targets)} - {iso_time(result.started_at)}",
                     findings=result.findings, version=__version__, sections=sections,
                     facts=facts)
