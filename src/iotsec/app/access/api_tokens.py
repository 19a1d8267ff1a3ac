"""Operator API tokens: ``iotsec_<id>_<secret>``, stored only as SHA-256 of the secret.

The secret has 256 bits of entropy, so a plain SHA-256 (not a password hash) is the right
tool; comparison is constant-time. Tokens carry one scope: ``admin`` (everything),
``operator`` (devices and certificates) or ``auditor`` (read-only); each includes the ones
after it. Every authentication decision is recorded as a security event, and repeated
failures from one source are throttled.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, false, insert, select, update

from iotsec.app.counters import COUNTERS
from iotsec.app.events import Event
from iotsec.app.runtime import Runtime, Slot
from iotsec.app.throttle import failure_throttle
from iotsec.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
)
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = [
    "LAST_ADMIN_HINT",
    "LAST_USED_GRANULARITY",
    "LOOKUP_PREFIX",
    "MAX_TOKEN_LIFETIME",
    "Principal",
    "Scope",
    "TokenInfo",
    "authenticate",
    "create_token",
    "get_token",
    "issue_token",
    "list_tokens",
    "revoke_token"
]

#: The key prefix of a token's lookup kept by :meth:`Runtime.recent` (a token changed by
#: another process is forgotten through the change feed: :mod:`iotsec.app.access.feed`).
LOOKUP_PREFIX = "token:"

#: When each token was last recorded as used (the store is written at most once a minute).
_LAST_USED: Slot[dict[int, int]] = Slot("api_tokens.last_used")

_TOKEN = re.compile(r"iotsec_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
LAST_USED_GRANULARITY = 60
MAX_TOKEN_LIFETIME = timedelta(days=3650)


class Scope(enum.StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    #: For the MQTT broker (EMQX) only: its authentication and authorization hooks and
    #: nothing else; no other scope includes it and it includes no other.
    BROKER = "broker"

    def includes(self, needed: Scope) -> bool:
        if self is Scope.BROKER or needed is Scope.BROKER:
            return self is needed
        order = [Scope.AUDITOR, Scope.OPERATOR, Scope.ADMIN]
        return order.index(self) >= order.index(needed)

    @classmethod
    def parse(cls, text: str) -> Scope:
        try:
            return cls(text)
        except ValueError:
            raise InvalidInputError(f"unknown scope {text[:20]!r}",
                                    hint="use admin, operator, auditor or broker") from None


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: str
    name: str
    scope: Scope


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    name: str
    scope: Scope
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def create_token(conn: Connection, *, name: str, scope: Scope, now: int,
                 expires_at: int | None = None) -> str:
    """Store a new token and return it in clear: the only time it is ever visible."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    conn.execute(insert(m.api_tokens).values(
        id=token_id, name=name, role=scope.value, secret_sha256=_digest(secret),
        created_at=now, revoked=False, expires_at=expires_at, last_used_at=None))
    return f"iotsec_{token_id}_{secret}"


def issue_token(rt: Runtime, name: str, scope: Scope, expires_in: timedelta | None, *,
                actor: str | None = None) -> tuple[TokenInfo, str]:
    if not _NAME.fullmatch(name):
        raise InvalidInputError(f"token name {name[:40]!r} is not valid",
                                hint="use letters, digits and . _ : @ -")
    if expires_in is not None and not timedelta(minutes=1) <= expires_in <= MAX_TOKEN_LIFETIME:
        raise InvalidInputError("a token lives between one minute and ten years")
    now = ts(rt.now())
    expires = now + int(expires_in.total_seconds()) if expires_in else None
    with transaction(rt.engine) as conn:
        token = create_token(conn, name=name, scope=scope, now=now, expires_at=expires)
    info = get_token(rt, token.split("_")[1])
    rt.events.record(Event(rt.now(), "token.created", "success", actor=actor,
                           subject=info.id, detail={"name": name, "scope": scope.value}))
    return info, token


def _info(r: object) -> TokenInfo:
    row = r  # a Row of api_tokens
    return TokenInfo(
        id=row.id, name=row.name, scope=Scope(row.role),  # type: ignore[attr-defined]
        created_at=from_ts(row.created_at),  # type: ignore[attr-defined]
        expires_at=from_ts(row.expires_at) if row.expires_at else None,  # type: ignore[attr-defined]
        last_used_at=from_ts(row.last_used_at) if row.last_used_at else None,  # type: ignore[attr-defined]
        revoked=bool(row.revoked))  # type: ignore[attr-defined]


def get_token(rt: Runtime, token_id: str) -> TokenInfo:
    with reading(rt.engine) as conn:
        row = conn.execute(select(m.api_tokens).where(m.api_tokens.c.id == token_id)).first()
    if row is None:
        raise NotFoundError(f"no API token with id {token_id[:32]!r}",
                            hint="see 'iotsec token list'")
    return _info(row)


def list_tokens(rt: Runtime) -> list[TokenInfo]:
    with reading(rt.engine) as conn:
        return [_info(r) for r in conn.execute(select(m.api_tokens)
                                               .order_by(m.api_tokens.c.created_at))]


LAST_ADMIN_HINT = ("create another admin token first, or use 'iotsec token create --scope "
                   "admin' on the host")


def _other_admins(conn: Connection, token_id: str, now: int) -> int:
    """Unrevoked, unexpired admin tokens other than ``token_id``, locked until the end of the
    transaction: two revocations at once cannot each believe the other token remains."""
    t = m.api_tokens.c
    rows = conn.execute(select(t.id).where(
        t.role == Scope.ADMIN.value, t.revoked == false(), t.id != token_id,
        (t.expires_at.is_(None)) | (t.expires_at > now)).with_for_update()).all()
    return len(rows)


def revoke_token(rt: Runtime, token_id: str, *, caller: Principal | None = None) -> TokenInfo:
    """Revoke a token at once.

    At least one working admin credential always remains: revoking the last unexpired admin
    token is refused, whoever asks. ``caller`` is the principal of an API request; it may
    revoke the very token it authenticates with (it is then logged out) only while another
    admin token remains, which the rule above already guarantees for an admin token, and
    the refusal then says that the caller was about to lock itself out.
    """
    now = ts(rt.now())
    with transaction(rt.engine) as conn:
        row = conn.execute(select(m.api_tokens).where(m.api_tokens.c.id == token_id)
                           .with_for_update()).first()
        if row is None:
            raise NotFoundError(f"no API token with id {token_id[:32]!r}",
                                hint="see 'iotsec token list'")
        if row.revoked:
            raise ConflictError(f"API token {token_id} is already revoked")
        working_admin = (row.role == Scope.ADMIN.value
                         and (row.expires_at is None or row.expires_at > now))
        own = caller is not None and caller.token_id == token_id
        if (working_admin or own) and not _other_admins(conn, token_id, now):
            what = ("the token this request authenticates with" if own
                    else f"admin token {row.name!r} ({token_id})")
            raise ConflictError(f"refusing to revoke {what}: it is the last unexpired admin "
                                "token, and nobody could administer iotsec through the API "
                                "afterwards", hint=LAST_ADMIN_HINT)
        conn.execute(update(m.api_tokens).where(m.api_tokens.c.id == token_id)
                     .values(revoked=True))
    rt.forget(f"token:{token_id}")
    rt.events.record(Event(rt.now(), "token.revoked", "success", subject=token_id,
                           actor=caller.name if caller is not None else None,
                           detail={"own": own} if own else None))
    return get_token(rt, token_id)


def authenticate(rt: Runtime, token: str, *, needed: Scope = Scope.AUDITOR,
                 source: str | None = None, action: str = "") -> Principal:
    """Who holds ``token``, if it grants ``needed``; else raise (and record why).

    The reason recorded in the store is specific; the one returned to the caller is not.
    """
    where = source or "unknown"
    throttle = failure_throttle(rt)
    throttle.check(where)
    now = rt.now()
    match = _TOKEN.fullmatch(token or "")
    row = None
    if match:
        token_id = match[1]

        def load() -> Any:
            with reading(rt.engine) as conn:
                return conn.execute(select(m.api_tokens)
                                    .where(m.api_tokens.c.id == token_id)).first()

        row = rt.recent(LOOKUP_PREFIX + token_id, rt.settings.hot_cache_seconds, load)
    expected = row.secret_sha256 if row is not None else "0" * 64
    digest_ok = hmac.compare_digest(_digest(match[2]) if match else "", expected)
    reason = None
    if match is None:
        reason = "malformed"
    elif row is None or not digest_ok:
        reason = "unknown token"
    elif row.revoked:
        reason = "revoked"
    elif row.expires_at is not None and row.expires_at <= ts(now):
        reason = "expired"
    if reason is not None or row is None:
        throttle.failed(where)
        COUNTERS.inc("authentications", ("failure",))
        rt.events.record(Event(now, "auth", "failure", actor=match[1] if match else None,
                               source=source, subject=action, detail={"reason": reason}))
        raise AuthError("the API token is not valid")
    principal = Principal(token_id=row.id, name=row.name, scope=Scope(row.role))
    if not principal.scope.includes(needed):
        COUNTERS.inc("authentications", ("denied",))
        rt.events.record(Event(now, "auth", "denied", actor=principal.name, source=source,
                               subject=action, detail={"scope": principal.scope.value,
                                                       "needed": needed.value}))
        raise ForbiddenError(f"token {principal.name!r} has scope {principal.scope.value}; "
                             f"this needs {needed.value}",
                             hint=f"use a token with the {needed.value} scope")
    throttle.succeeded(where)
    COUNTERS.inc("authentications", ("success",))
    rt.events.record_repeated(Event(now, "auth", "success", actor=principal.name, source=source,
                                    subject=action, detail={"scope": principal.scope.value}))
    last_used = rt.get_or_put(_LAST_USED, dict)
    previous = last_used.get(row.id, row.last_used_at)
    if previous is None or previous < ts(now) - LAST_USED_GRANULARITY:
        last_used[row.id] = ts(now)
        with transaction(rt.engine) as conn:
            conn.execute(update(m.api_tokens).where(m.api_tokens.c.id == row.id)
                         .values(last_used_at=ts(now)))
    return principal
