"""Typer option and argument types that several command modules declare the same way.

Each alias carries the flag, metavar and help text, so one option reads the same in every
command that takes it; defaults stay with the commands (they differ).
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = [
    "ClearOpt", "DeviceArg", "FailOnFindingOpt", "HtmlReportOpt", "JsonOpt", "JsonReportOpt",
    "JsonSchemaOpt", "LimitOpt", "NameArg", "OutputFileOpt", "ProfileNameArg", "SarifReportOpt",
    "check_selection"
]

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
OutputFileOpt = Annotated[str | None, typer.Option("-o", "--output", help="Write to FILE.")]
LimitOpt = Annotated[int, typer.Option("--limit", help="At most this many.")]
NameArg = Annotated[str, typer.Argument(metavar="NAME")]
DeviceArg = Annotated[str, typer.Argument(metavar="ID", help="A registered device.")]

# The report options of 'iotsec scan', 'audit' and 'compliance check'.
HtmlReportOpt = Annotated[str | None, typer.Option(
    "--html", metavar="FILE", help="Write a one-file HTML report ('-' = stdout).")]
SarifReportOpt = Annotated[str | None, typer.Option(
    "--sarif", metavar="FILE", help="Write a SARIF 2.1.0 report ('-' = stdout).")]
JsonReportOpt = Annotated[str | None, typer.Option(
    "--json", metavar="FILE", help="Write the JSON report ('-' = stdout).")]
JsonSchemaOpt = Annotated[bool, typer.Option(
    "--json-schema", help="Print the JSON Schema of the JSON report and exit.")]
FailOnFindingOpt = Annotated[str, typer.Option(
    "--fail-on", metavar="SEVERITY", help="Exit 1 when a finding is at least this severe: "
    "critical, high, medium, low, info or never.")]

# The profile selection of 'iotsec device set-profile' and 'group set-profile'.
ProfileNameArg = Annotated[str | None, typer.Argument(
    metavar="[PROFILE]", help="A certificate profile ('iotsec profile list').")]
ClearOpt = Annotated[bool, typer.Option("--clear", help="Select no profile of its own.")]


def check_selection(profile: str | None, clear: bool) -> None:
    """Exactly one of a profile name or ``--clear``."""
    if (profile is None) != clear:
        raise typer.BadParameter("give exactly one of PROFILE or --clear")
