"""What the report commands (``scan``, ``audit``, ``compliance report``) share: the
``--fail-on`` threshold, at most one report on standard output, writing the reports asked
for, the JSON Schema of a report, and the exit codes for CI (0 nothing at or above the
threshold, 1 something is, 2 the command could not run)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import typer

from iotsec.cli.output import print_error, write_output
from iotsec.errors import IotsecError
from iotsec.findings.model import Severity

__all__ = [
    "EXIT_COULD_NOT_RUN", "EXIT_FINDINGS", "FAIL_ON", "Report", "could_not_run", "parse_fail_on",
    "run_report", "to_stdout", "write_schema"
]

FAIL_ON = ("critical", "high", "medium", "low", "info", "never")
EXIT_FINDINGS = 1
EXIT_COULD_NOT_RUN = 2

R = TypeVar("R")

#: A report the user asked for: its option name, its path (``-`` = stdout; ``None`` = not
#: asked for) and how to render it from the result.
Report = tuple[str, str | None, Callable[[R], bytes]]


def parse_fail_on(value: str) -> Severity | None:
    """The ``--fail-on`` threshold (``None`` for ``never``); a bad value is a usage error."""
    threshold = value.strip().lower()
    if threshold not in FAIL_ON:
        raise typer.BadParameter(f"must be one of {', '.join(FAIL_ON)}",
                                 param_hint="--fail-on")
    return None if threshold == "never" else Severity(threshold)


def to_stdout(outputs: Sequence[tuple[str, str | None]]) -> bool:
    """Whether one of the outputs goes to standard output; two there would interleave, so
    that is a usage error naming the second."""
    users = [name for name, path in outputs if path == "-"]
    if len(users) > 1:
        raise typer.BadParameter("only one report can go to stdout ('-')",
                                 param_hint=users[1])
    return bool(users)


def run_report(fail_on: str, reports: Sequence[Report[R]], make: Callable[[], R],
               show: Callable[[R], None], reached: Callable[[R, Severity], bool]) -> None:
    """Run a report command: check ``--fail-on`` and the outputs first, then make the result
    and write each report asked for (a refusal there exits 2), show it unless a report went
    to standard output, and exit 1 when something is at or above the threshold."""
    threshold = parse_fail_on(fail_on)
    stdout_used = to_stdout([(name, path) for name, path, _ in reports])
    try:
        result = make()
        for _, path, render in reports:
            if path:
                write_output(path, render(result))
    except IotsecError as exc:
        raise could_not_run(exc) from None
    if not stdout_used:
        show(result)
    if threshold is not None and reached(result, threshold):
        raise typer.Exit(EXIT_FINDINGS)


def could_not_run(exc: IotsecError) -> typer.Exit:
    """Report ``exc`` and give the exit to raise: 2, so that CI tells a command that could
    not run from one that found something (1)."""
    print_error(exc)
    return typer.Exit(EXIT_COULD_NOT_RUN)


def write_schema(schema: Mapping[str, Any]) -> None:
    """Write a report's JSON Schema (``--json-schema``) to standard output."""
    sys.stdout.write(json.dumps(schema, indent=2) + "\n")
