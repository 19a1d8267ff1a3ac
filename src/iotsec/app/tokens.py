"""Operator API tokens: ``iotsec_<id>_<secret>``, stored only as SHA-256 of the secret.

The secret has 256 bits of entropy, so a plain SHA-256 (not a password hash) is the right
tool; comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select

from iotsec.app.runtime import Runtime
from iotsec.errors import AuthError
from iotsec.store import models as m
from iotsec.store.db import reading

_TOKEN = re.compile(r"^iotsec_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: str
    name: str
    role: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def create_token(conn: Connection, *, name: str, role: str, now: int) -> str:
    """Store a new token and return it in clear: the only time it is ever visible."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    conn.execute(insert(m.api_tokens).values(
        id=token_id, name=name, role=role, secret_sha256=_digest(secret), created_at=now,
        revoked=False))
    return f"iotsec_{token_id}_{secret}"


def authenticate(rt: Runtime, token: str) -> Principal:
    """Return who holds ``token``, or raise :class:`AuthError` (never says which part failed)."""
    match = _TOKEN.fullmatch(token or "")
    if not match:
        raise AuthError("the API token is missing or malformed")
    token_id, secret = match.groups()
    with reading(rt.engine) as conn:
        row = conn.execute(select(m.api_tokens).where(m.api_tokens.c.id == token_id)).first()
    expected = row.secret_sha256 if row is not None else "0" * 64
    ok = hmac.compare_digest(_digest(secret), expected)
    if row is None or not ok or row.revoked:
        raise AuthError("the API token is not valid")
    return Principal(token_id=row.id, name=row.name, role=row.role)
