"""``iotsec compliance``: reports against ETSI EN 303 645, NIST IR 8259A and the OWASP IoT
Top 10, and the attestations that record what a person decided.

Exit codes (for CI): 0 the report ran and nothing counts at or above ``--fail-on``; 1 it
ran and something does; 2 it could not run (unknown framework, unusable scan report, no
home...). A provision counts as: fail of a mandatory provision (or of one without a level)
high, fail of a recommendation medium, ``partial`` one step lower, a missing justification
medium (mandatory) or low (recommendation). The other commands exit 2 when they refuse.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer

from iotsec.app.compliance import reports as service
from iotsec.app.wire.records import AttestationOut
from iotsec.cli.context import runtime
from iotsec.cli.options import HtmlReportOpt, JsonOpt, JsonReportOpt, JsonSchemaOpt, SarifReportOpt
from iotsec.cli.output import console, emit_json, plural, read_input, table, when
from iotsec.cli.reports import could_not_run, run_report, write_schema
from iotsec.compliance import report
from iotsec.compliance.catalog import Status
from iotsec.compliance.evaluate import ComplianceResult
from iotsec.compliance.evidence import MAX_SCAN_REPORT
from iotsec.compliance.frameworks import FRAMEWORKS
from iotsec.errors import IotsecError

__all__ = [
    "FRAMEWORK_HELP", "FrameworkOpt", "app", "attest", "frameworks", "list_attestations",
    "report_cmd"
]

app = typer.Typer(help="Compliance reports (ETSI EN 303 645, NIST IR 8259A, OWASP IoT Top 10) "
                  "and attestations.", no_args_is_help=True)

FRAMEWORK_HELP = ", ".join(FRAMEWORKS)
FrameworkOpt = Annotated[str, typer.Option(
    "--framework", "-f", metavar="FRAMEWORK", help=f"One of: {FRAMEWORK_HELP}.")]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _print(result: ComplianceResult) -> None:
    rows = [(r.provision.number, r.provision.title[:60], r.provision.level_text or "",
             r.status.value + (" (no justification)" if r.unjustified else ""),
             r.severity.value if r.severity else "")
            for r in result.results]
    fw = result.framework
    table(f"{fw.name} {fw.version}", ["provision", "title", "level", "status", "counts as"],
          rows)
    counts = result.by_status()
    score = result.score()
    shown = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    console.print(f"{plural(len(result.results), 'provision')}: {shown}; score "
                  f"{'n/a' if score is None else f'{score:g}%'}", markup=False,
                  soft_wrap=True)


@app.command("report")
def report_cmd(
    framework: FrameworkOpt,
    json_file: JsonReportOpt = None,
    html_file: HtmlReportOpt = None,
    sarif: SarifReportOpt = None,
    scan_file: Annotated[str | None, typer.Option(
        "--scan", metavar="FILE", help="A scan report to use as evidence (written by "
        "'iotsec scan --json-file FILE'; '-' = stdin).")] = None,
    broker_dir: Annotated[Path | None, typer.Option(
        "--broker-dir", metavar="DIR", help="The Mosquitto directory the fleet audit checks "
        "(default: IOTSEC_BROKER_DIR).")] = None,
    fail_on: Annotated[str, typer.Option(
        "--fail-on", metavar="SEVERITY", help="Exit 1 when a provision counts at least this "
        "much: critical, high, medium, low, info or never.")] = "high",
    print_schema: JsonSchemaOpt = False,
) -> None:
    """Judge every provision of a framework from the fleet audit, iotsec's own configuration,
    an optional scan report and the recorded attestations. Exit 0: nothing at or above
    --fail-on; 1: something is; 2: the report could not be made."""
    if print_schema:
        write_schema(report.compliance_report_schema())
        return

    def make() -> ComplianceResult:
        service.framework(framework)
        data = read_input(scan_file, MAX_SCAN_REPORT, "scan report") if scan_file else None
        with runtime() as rt:
            return service.report(rt, framework, scan_report=data, broker_dir=broker_dir,
                                  actor=_actor())

    run_report(fail_on, [
        ("--json", json_file, report.compliance_json_bytes),
        ("--sarif", sarif, report.compliance_sarif_bytes),
        ("--html", html_file, lambda result: report.compliance_html(result).encode("utf-8"))],
        make, _print, lambda result, t: bool(result.at_or_above(t)))


@app.command("attest")
def attest(
    provision: Annotated[str, typer.Argument(metavar="PROVISION",
                                             help="The provision, e.g. 5.2-1 or I6.")],
    framework: FrameworkOpt,
    status: Annotated[str, typer.Option(
        "--status", metavar="STATUS",
        help=f"One of: {', '.join(s.value for s in Status)}.")],
    note: Annotated[str, typer.Option(
        "--note", metavar="TEXT", help="The justification (required; up to 4000 "
        "characters).")],
    as_json: JsonOpt = False,
) -> None:
    """Record a person's status and justification for a provision (a new version; the
    history is kept). On a provision iotsec decides from evidence, an attestation can only
    make the result worse or mark it not applicable when no check fails."""
    request = service.AttestationRequest(framework=framework, provision=provision,
                                         status=status, note=note, actor=_actor())
    try:
        with runtime() as rt:
            recorded = service.attest(rt, request)
    except IotsecError as exc:
        raise could_not_run(exc) from None
    if as_json:
        emit_json(AttestationOut.from_domain(recorded))
        return
    console.print(f"Recorded {recorded.framework} {recorded.provision} version "
                  f"{recorded.version}: {recorded.status.value}", markup=False)


@app.command("attestations")
def list_attestations(
    framework: Annotated[str | None, typer.Option(
        "--framework", "-f", metavar="FRAMEWORK", help=f"Only this one: {FRAMEWORK_HELP}.")
    ] = None,
    history: Annotated[bool, typer.Option(
        "--history", help="Every version, not only the latest.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The recorded attestations (the latest version of each, or with --history all)."""
    try:
        with runtime() as rt:
            found = service.attestations(rt, framework, history=history)
    except IotsecError as exc:
        raise could_not_run(exc) from None
    if as_json:
        emit_json([AttestationOut.from_domain(a) for a in found])
        return
    table(plural(len(found), "attestation"),
          ["framework", "provision", "version", "status", "by", "at", "note"],
          [(a.framework, a.provision, a.version, a.status.value, a.actor, when(a.at),
            a.note[:80]) for a in found])


@app.command("frameworks")
def frameworks(as_json: JsonOpt = False) -> None:
    """The frameworks iotsec reports on."""
    rows = [{"id": f.id, "name": f.name, "version": f.version, "provisions": len(f.provisions),
             "automatic": sum(1 for p in f.provisions if p.checks.automatic)}
            for f in FRAMEWORKS.values()]
    if as_json:
        emit_json(rows)
        return
    table("Frameworks", ["id", "name", "version", "provisions", "with automatic checks"],
          [(r["id"], r["name"], r["version"], r["provisions"], r["automatic"]) for r in rows])
