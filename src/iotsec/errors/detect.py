"""Errors: detection rules and the detector."""

from __future__ import annotations

from iotsec.errors.base import InvalidInputError

__all__ = ["DetectionRuleError"]


class DetectionRuleError(InvalidInputError):
    """A detection rule file that cannot be used as written (nothing was applied)."""

    status = 422
    code = "detection-rules"
    default_hint = "see 'iotsec detect rules show' for the rules in force and their shape"
