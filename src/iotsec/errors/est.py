"""Errors: the device side of EST (what a device's enrolment client meets).

A refused credential raises :class:`~iotsec.errors.EnrolmentAuthError` or
:class:`~iotsec.errors.EnrolmentForbiddenError` on the device too (the same meaning as on
the server); this module adds what only a client sees: an enrolment that waits for an
operator's approval, and an EST server that cannot be reached or answers something else
than RFC 7030 says.
"""

from __future__ import annotations

from iotsec.errors.base import IotsecError

__all__ = ["EnrolmentPending", "EstError"]


class EstError(IotsecError):
    """The EST server could not be reached, refused the TLS connection, or gave an answer
    that is not what RFC 7030 says (a wrong content type, a body that does not parse, an
    unexpected status)."""

    status = 502
    code = "est"
    default_hint = ("check the EST server's URL (https://HOST:PORT, 'iotsec serve' listens "
                    "on --est-port, default 8444) and the CA file the device trusts")

    def __init__(self, message: str, *, hint: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message, hint=hint)
        #: Seconds the server asked the client to wait (a 503 with ``Retry-After``).
        self.retry_after = retry_after


class EnrolmentPending(IotsecError):
    """The server accepted the request but the device awaits an operator's approval
    (EST's 202 with ``Retry-After``): ask again, with the same credential and the same
    key, after ``retry_after`` seconds."""

    status = 202
    code = "enrolment-pending"
    default_hint = ("an operator approves the device with 'iotsec device approve ID'; "
                    "enrol again later with the same credential")

    def __init__(self, message: str, *, retry_after: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after
