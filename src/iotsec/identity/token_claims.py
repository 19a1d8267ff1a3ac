"""The claims of a device JWT, checked (pure).

:func:`claimed_device` reads whose token it claims to be *before* the signature is checked
(only to know whose keys to look at); :func:`check_claims` checks the claims of the
*verified* payload: ``iss == sub`` (the device), ``aud``, ``iat``, ``exp`` and ``nbf`` with a
leeway, the lifetime, ``jti``. Each failure is a :class:`~iotsec.errors.TokenError` subclass;
messages never contain the token.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from iotsec.errors import (
    InvalidDeviceIdError,
    TokenAudienceError,
    TokenClaimsError,
    TokenExpiredError,
    TokenNotYetValidError,
)
from iotsec.identity.registry import parse_device_id

__all__ = ["MAX_JTI", "check_claims", "claimed_device"]

#: Longest ``jti`` (the replay cache's column width).
MAX_JTI = 128


def claimed_device(claims: Mapping[str, Any]) -> str:
    """The device the token claims to come from (``sub``, else ``iss``), not yet verified."""
    subject = claims.get("sub", claims.get("iss"))
    if subject is None:
        raise TokenClaimsError("the token has no 'sub' (the device id)")
    if not isinstance(subject, str):
        raise TokenClaimsError("the token's 'sub' is not a string")
    try:
        return parse_device_id(subject)
    except InvalidDeviceIdError:
        raise TokenClaimsError("the token's 'sub' is not a valid device id") from None


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenClaimsError(f"the token's '{name}' is not a number of seconds")
    number = float(value)
    if not math.isfinite(number):
        raise TokenClaimsError(f"the token's '{name}' is not a finite number")
    return number


def _required_date(claims: Mapping[str, Any], name: str) -> float:
    value = _numeric_date(claims, name)
    if value is None:
        raise TokenClaimsError(f"the token has no '{name}'")
    return value


def check_claims(claims: Mapping[str, Any], *, device_id: str, audience: str, now: int,
                 max_lifetime: int, leeway: int) -> tuple[str, float, float]:
    """Validate the verified claims; return (jti, iat, exp)."""
    if claims.get("sub") != device_id:
        raise TokenClaimsError("the token has no 'sub' (the device id)")
    if "iss" not in claims:
        raise TokenClaimsError("the token has no 'iss' (the device id)")
    if claims["iss"] != device_id:
        raise TokenClaimsError("the token's 'iss' is not its 'sub': a device token is issued "
                               "by the device itself")
    jti = claims.get("jti")
    if jti is None:
        raise TokenClaimsError("the token has no 'jti'")
    if not isinstance(jti, str) or not 1 <= len(jti) <= MAX_JTI:
        raise TokenClaimsError(f"the token's 'jti' must be a string of 1 to {MAX_JTI} "
                               "characters")
    issued = _required_date(claims, "iat")
    expires = _required_date(claims, "exp")
    not_before = _numeric_date(claims, "nbf")

    aud = claims.get("aud")
    if aud is None:
        raise TokenAudienceError("the token names no audience ('aud')")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise TokenAudienceError("the token's 'aud' is not a string or a list of strings")
    if audience not in audiences:
        raise TokenAudienceError("the token is meant for another audience, not this "
                                 "deployment")

    if now >= expires + leeway:
        raise TokenExpiredError(f"the token expired {int(now - expires)} s ago")
    if issued > now + leeway:
        raise TokenNotYetValidError(f"the token is issued {int(issued - now)} s in the future")
    if not_before is not None and not_before > now + leeway:
        raise TokenNotYetValidError(f"the token is not valid for another "
                                    f"{int(not_before - now)} s")
    if expires <= issued:
        raise TokenClaimsError("the token's 'exp' is not after its 'iat'")
    if expires - issued > max_lifetime:
        raise TokenClaimsError(f"the token's lifetime ({int(expires - issued)} s) is longer "
                               f"than the maximum of {max_lifetime} s")
    return jti, issued, expires
