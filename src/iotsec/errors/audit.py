"""Errors: fleet audit and compliance reports."""

from __future__ import annotations

from iotsec.errors.base import IotsecError

__all__ = [
    "AttestationError", "AuditBrokerDirError", "AuditError", "AuditOptionError", "ComplianceError",
    "ScanReportError", "UnknownFrameworkError", "UnknownProvisionError"
]


class AuditError(IotsecError):
    """A fleet audit that could not run as asked (the CLI exits 2: nothing was judged)."""

    status = 422
    code = "audit"


class ComplianceError(IotsecError):
    """A compliance report or attestation that could not be produced as asked."""

    status = 422
    code = "compliance"


class AuditOptionError(AuditError):
    """An audit threshold or option out of its range (nothing was audited)."""

    status = 400
    code = "audit-option"


class AuditBrokerDirError(AuditError):
    """The broker directory given to the audit cannot be used."""

    status = 422
    code = "audit-broker-dir"


class UnknownFrameworkError(ComplianceError):
    """A compliance framework iotsec does not know."""

    status = 404
    code = "unknown-framework"
    default_hint = "list the frameworks with 'iotsec compliance frameworks'"


class UnknownProvisionError(ComplianceError):
    """A provision that is not part of the framework named."""

    status = 404
    code = "unknown-provision"


class AttestationError(ComplianceError):
    """An attestation that cannot be recorded as given (status not allowed, note empty or
    too long); nothing was stored."""

    status = 422
    code = "attestation"


class ScanReportError(ComplianceError):
    """A scan report given as evidence that is not a readable iotsec scan report."""

    status = 422
    code = "scan-report"
    default_hint = "give the file written by 'iotsec scan --json-file FILE'"
