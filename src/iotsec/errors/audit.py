"""Errors: fleet audit and compliance reports."""

from __future__ import annotations

from iotsec.errors.base import IotsecError

__all__ = [
    "AuditError",
    "ComplianceError",
]


class AuditError(IotsecError):
    """A fleet audit that could not run as asked (the CLI exits 2: nothing was judged)."""

    status = 422
    code = "audit"


class ComplianceError(IotsecError):
    """A compliance report or attestation that could not be produced as asked."""

    status = 422
    code = "compliance"
