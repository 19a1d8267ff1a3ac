"""The root of the error hierarchy: input, objects and the core domains.

Every error says what was wrong (``str(err)``) and what to do about it (``err.hint``).
The CLI prints both on one line and exits 1; the API answers RFC 9457 problem+json
with ``err.status``. Foreign exceptions are translated at the boundary with
``raise ... from exc`` and never leak secrets: messages name objects, not key material.
"""

from __future__ import annotations

__all__ = [
    "AlreadyRevokedError", "AuthError", "ClockBehindError", "ConfigError", "ConflictError",
    "CsrError", "DeviceStateError", "FileSystemError", "ForbiddenError", "HomeNotInitialisedError",
    "InfrastructureCertificateError", "InputTooLargeError", "InvalidDeviceIdError",
    "InvalidInputError", "IotsecError", "KeyCustodyError", "MalformedInputError", "NotFoundError",
    "PkiError", "PolicyError", "RegistryError", "StoreError", "ThrottledError", "WeakKeyError"
]


class IotsecError(Exception):
    """Base of every error iotsec raises on purpose."""

    #: HTTP status used by the API for this family of errors.
    status: int = 400
    #: Short, stable machine-readable code (the last part of the problem type URI).
    code: str = "error"
    default_hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


# --- input -----------------------------------------------------------------------------


class InvalidInputError(IotsecError):
    """Input that cannot be parsed or does not meet a stated rule."""

    status = 422
    code = "invalid-input"


class MalformedInputError(InvalidInputError):
    """Bytes that are not what they claim to be (garbage PEM/DER, truncated data)."""

    status = 400
    code = "malformed-input"


class InputTooLargeError(InvalidInputError):
    """Input over a parser's stated size limit; rejected before it is read whole."""

    status = 413
    code = "input-too-large"


# --- objects ---------------------------------------------------------------------------


class NotFoundError(IotsecError):
    status = 404
    code = "not-found"


class ConflictError(IotsecError):
    """The request contradicts the current state (already exists, already revoked)."""

    status = 409
    code = "conflict"


class AlreadyRevokedError(ConflictError):
    """The certificate is revoked already. The API answers 409; the CLI treats a repeated
    revocation as done, so that a retry is harmless."""

    default_hint = "a revocation is final; nothing to do"

    def __init__(self, message: str, *, serial: str, reason: str,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.serial = serial
        self.reason = reason


# --- the host --------------------------------------------------------------------------


class FileSystemError(IotsecError):
    """The operating system refused a file operation: a full disk, a read-only file system,
    missing permissions, a file where a directory is needed."""

    status = 503
    code = "filesystem"


# --- domains ---------------------------------------------------------------------------


class ConfigError(IotsecError):
    status = 500
    code = "config"


class HomeNotInitialisedError(ConfigError):
    code = "not-initialised"
    default_hint = "run 'iotsec init' first (or set IOTSEC_HOME to an initialised home)"


class StoreError(IotsecError):
    status = 503
    code = "store"


class KeyCustodyError(IotsecError):
    status = 500
    code = "key-custody"


class PkiError(IotsecError):
    status = 422
    code = "pki"


class ClockBehindError(PkiError):
    """The clock says it is earlier than a CA came into being: whatever it signed now would
    carry wrong dates (a certificate that expires before its CA existed, a CRL from the
    past), so nothing is signed."""

    status = 503
    code = "clock-behind"
    default_hint = "set the system clock right (NTP) and try again"


class CsrError(PkiError):
    """A certificate signing request that is malformed, forged or too weak."""

    code = "bad-csr"


class WeakKeyError(CsrError):
    code = "weak-key"


class InfrastructureCertificateError(PkiError, ConflictError):
    """A certificate iotsec itself serves or probes with (the API's or the broker's server
    certificate, the broker's probe or canary) asked of a device route, or a device's
    certificate asked of the infrastructure route."""

    status = 409
    code = "infrastructure-certificate"


class RegistryError(IotsecError):
    status = 422
    code = "registry"


class InvalidDeviceIdError(RegistryError, InvalidInputError):
    code = "invalid-device-id"
    default_hint = (
        "a device id starts with a letter or digit and has at most 128 characters "
        "from A-Z a-z 0-9 . _ : -"
    )


class DeviceStateError(RegistryError, ConflictError):
    status = 409
    code = "device-state"


class AuthError(IotsecError):
    status = 401
    code = "unauthorized"
    default_hint = "send 'Authorization: Bearer <admin token>' (printed once by 'iotsec init')"


class ForbiddenError(IotsecError):
    """Authenticated, but not allowed to do this."""

    status = 403
    code = "forbidden"


class PolicyError(InvalidInputError):
    """A role, rule or policy document that is not valid."""

    code = "invalid-policy"


class ThrottledError(AuthError):
    """Too many failures from one source; try again later."""

    status = 429
    code = "throttled"
    default_hint = "wait before trying again"

    def __init__(self, message: str, *, retry_after: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after
