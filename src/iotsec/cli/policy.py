"""``iotsec policy``: the access policy as a file (apply, export, lint)."""

from __future__ import annotations

from typing import Annotated

import typer

from iotsec.access.document import MAX_DOCUMENT_BYTES
from iotsec.access.lint import lint_json
from iotsec.app.access import policy as service
from iotsec.app.wire.access import PolicyAppliedOut
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt, OutputFileOpt
from iotsec.cli.output import console, emit_json, plural, read_input, table, write_output
from iotsec.findings.model import Severity

__all__ = ["app", "apply", "export", "lint"]

app = typer.Typer(help="The access policy as code: apply, export, lint.", no_args_is_help=True)


@app.command("apply")
def apply(
    path: Annotated[str, typer.Argument(metavar="FILE", help="YAML or JSON ('-' = stdin).")],
    prune: Annotated[bool, typer.Option("--prune", help="Remove roles not in FILE.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, change nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Make roles and group bindings match FILE (validated; errors name the line)."""
    data = read_input(path, MAX_DOCUMENT_BYTES, "policy file")
    with runtime() as rt:
        result = service.apply_policy(rt, data, prune=prune, dry_run=dry_run)
    if as_json:
        emit_json(PolicyAppliedOut.from_domain(result, dry_run=dry_run))
        return
    suffix = " (dry run, nothing written)" if dry_run else ""
    for label, names in (("created", result.created), ("updated", result.updated),
                         ("removed", result.removed), ("group bindings changed",
                                                       result.groups_changed)):
        if names:
            console.print(f"{label}{suffix}: {', '.join(names)}", markup=False)
    if not result.changed:
        console.print("policy unchanged", markup=False)


@app.command("export")
def export(
    output: OutputFileOpt = None,
) -> None:
    """Write the whole policy as YAML (what 'policy apply' reads)."""
    with runtime() as rt:
        text = service.export_policy(rt)
    write_output(output, text.encode("utf-8"))


@app.command("lint")
def lint(as_json: JsonOpt = False) -> None:
    """Flag overly permissive or misconfigured rules (exit 1 on high or medium findings)."""
    with runtime() as rt:
        findings = service.lint_policy(rt)
    if as_json:
        emit_json([lint_json(f) for f in findings])
    elif findings:
        table(plural(len(findings), "finding"),
              ["severity", "code", "role", "rule", "finding", "fix"],
              [(f.severity.value, f.rule.code, f.location.name, f.location.index, f.message,
                f.fix) for f in findings])
    else:
        console.print("no findings", markup=False)
    if any(f.severity in (Severity.HIGH, Severity.MEDIUM) for f in findings):
        raise typer.Exit(1)
