"""The one error hierarchy of iotsec.

Every error says what was wrong (``str(err)``) and what to do about it (``err.hint``).
The CLI prints both on one line and exits 1; the API answers RFC 9457 problem+json
with ``err.status``. Foreign exceptions are translated at the boundary with
``raise ... from exc`` and never leak secrets: messages name objects, not key material.
"""

from __future__ import annotations


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


class CsrError(PkiError):
    """A certificate signing request that is malformed, forged or too weak."""

    code = "bad-csr"


class WeakKeyError(CsrError):
    code = "weak-key"


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


# --- device tokens ---------------------------------------------------------------------


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
