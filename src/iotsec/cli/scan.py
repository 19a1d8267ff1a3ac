"""``iotsec scan``: find the fleet's services and what is weak about them.

Exit codes (for CI): 0 the scan ran and found nothing at or above ``--fail-on``; 1 it ran
and did; 2 it could not run (bad input, a target out of scope, a name that does not
resolve...). Reports are written in every case where the scan ran.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from iotsec.app import scan as service
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.cli.options import FailOnFindingOpt, HtmlReportOpt, JsonSchemaOpt, SarifReportOpt
from iotsec.cli.output import console, err_console, plural, table
from iotsec.cli.reports import run_report, write_schema
from iotsec.config import Settings
from iotsec.errors import HomeNotInitialisedError
from iotsec.findings.model import count_by_severity
from iotsec.scan import report
from iotsec.scan.credentials import CredentialConfig
from iotsec.scan.model import (
    MAX_CONCURRENCY,
    MAX_RATE,
    PortScanConfig,
    ProbeConfig,
    ScanOptions,
    ScanResult,
)
from iotsec.scan.targets import DEFAULT_PORTS

__all__ = ["scan"]


@contextlib.contextmanager
def _runtime(required: bool) -> Iterator[Runtime | None]:
    """The home's runtime when there is one (its CA certificates and, with ``--fleet``,
    its devices); a scan of given targets also runs without a home."""
    try:
        rt = open_runtime(Settings())
    except HomeNotInitialisedError:
        if required:
            raise
        yield None
        return
    try:
        yield rt
    finally:
        rt.close()


def _print(result: ScanResult) -> None:
    rows = []
    for host in result.hosts:
        for s in sorted(host.services, key=lambda s: (s.transport, s.port)):
            tls_info = s.details.get("tls") or {}
            rows.append((host.address if not host.name else f"{host.address} ({host.name})",
                         f"{s.port}/{s.transport}", s.name,
                         tls_info.get("version") or ("yes" if s.tls else ""),
                         (s.banner or "")[:60], "; ".join(s.notes)[:80]))
    if rows:
        table("Services", ["host", "port", "service", "TLS", "banner", "notes"], rows)
    if result.findings:
        table("Findings", ["severity", "rule", "target", "finding"],
              [(f.severity.value, f.rule.id, f.location.uri, f.message)
               for f in result.findings])
    counts = count_by_severity(result.findings)
    shown = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    services = len(result.services)
    console.print(f"{plural(services, 'service')} on {len(result.hosts)} of "
                  f"{plural(result.host_count, 'address', 'addresses')}; "
                  f"{plural(len(result.findings), 'finding')}"
                  + (f" ({shown})" if shown else "") + f" in {result.seconds:.1f} s",
                  markup=False, soft_wrap=True)
    for note in result.notes:
        err_console.print(f"note: {note}", markup=False, soft_wrap=True)


def scan(
    targets: Annotated[list[str] | None, typer.Argument(
        metavar="TARGETS", help="Addresses, CIDR ranges (192.0.2.0/24) or host names.",
        show_default=False)] = None,
    ports: Annotated[str | None, typer.Option(
        "--ports", "-p", metavar="SPEC",
        help="Ports, nmap style: 22,80,8000-8100, T:/U: for TCP/UDP, 'all' = 1-65535. "
             f"Default: IoT ports ({DEFAULT_PORTS}).", show_default=False)] = None,
    scope: Annotated[Path | None, typer.Option(
        "--scope", metavar="FILE", help="Only what this file lists may be scanned (one "
        "address, CIDR range or host name per line).")] = None,
    confirm_large: Annotated[bool, typer.Option(
        "--confirm-large", help="Allow targets that add up to an IPv4 /8 or more.")] = False,
    fleet: Annotated[bool, typer.Option(
        "--fleet", help="Also scan the registered devices (their 'ip' attribute).")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the JSON report instead of tables.")] = False,
    sarif: SarifReportOpt = None,
    html_file: HtmlReportOpt = None,
    json_file: Annotated[str | None, typer.Option(
        "--json-file", metavar="FILE", help="Write the JSON report to FILE.")] = None,
    fail_on: FailOnFindingOpt = "high",
    with_nmap: Annotated[bool, typer.Option(
        "--with-nmap", help="Cross-check the open ports with 'nmap -sT' (nmap must be "
        "installed).")] = False,
    no_credentials: Annotated[bool, typer.Option(
        "--no-credentials", help="Do not try default credentials.")] = False,
    credential_rate: Annotated[float, typer.Option(
        "--credential-rate", metavar="N", help="Login attempts per second and service.",
        min=0.1, max=1000)] = 5.0,
    rate: Annotated[float, typer.Option(
        "--rate", metavar="N", help="TCP connection attempts per second (0 = no limit "
        "beyond --concurrency).", min=0, max=MAX_RATE)] = 100_000.0,
    concurrency: Annotated[int, typer.Option(
        "--concurrency", metavar="N", help="TCP connections in flight at once.", min=1,
        max=MAX_CONCURRENCY)] = 500,
    timeout: Annotated[float, typer.Option(
        "--timeout", metavar="SECONDS", help="Connect timeout per port.", min=0.05,
        max=60)] = 1.0,
    ca_file: Annotated[list[Path] | None, typer.Option(
        "--ca-file", metavar="FILE", help="More trusted CA certificates (PEM); repeatable.")
    ] = None,
    no_fleet_ca: Annotated[bool, typer.Option(
        "--no-fleet-ca", help="Do not trust the iotsec home's CA certificates.")] = False,
    print_schema: JsonSchemaOpt = False,
) -> None:
    """Scan TARGETS (and with --fleet the registered devices) for open services, identify
    each by probing, and report plaintext protocols, anonymous or wildcard MQTT, default
    credentials and TLS weaknesses. Exit 0: nothing at or above --fail-on; 1: findings at
    or above it; 2: the scan could not run."""
    if print_schema:
        write_schema(report.scan_report_schema())
        return

    def make() -> ScanResult:
        # The option classes check their ranges with ValueError (Typer's bounds already
        # hold them), so building them here does not turn a bug into an exit 2.
        options = ScanOptions(
            ports=PortScanConfig(concurrency=concurrency, rate=rate, timeout=timeout),
            probe=ProbeConfig(connect_timeout=timeout),
            credentials=CredentialConfig(enabled=not no_credentials, rate=credential_rate))
        request = service.ScanRequest(
            targets=tuple(targets or ()), ports=ports, scope_file=scope,
            confirm_large=confirm_large, fleet=fleet, with_nmap=with_nmap,
            ca_files=tuple(ca_file or ()), use_fleet_ca=not no_fleet_ca, options=options)
        with _runtime(required=fleet) as rt:
            return service.scan(request, rt=rt)

    run_report(fail_on, [
        ("--json", "-" if as_json else None, report.scan_json_bytes),
        ("--json-file", json_file, report.scan_json_bytes),
        ("--sarif", sarif, report.scan_sarif_bytes),
        ("--html", html_file, lambda result: report.scan_html(result).encode("utf-8"))],
        make, _print, lambda result, t: any(f.severity >= t for f in result.findings))
