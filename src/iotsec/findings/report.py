"""What every iotsec report format shares: the tool's name, UTC timestamps as reports write
them, the versioned JSON formats with their published schemas, and JSON as bytes.

The scan, audit and compliance reports build their documents with these (and with
:mod:`iotsec.findings.sarif` and :mod:`iotsec.findings.html`), so the three read alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from iotsec.findings.model import Finding, count_by_severity, worst

__all__ = ["TOOL_NAME", "ReportFormat", "iso_time", "json_bytes", "load_schema",
           "severity_summary", "tool_dict"]

TOOL_NAME = "iotsec"


def iso_time(moment: datetime) -> str:
    """``moment`` in ISO 8601 with ``Z`` for UTC (``2024-05-01T12:00:00Z``), as every report
    and SARIF's ``startTimeUtc``/``endTimeUtc`` write it."""
    return moment.isoformat().replace("+00:00", "Z")


@cache
def load_schema(package: str, resource: str) -> dict[str, Any]:
    """The JSON Schema shipped as ``resource`` inside ``package`` (read once per process).

    The schemas are package data listed in ``pyproject.toml``, so they are in every install.
    """
    text = resources.files(package).joinpath(resource).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def json_bytes(data: Any) -> bytes:
    """``data`` as indented UTF-8 JSON with a final newline: the bytes of every report file."""
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()


def tool_dict(version: str) -> dict[str, str]:
    """The ``tool`` member of a JSON report. The version is a parameter (the caller passes
    ``iotsec.__version__``) so that this package imports nothing above it."""
    return {"name": TOOL_NAME, "version": version}


def severity_summary(findings: Sequence[Finding]) -> dict[str, Any]:
    """The ``findings``, ``by_severity`` and ``worst`` members of a report's summary."""
    worst_severity = worst(findings)
    return {"findings": len(findings), "by_severity": count_by_severity(findings),
            "worst": worst_severity.value if worst_severity else None}


@dataclass(frozen=True, slots=True)
class ReportFormat:
    """A versioned JSON report format: its name and version (what a reader checks), the
    ``$id`` of its published JSON Schema, and where that schema ships (``resource`` inside
    ``package``)."""

    name: str
    version: int
    schema_id: str
    package: str
    resource: str

    def schema(self) -> dict[str, Any]:
        """The published JSON Schema of the format."""
        return load_schema(self.package, self.resource)

    def header(self, tool_version: str) -> dict[str, Any]:
        """The members every report of the format opens with: ``$schema``, ``format``,
        ``format_version`` and ``tool``."""
        return {"$schema": self.schema_id, "format": self.name,
                "format_version": self.version, "tool": tool_dict(tool_version)}
