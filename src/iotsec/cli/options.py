"""Typer option and argument types that several command modules declare the same way.

Each alias carries the flag, metavar and help text, so one option reads the same in every
command that takes it; defaults stay with the commands (they differ).
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = [
    "DeviceArg", "FailOnFindingOpt", "HtmlReportOpt", "JsonOpt", "JsonReportOpt", "JsonSchemaOpt",
    "LimitOpt", "NameArg", "OutputFileOpt", "SarifReportOpt"
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
