"""Errors: certificate profiles that refuse an issuance."""

from __future__ import annotations

from iotsec.errors.base import PkiError

__all__ = ["ProfileRefusedError"]


class ProfileRefusedError(PkiError):
    """A certificate profile refuses the request: a key type it does not allow, a DNS name
    it takes from a device attribute the device lacks (or that is not a DNS name), a
    validity longer than it allows, or groups of a device that name different profiles."""

    code = "profile-refused"
    default_hint = "see the profile with 'iotsec profile show NAME'"
