"""``iotsec netseg``: network segmentation policy as code (validate, check, compile)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from iotsec.app import netseg as service
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, emit_json, plural, read_input, table, write_output
from iotsec.errors import InvalidInputError
from iotsec.netseg.decide import Flow
from iotsec.netseg.findings import review_json
from iotsec.netseg.services import SERVICES
from iotsec.netseg.source import MAX_POLICY_BYTES

__all__ = ["FileArg", "app", "check", "compile_", "services", "validate"]

app = typer.Typer(
    help="Network segmentation: zones and rules as a policy file, checked, and compiled "
         "to an nftables firewall.", no_args_is_help=True)
FileArg = Annotated[str, typer.Argument(metavar="FILE", help="Zone policy, YAML or JSON "
                                                             "('-' = stdin).")]


def _read(path: str) -> bytes:
    return read_input(path, MAX_POLICY_BYTES, "policy file")


def _where(path: str, line: int | None) -> str:
    return f"{path}:{line}" if line is not None else path


@app.command("validate")
def validate(path: FileArg, as_json: JsonOpt = False) -> None:
    """Check a policy file: schema errors with their lines, overlapping subnets, unknown
    zones, bad ports and services; on a valid file, findings (shadowed rules, plaintext
    protocols, management access from outside the admin zone...). Exit 1 when the file is
    invalid or has a high or medium finding."""
    report = service.validate(_read(path))
    if as_json:
        policy = report.policy
        emit_json({
            "valid": report.valid,
            "zones": len(policy.zones) if policy else None,
            "rules": len(policy.rules) if policy else None,
            "problems": [{"line": line, "message": msg} for line, msg in report.problems],
            "findings": [review_json(f) for f in report.findings],
        })
    else:
        for line, msg in report.problems:
            console.print(f"{_where(path, line)}: error: {msg}", markup=False, soft_wrap=True)
        for f in report.findings:
            console.print(f"{_where(path, f.location.line)}: {f.severity.value}: "
                          f"[{f.rule.code}] "
                          f"{f.message} (fix: {f.fix})", markup=False, soft_wrap=True)
        if report.policy is not None:
            console.print(f"{path}: valid: {plural(len(report.policy.zones), 'zone')}, "
                          f"{plural(len(report.policy.rules), 'rule')}, "
                          f"{plural(len(report.findings), 'finding')}", markup=False,
                          soft_wrap=True)
        else:
            console.print(f"{path}: invalid: {len(report.problems)} problem(s)",
                          markup=False, soft_wrap=True)
    if report.failing:
        raise typer.Exit(1)


@app.command("check")
def check(
    path: FileArg,
    src: Annotated[str, typer.Option("--from", metavar="ADDR", help="Source address.")],
    dst: Annotated[str, typer.Option("--to", metavar="ADDR", help="Destination address.")],
    port: Annotated[int | None, typer.Option("--port", metavar="N",
                                             help="Destination port (tcp/udp).")] = None,
    proto: Annotated[str, typer.Option("--proto", help="tcp, udp or icmp.")] = "tcp",
    as_json: JsonOpt = False,
) -> None:
    """Would the compiled firewall let this flow open? Exit 0 allow, 1 deny; names the
    deciding rule and its line."""
    try:
        flow = Flow.parse(src, dst, proto, port)
    except InvalidInputError as exc:
        raise typer.BadParameter(f"{exc}: {exc.hint}" if exc.hint else str(exc)) from None
    result = service.check(_read(path), flow)
    d = result.decision
    what = f"{flow.proto}/{flow.port}" if flow.port is not None else flow.proto

    def zone(z: Any) -> str:
        return f" ({z.name})" if z is not None else ""

    if as_json:
        emit_json({
            "decision": d.action.value, "allowed": d.allowed, "chain": d.chain,
            "rule": d.rule.name if d.rule else None,
            "rule_position": d.rule.position if d.rule else None,
            "line": d.rule.line if d.rule else None,
            "from": str(flow.src), "to": str(flow.dst), "proto": flow.proto,
            "port": flow.port,
            "from_zone": result.from_zone.name if result.from_zone else None,
            "to_zone": result.to_zone.name if result.to_zone else None,
        })
    else:
        console.print(f"{d.action.value}: {flow.src}{zone(result.from_zone)} -> "
                      f"{flow.dst}{zone(result.to_zone)} {what}: {d.reason}",
                      markup=False, soft_wrap=True)
    if not d.allowed:
        raise typer.Exit(1)


@app.command("compile")
def compile_(
    path: FileArg,
    fmt: Annotated[service.Format, typer.Option("--format", help="Output format.")] =
    service.Format.NFTABLES,
    output: Annotated[str | None, typer.Option("-o", "--output", metavar="FILE",
                                               help="Write to FILE (default: stdout).")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Have 'nft -c -f' check the "
                                                          "result first (needs root).")] = False,
) -> None:
    """Compile a policy file into a firewall ruleset (load it with 'nft -f FILE')."""
    text = service.compile_policy(_read(path), fmt)
    if verify:
        service.nft_check(text)
    write_output(output, text.encode("utf-8"))


@app.command("services")
def services(as_json: JsonOpt = False) -> None:
    """The named services a rule can use, with their ports."""
    rows = [(s.name, " ".join(f"{p}/{t}" for t, p in s.ports), s.description,
             "yes" if s.plaintext else "", "yes" if s.management else "")
            for s in sorted(SERVICES.values(), key=lambda s: s.name)]
    if as_json:
        emit_json([{"name": r[0], "ports": r[1].split(), "description": r[2],
                    "plaintext": bool(r[3]), "management": bool(r[4])} for r in rows])
        return
    table(None, ["service", "ports", "description", "plaintext", "management"], rows)
