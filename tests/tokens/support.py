"""Builders for device tokens: keys, signed JWTs, and hand-made (forged) ones."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import warnings
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey

DeviceKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def ed() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def public_pem(key: DeviceKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def public_der(key: DeviceKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def claims_for(device_id: str, now: int, *, audience: str = "iotsec", lifetime: int = 300,
               **overrides: Any) -> dict[str, Any]:
    """Valid claims for ``device_id``; an override of ``None`` removes the claim."""
    claims: dict[str, Any] = {"iss": device_id, "sub": device_id, "aud": audience,
                              "iat": now, "exp": now + lifetime, "jti": secrets.token_hex(8)}
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def sign(key: DeviceKey | bytes, kid: str, claims: dict[str, Any], *,
         alg: str | None = None, header: dict[str, Any] | None = None) -> str:
    """A JWT signed by joserfc: ES256 for P-256, EdDSA for Ed25519, HS256 for bytes."""
    jose_key: ECKey | OKPKey | OctKey
    if isinstance(key, ec.EllipticCurvePrivateKey):
        jose_key, default = ECKey.import_key(key), "ES256"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        jose_key, default = OKPKey.import_key(key), "EdDSA"
    else:
        jose_key, default = OctKey.import_key(key), "HS256"
    algorithm = alg or default
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc flags the "EdDSA" name as deprecated
        return jwt.encode({"alg": algorithm, "kid": kid, **(header or {})}, claims, jose_key,
                          algorithms=[algorithm])


def hs256_by_hand(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """An HS256 JWT computed without a library (for forgeries a library might refuse)."""
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64json(header)}.{b64json(claims)}."


def replace_payload(token: str, claims: dict[str, Any]) -> str:
    """Keep header and signature, swap the payload (a tampered token)."""
    head, _, sig = token.split(".")
    return f"{head}.{b64json(claims)}.{sig}"
