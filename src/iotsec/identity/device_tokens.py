"""Device JWTs: the pure verification core.

A device that cannot do mutual TLS authenticates with a short-lived JWT that it signs with
its own private key (ES256 or EdDSA); the server holds only the public key, so there is no
shared secret to steal from it. Legacy devices may use HS256 with a server-generated secret.

This module decides whether a token is acceptable and does no I/O: the caller hands it the
device's keys (or a lookup for them), the audience, ``now`` and a replay-cache callback.
The order of the checks matters and is deliberate:

1. size limit and shape (three base64url parts) before anything is decoded;
2. the *unverified* header, read only for ``kid`` (and to refuse ``alg: none`` early), and
   the *unverified* ``sub`` (or ``iss``), read only to know whose keys to look at;
3. the key is picked by ``kid`` among that device's keys; the token is then verified with
   the algorithm bound to that key and no other, so ``alg`` in the header can never choose
   the algorithm (no RS/HS or ES/HS confusion, no ``none``);
4. the claims of the verified payload (:mod:`iotsec.identity.token_claims`): ``iss == sub``
   (the device), ``aud``, ``iat``, ``exp`` (with a small leeway), ``nbf``, the lifetime,
   ``jti``;
5. the replay check last, so that only a token that is otherwise valid uses up its ``jti``.

Every failure raises a specific :class:`~iotsec.errors.TokenError` subclass. Signature
checking is done by joserfc; messages never contain the token or any key material.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from joserfc import jws
from joserfc.errors import JoseError, MissingAlgorithmError, UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import ECKey, OctKey, OKPKey
from joserfc.jws import JWSRegistry

from iotsec.errors import (
    InputTooLargeError,
    InvalidInputError,
    MalformedInputError,
    TokenAlgorithmError,
    TokenKeyExpiredError,
    TokenKeyRevokedError,
    TokenMalformedError,
    TokenReplayError,
    TokenSignatureError,
    TokenUnknownKeyError,
)
from iotsec.identity.token_claims import check_claims, claimed_device

__all__ = [
    "ALGORITHMS", "DEFAULT_LEEWAY", "EDDSA", "ES256", "HS256", "MAX_KID", "MAX_LEEWAY",
    "MAX_PUBLIC_KEY_BYTES", "MAX_TOKEN_BYTES", "MIN_SECRET_BYTES", "DevicePublicKey", "JoseKey",
    "KeyLookup", "MemoryReplayCache", "ReplayCheck", "VerificationKey", "VerifiedToken",
    "load_public_key", "public_verification_key", "secret_verification_key", "token_algorithm",
    "verify_device_token"
]

#: Longest token accepted, checked before anything is decoded. A device JWT is a few
#: hundred bytes; 8 KiB leaves room for extra claims without inviting abuse.
MAX_TOKEN_BYTES = 8 * 1024
#: Longest ``kid`` (the store's column width).
MAX_KID = 64
#: Largest public key file accepted (a PEM P-256 SubjectPublicKeyInfo is 178 bytes).
MAX_PUBLIC_KEY_BYTES = 16 * 1024
#: Shortest HS256 secret accepted (RFC 7518 section 3.2: at least the hash size).
MIN_SECRET_BYTES = 32
#: Default clock skew tolerated on ``exp``, ``iat`` and ``nbf``, in seconds.
DEFAULT_LEEWAY = 30
MAX_LEEWAY = 300

ES256 = "ES256"
EDDSA = "EdDSA"
HS256 = "HS256"
ALGORITHMS = (ES256, EDDSA, HS256)

# The JWS "alg" names each key algorithm accepts. "Ed25519" is the fully-specified name
# RFC 9864 gives to EdDSA over Ed25519: the same signature over the same key, so accepting
# it opens no confusion; what matters is that the key, not the header, fixes the choice.
_ALG_NAMES: dict[str, tuple[str, ...]] = {
    ES256: ("ES256",),
    EDDSA: ("EdDSA", "Ed25519"),
    HS256: ("HS256",),
}

_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# Header parameters that would change how the payload is read (RFC 7797 "b64") or demand
# processing we do not do ("crit"): refused rather than half-understood.
_REFUSED_HEADERS = frozenset({"b64", "crit"})

JoseKey = ECKey | OKPKey | OctKey


class _BoundRegistry(JWSRegistry):
    """A joserfc registry that allows exactly the algorithms bound to one key algorithm.

    joserfc warns on every use of the name "EdDSA" (RFC 9864 deprecates it in favour of
    "Ed25519"); devices in the field still send it, and here the registered key, not the
    name, decides the curve, so the lookup is done without the warning.
    """

    def get_alg(self, name: str) -> JWSAlgModel:
        if not self.allowed or name not in self.allowed or name not in self.algorithms:
            raise UnsupportedAlgorithmError(f"Algorithm of '{name}' is not allowed")
        return self.algorithms[name]


_REGISTRIES: dict[str, JWSRegistry] = {
    alg: _BoundRegistry(algorithms=list(names)) for alg, names in _ALG_NAMES.items()}


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A key a device's tokens may be verified with, bound to exactly one algorithm.

    ``revoked_at`` (a revoked key or certificate) and ``not_after`` (an expiring certificate,
    a rotated-out secret) are Unix seconds; from then on the key no longer verifies.
    """

    kid: str
    algorithm: str
    key: JoseKey = field(repr=False)
    revoked_at: int | None = None
    not_after: int | None = None

    def __post_init__(self) -> None:
        if not self.kid or len(self.kid) > MAX_KID:
            raise InvalidInputError(f"a key id has 1 to {MAX_KID} characters")
        ok = False
        if self.algorithm == ES256:
            ok = isinstance(self.key, ECKey) and self.key.curve_name == "P-256"
        elif self.algorithm == EDDSA:
            ok = isinstance(self.key, OKPKey) and self.key.curve_name == "Ed25519"
        elif self.algorithm == HS256:
            ok = (isinstance(self.key, OctKey)
                  and len(self.key.get_op_key("verify")) >= MIN_SECRET_BYTES)
        else:
            raise InvalidInputError(f"unsupported token algorithm {self.algorithm!r}",
                                    hint=f"use one of {', '.join(ALGORITHMS)}")
        if not ok:
            raise InvalidInputError(f"key {self.kid} does not fit the {self.algorithm} algorithm",
                                    hint="ES256 needs a P-256 key, EdDSA an Ed25519 key, "
                                    "HS256 a secret of at least 32 bytes")


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token that passed every check: who sent it, with which key, and its claims."""

    device_id: str
    kid: str
    jti: str
    issued_at: int
    expires_at: int
    algorithm: str
    claims: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DevicePublicKey:
    """A public key a device may sign tokens with, and the one algorithm it is bound to."""

    algorithm: str
    #: DER SubjectPublicKeyInfo, as stored.
    spki_der: bytes = field(repr=False)
    #: RFC 7638 JWK thumbprint (SHA-256, base64url): a stable id computed from the key.
    kid: str


def token_algorithm(key: PublicKeyTypes) -> str | None:
    """``ES256`` for an EC P-256 key, ``EdDSA`` for Ed25519, ``None`` for anything else."""
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return ES256
    if isinstance(key, ed25519.Ed25519PublicKey):
        return EDDSA
    return None


def _jose_public_key(key: PublicKeyTypes) -> ECKey | OKPKey:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ECKey.import_key(key)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return OKPKey.import_key(key)
    raise InvalidInputError("only EC P-256 and Ed25519 keys sign device tokens")


def load_public_key(data: bytes) -> DevicePublicKey:
    """Parse a device's public key (PEM or DER SubjectPublicKeyInfo). Only EC P-256 (ES256)
    and Ed25519 (EdDSA) keys are accepted."""
    if len(data) > MAX_PUBLIC_KEY_BYTES:
        raise InputTooLargeError(f"a public key has at most {MAX_PUBLIC_KEY_BYTES} bytes")
    if b"PRIVATE KEY" in data:
        raise InvalidInputError("that is a private key; register the device's public key",
                                hint="export it with 'openssl pkey -pubout'")
    stripped = data.strip()
    try:
        if stripped.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(stripped)
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise MalformedInputError("the public key is not a PEM or DER SubjectPublicKeyInfo",
                                  hint="give a '-----BEGIN PUBLIC KEY-----' file, e.g. from "
                                  "'openssl pkey -pubout'") from None
    algorithm = token_algorithm(key)
    if algorithm is None:
        raise InvalidInputError(f"a {_key_description(key)} key cannot sign device tokens",
                                hint="use an EC P-256 key (ES256) or an Ed25519 key (EdDSA)")
    spki = key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return DevicePublicKey(algorithm=algorithm, spki_der=spki,
                           kid=_jose_public_key(key).thumbprint())


def _key_description(key: PublicKeyTypes) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__.removeprefix("_").replace("PublicKey", "") or "such"


def public_verification_key(kid: str, public_key: bytes | PublicKeyTypes, *,
                            revoked_at: int | None = None,
                            not_after: int | None = None) -> VerificationKey | None:
    """A :class:`VerificationKey` for a stored public key (DER SubjectPublicKeyInfo or a
    loaded key), bound to the algorithm its type implies; ``None`` if no algorithm fits."""
    if isinstance(public_key, bytes):
        try:
            key = serialization.load_der_public_key(public_key)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return None
    else:
        key = public_key
    algorithm = token_algorithm(key)
    if algorithm is None:
        return None
    return VerificationKey(kid=kid, algorithm=algorithm, key=_jose_public_key(key),
                           revoked_at=revoked_at, not_after=not_after)


def secret_verification_key(kid: str, secret: bytes, *,
                            not_after: int | None = None) -> VerificationKey:
    """A :class:`VerificationKey` for a legacy device's HS256 secret."""
    return VerificationKey(kid=kid, algorithm=HS256, key=OctKey.import_key(secret),
                           not_after=not_after)


#: ``lookup(device_id, kid)`` returns the device's candidate keys (typically the one whose
#: kid matches, or none). It may raise a :class:`~iotsec.errors.TokenError` of its own, e.g.
#: for a device that is disabled.
KeyLookup = Callable[[str, str], Sequence[VerificationKey]]
#: ``seen(device_id, jti, remember_until)`` records the jti and returns ``True`` if it had
#: already been recorded (a replay). It must remember the jti at least until
#: ``remember_until`` (the token's expiry plus the leeway).
ReplayCheck = Callable[[str, str, int], bool]


def _show(value: object) -> str:
    """A short, printable rendering of an untrusted value for a message."""
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _parse(token: str) -> tuple[jws.CompactSignature, dict[str, Any], dict[str, Any]]:
    """Split and decode a compact JWS without verifying it: (object, header, payload)."""
    if not isinstance(token, str):
        raise TokenMalformedError("the token is not a string")
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenMalformedError(f"the token is longer than {MAX_TOKEN_BYTES} bytes")
    if not _SHAPE.fullmatch(token):
        raise TokenMalformedError("the token is not a compact JWT (three base64url parts "
                                  "separated by '.')")
    try:
        obj = jws.extract_compact(token.encode("ascii"))
    except MissingAlgorithmError:
        raise TokenAlgorithmError("the token header has no 'alg'") from None
    except (JoseError, ValueError, TypeError, RecursionError):
        raise TokenMalformedError("the token's header or payload is not valid base64url "
                                  "JSON") from None
    header = obj.headers()
    if not isinstance(header, dict):
        raise TokenMalformedError("the token header is not a JSON object")
    if _REFUSED_HEADERS.intersection(header):
        raise TokenMalformedError("the token header uses 'b64' or 'crit', which are not "
                                  "supported for device tokens")
    try:
        claims = json.loads(obj.payload)
    except (ValueError, TypeError, RecursionError):
        raise TokenMalformedError("the token payload is not JSON") from None
    if not isinstance(claims, dict):
        raise TokenMalformedError("the token payload is not a JSON object")
    return obj, header, claims


def _pick_key(device_keys: Sequence[VerificationKey] | KeyLookup, device_id: str,
              kid: str) -> VerificationKey:
    candidates = device_keys(device_id, kid) if callable(device_keys) else device_keys
    for candidate in candidates:
        if candidate.kid == kid:
            return candidate
    raise TokenUnknownKeyError(f"device {device_id!r} has no key with the token's kid")


def _check_key_usable(key: VerificationKey, now: int) -> None:
    if key.revoked_at is not None and key.revoked_at <= now:
        raise TokenKeyRevokedError(f"key {key.kid} has been revoked")
    if key.not_after is not None and key.not_after <= now:
        raise TokenKeyExpiredError(f"key {key.kid} is no longer valid (expired or rotated "
                                   "out)")


def verify_device_token(token: str, *, device_keys: Sequence[VerificationKey] | KeyLookup,
                        audience: str, now: int, max_lifetime: int,
                        leeway: int = DEFAULT_LEEWAY, seen: ReplayCheck) -> VerifiedToken:
    """Verify a device JWT and return what it proves, or raise a :class:`TokenError`.

    ``device_keys`` is either the keys of the device the token claims to come from, or a
    lookup ``(device_id, kid) -> keys`` called with the unverified ``sub`` (the signature
    then proves it). ``seen`` is the replay cache; it is called last.
    """
    if not 0 <= leeway <= MAX_LEEWAY:
        raise InvalidInputError(f"the leeway must be between 0 and {MAX_LEEWAY} seconds")
    if max_lifetime < 1:
        raise InvalidInputError("the maximum token lifetime must be positive")
    obj, header, claims = _parse(token)

    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise TokenAlgorithmError("the token header has no 'alg'")
    if alg.lower() == "none":
        raise TokenAlgorithmError("unsigned tokens (alg 'none') are refused")
    kid = header.get("kid")
    if not isinstance(kid, str) or not 1 <= len(kid) <= MAX_KID:
        raise TokenUnknownKeyError("the token header names no key ('kid')")

    device_id = claimed_device(claims)
    key = _pick_key(device_keys, device_id, kid)
    _check_key_usable(key, now)
    if alg not in _ALG_NAMES[key.algorithm]:
        raise TokenAlgorithmError(f"key {key.kid} is for {key.algorithm}; the token header "
                                  f"says {_show(alg)}")
    try:
        valid = jws.validate_compact(obj, key.key, registry=_REGISTRIES[key.algorithm])
    except (JoseError, ValueError, TypeError):
        raise TokenMalformedError("the token header is not acceptable (unknown or invalid "
                                  "parameters)") from None
    if not valid:
        raise TokenSignatureError(f"the token's signature does not verify with key {key.kid}")

    jti, issued, expires = check_claims(claims, device_id=device_id, audience=audience,
                                        now=now, max_lifetime=max_lifetime, leeway=leeway)
    if seen(device_id, jti, math.ceil(expires) + leeway):
        raise TokenReplayError("the token's jti has already been used")
    return VerifiedToken(device_id=device_id, kid=key.kid, jti=jti, issued_at=int(issued),
                         expires_at=int(expires), algorithm=key.algorithm, claims=claims)


class MemoryReplayCache:
    """An in-process replay cache (for tests, benchmarks and single-process tools).

    Entries are dropped once ``now`` passes their expiry; the service layer uses the
    store's ``token_jtis`` table instead, shared by every server process.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}

    def __call__(self, device_id: str, jti: str, remember_until: int) -> bool:
        entry = (device_id, jti)
        if entry in self._seen:
            return True
        self._seen[entry] = remember_until
        return False

    def purge(self, now: int) -> int:
        """Forget entries that expired before ``now``; return how many."""
        stale = [k for k, until in self._seen.items() if until < now]
        for k in stale:
            del self._seen[k]
        return len(stale)

    def __len__(self) -> int:
        return len(self._seen)
