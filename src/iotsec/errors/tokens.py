"""Errors: device tokens."""

from __future__ import annotations

from iotsec.errors.base import AuthError

__all__ = [
    "TokenAlgorithmError", "TokenAudienceError", "TokenClaimsError", "TokenDeviceError",
    "TokenError", "TokenExpiredError", "TokenKeyExpiredError", "TokenKeyRevokedError",
    "TokenMalformedError", "TokenNotYetValidError", "TokenReplayError", "TokenSignatureError",
    "TokenUnknownKeyError"
]


class TokenError(AuthError):
    """A device token (JWT) that is not accepted. Each subclass names one reason; messages
    never contain the token, a secret or key material."""

    code = "invalid-device-token"
    default_hint = "the device must sign a fresh token with its registered key"


class TokenMalformedError(TokenError):
    """Not a compact JWS JWT: wrong shape, bad base64url or JSON, or over the size limit."""

    code = "device-token-malformed"
    default_hint = "send a compact JWT: three base64url parts separated by '.'"


class TokenAlgorithmError(TokenError):
    """``alg`` is missing, ``none``, or not the algorithm bound to the device's key."""

    code = "device-token-algorithm"
    default_hint = "sign with the algorithm of the registered key (ES256, EdDSA or HS256)"


class TokenUnknownKeyError(TokenError):
    """No key of the device has the token's ``kid`` (or the token names no ``kid``)."""

    code = "device-token-unknown-key"
    default_hint = "put the kid of a key registered for the device in the token header"


class TokenKeyRevokedError(TokenError):
    """The token names a key (or certificate) that has been revoked."""

    code = "device-token-key-revoked"
    default_hint = "register a new key for the device and sign with it"


class TokenKeyExpiredError(TokenError):
    """The token names a key that is no longer valid: an expired certificate, or a legacy
    secret whose rotation grace period is over."""

    code = "device-token-key-expired"
    default_hint = "sign with the device's current key or secret"


class TokenSignatureError(TokenError):
    """The signature does not verify with the key the token names."""

    code = "device-token-signature"
    default_hint = "sign the token with the private key (or secret) registered for the device"


class TokenExpiredError(TokenError):
    code = "device-token-expired"
    default_hint = "have the device sign a new token (and check its clock)"


class TokenNotYetValidError(TokenError):
    """``iat`` or ``nbf`` lies in the future beyond the allowed clock skew."""

    code = "device-token-not-yet-valid"
    default_hint = "check the device's clock"


class TokenAudienceError(TokenError):
    code = "device-token-audience"
    default_hint = "set 'aud' to this deployment's name (the IOTSEC_DEPLOYMENT setting)"


class TokenClaimsError(TokenError):
    """A required claim is missing or invalid (iss, sub, jti, iat, exp), ``iss`` differs
    from ``sub``, or the lifetime is longer than allowed."""

    code = "device-token-claims"
    default_hint = ("set iss and sub to the device id, a unique jti, iat, and an exp within "
                    "the maximum lifetime")


class TokenReplayError(TokenError):
    """The token's ``jti`` has been seen before within its lifetime."""

    code = "device-token-replayed"
    default_hint = "sign a new token with a fresh jti for every use"


class TokenDeviceError(TokenError):
    """The device named by the token may not authenticate (disabled or retired)."""

    code = "device-token-device-state"
    default_hint = "check the device's state with 'iotsec device show'"
