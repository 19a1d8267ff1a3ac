"""``iotsec audit``: the fleet audit, computed from iotsec's own state.

Exit codes (for CI): 0 the audit ran and found nothing at or above ``--fail-on``; 1 it ran
and did; 2 it could not run (no initialised home, a threshold out of range, a broker
directory that cannot be read). Reports are written in every case where the audit ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from iotsec.app import audit as service
from iotsec.audit import report
from iotsec.audit.model import AuditResult
from iotsec.audit.snapshot import AuditOptions
from iotsec.cli.context import runtime
from iotsec.cli.options import (
    FailOnFindingOpt,
    HtmlReportOpt,
    JsonReportOpt,
    JsonSchemaOpt,
    SarifReportOpt,
)
from iotsec.cli.output import console, err_console, plural, table
from iotsec.cli.reports import run_report, write_schema
from iotsec.findings.model import count_by_severity
from iotsec.timeutil import parse_duration

__all__ = ["audit"]


def _print(result: AuditResult, limit: int) -> None:
    findings = list(result.findings)
    shown_findings = findings if limit == 0 else findings[:limit]
    if shown_findings:
        table("Findings", ["severity", "rule", "location", "finding", "fix"],
              [(f.severity.value, f.rule.id, f.location.uri, f.message, f.fix)
               for f in shown_findings])
    if len(shown_findings) < len(findings):
        console.print(f"... and {len(findings) - len(shown_findings)} more findings (--limit 0 "
                      "shows all; --json, --sarif or --html FILE write them all)",
                      markup=False, soft_wrap=True)
    rows = report.check_rows(result)
    table("Checks", ["rule", "status", "checked", "findings", "note"],
          [(r["rule"], r["status"], r["checked"], r["findings"],
            (r["skipped"] or "").split(":", 1)[0]) for r in rows])
    for reason in dict.fromkeys(r["skipped"] for r in rows if r["skipped"]):
        err_console.print(f"note: skipped: {reason}", markup=False, soft_wrap=True)
    counts = count_by_severity(findings)
    shown = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    ran = sum(r["status"] != "skipped" for r in rows)
    seconds = float(dict(result.facts).get("seconds", 0.0))
    console.print(f"{ran} of {plural(len(rows), 'check')} ran; "
                  f"{plural(len(findings), 'finding')}"
                  + (f" ({shown})" if shown else "") + f" in {seconds:.2f} s",
                  markup=False, soft_wrap=True)


def audit(
    json_file: JsonReportOpt = None,
    sarif: SarifReportOpt = None,
    html_file: HtmlReportOpt = None,
    fail_on: FailOnFindingOpt = "high",
    broker_dir: Annotated[Path | None, typer.Option(
        "--broker-dir", metavar="DIR", help="The Mosquitto directory made by 'iotsec broker "
        "mosquitto render' (default: IOTSEC_BROKER_DIR; without one the broker checks are "
        "skipped).")] = None,
    ca_days: Annotated[int, typer.Option(
        "--ca-days", metavar="DAYS", help="Flag CA certificates expiring within DAYS.")] = 180,
    cert_days: Annotated[int, typer.Option(
        "--cert-days", metavar="DAYS", help="Flag device certificates expiring within "
        "DAYS.")] = 30,
    max_cert_age: Annotated[int, typer.Option(
        "--max-cert-age", metavar="DAYS", help="Flag device certificates older than DAYS "
        "(since notBefore).")] = 398,
    window: Annotated[str, typer.Option(
        "--window", metavar="DURATION", help="Events window for connections, collisions and "
        "event recording (e.g. 24h, 7d).")] = "24h",
    crl_hours: Annotated[int, typer.Option(
        "--crl-hours", metavar="HOURS", help="Flag a broker CRL whose nextUpdate is closer "
        "than HOURS.")] = 24,
    token_unused_days: Annotated[int, typer.Option(
        "--token-unused-days", metavar="DAYS", help="Flag API tokens unused for DAYS.")
    ] = 90,
    limit: Annotated[int, typer.Option(
        "--limit", metavar="N", help="Findings shown in the table (0 = all); reports "
        "always hold all.", min=0)] = 50,
    print_schema: JsonSchemaOpt = False,
) -> None:
    """Audit the fleet from iotsec's own state: CA and device certificates, keys, revoked
    certificates still in use, shared identities, client id conflicts, the policy, the
    broker's configuration and CRL, event recording, firmware and API tokens. Exit 0:
    nothing at or above --fail-on; 1: findings at or above it; 2: the audit could not run."""
    if print_schema:
        write_schema(report.audit_report_schema())
        return

    def make() -> AuditResult:
        options = AuditOptions.parse(
            ca_days=ca_days, cert_days=cert_days, max_cert_age=max_cert_age,
            window=parse_duration(window), crl_hours=crl_hours,
            token_unused_days=token_unused_days)
        with runtime() as rt:
            return service.run_audit(rt, options, broker_dir=broker_dir, actor="cli")

    run_report(fail_on, [
        ("--json", json_file, report.audit_json_bytes),
        ("--sarif", sarif, report.audit_sarif_bytes),
        ("--html", html_file, lambda result: report.audit_html(result).encode("utf-8"))],
        make, lambda result: _print(result, limit),
        lambda result, t: any(f.severity >= t for f in result.findings))
