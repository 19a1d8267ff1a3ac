"""Errors: enrolment over EST (bootstrap secrets, claim certificates, re-enrolment).

A refused enrolment tells the client as little as possible: whether a secret id exists,
why a claim was refused and which rule a certificate broke are recorded in the security
event, never in the message.
"""

from __future__ import annotations

from iotsec.errors.base import AuthError, ForbiddenError

__all__ = ["EnrolmentAuthError", "EnrolmentForbiddenError"]


class EnrolmentAuthError(AuthError):
    """No usable enrolment credential: missing, malformed, unknown, wrong, used up,
    expired or revoked (EST answers 401 with ``WWW-Authenticate``)."""

    code = "enrolment-unauthorized"
    default_hint = ("enrol with a valid enrolment secret (HTTP Basic: its id and secret), a "
                    "registered claim certificate, or the device's current certificate")


class EnrolmentForbiddenError(ForbiddenError):
    """A valid credential that does not allow this request: another label, a device that
    is already registered, a claim certificate used before or refused by the allow list or
    the hook, a certificate that may not be renewed (EST answers 403)."""

    code = "enrolment-forbidden"
    default_hint = "ask the operator for a credential meant for this device"
