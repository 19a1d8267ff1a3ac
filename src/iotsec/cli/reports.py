"""What the report commands (``scan``, ``audit``, ``compliance report``) share: the
``--fail-on`` threshold, at most one report on standard output, writing the reports asked
for, and the exit code for CI (0 nothing at or above the threshold, 1 something is)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import typer

from iotsec.cli.output import write_output
from iotsec.findings.model import Severity

FAIL_ON = ("critical", "high", "medium", "low", "info", "never")
EXIT_FINDINGS = 1

#: A report the user asked for: its option name, its path (``-`` = stdout; ``None`` = not
#: asked for) and how to render it.
Report = tuple[str, str | None, Callable[[], bytes]]


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


def write_reports(reports: Sequence[Report]) -> None:
    """Render and write each report asked for."""
    for _, path, render in reports:
        if path:
            write_output(path, render())


def exit_on(threshold: Severity | None, reached: Callable[[Severity], bool]) -> None:
    """Exit 1 when something is at or above the threshold."""
    if threshold is not None and reached(threshold):
        raise typer.Exit(EXIT_FINDINGS)
