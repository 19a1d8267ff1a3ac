"""Web console sessions: an API token exchanged at sign-in for a server-side session.

The browser holds only a random 256-bit secret (in a cookie); the store holds its SHA-256,
the API token that opened the session and its scope, so any ``iotsec serve`` process sharing
the store accepts the session. Each use checks, in one query, that the token is still
unrevoked and unexpired (revoking a token ends its sessions at once, in every process), that
the session is not idle for longer than ``console_idle_minutes`` and that its absolute
lifetime (``console_absolute_hours``) has not passed. The CSRF token of a session is an
HMAC of its secret: it needs no storage, and nobody without the cookie can compute it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update

from iotsec.app.access.api_tokens import Scope, authenticate
from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.errors import AuthError, ForbiddenError, IotsecError, ThrottledError
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import ts

__all__ = ["LAST_SEEN_GRANULARITY", "ConsoleSession", "csrf_token", "end_session",
           "resume_session", "sign_in"]

#: ``last_seen_at`` is written at most this often (seconds): idle expiry is that coarse.
LAST_SEEN_GRANULARITY = 30
_SECRET_CHARS = 43  # secrets.token_urlsafe(32)
_CONSOLE_SCOPES = (Scope.ADMIN, Scope.OPERATOR, Scope.AUDITOR)


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A live session: who opened it (the token's name and id) and with which scope."""

    token_id: str
    name: str
    scope: Scope
    csrf: str

    def may(self, needed: Scope) -> bool:
        return self.scope.includes(needed)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def csrf_token(secret: str) -> str:
    """The synchronizer token of the session whose cookie holds ``secret``."""
    return hmac.new(secret.encode("ascii"), b"iotsec console csrf", hashlib.sha256).hexdigest()


def sign_in(rt: Runtime, token: str, *, source: str | None) -> tuple[str, ConsoleSession]:
    """Open a session for ``token`` (an admin, operator or auditor API token); return the
    cookie's secret and the session. A refused sign-in is recorded (``console.signin``
    failure) and counts towards the source's failed-authentication throttle."""
    now = rt.now()
    try:
        principal = authenticate(rt, token.strip(), needed=Scope.AUDITOR, source=source,
                                 action="console sign-in")
        if principal.scope not in _CONSOLE_SCOPES:
            raise ForbiddenError("this token cannot sign in to the console",
                                 hint="use an admin, operator or auditor token")
    except (AuthError, ForbiddenError, ThrottledError) as e:
        reason = ("throttled" if isinstance(e, ThrottledError)
                  else "scope" if isinstance(e, ForbiddenError) else "invalid token")
        rt.events.record(Event(now, "console.signin", "failure", source=source,
                               detail={"reason": reason}))
        raise
    secret = secrets.token_urlsafe(32)
    moment = ts(now)
    lifetime = rt.settings.console_absolute_hours * 3600
    with transaction(rt.engine) as conn:
        # Sessions past their absolute lifetime are of no use to anyone: drop them here.
        conn.execute(delete(m.console_sessions).where(m.console_sessions.c.expires_at <= moment))
        conn.execute(insert(m.console_sessions).values(
            id_sha256=_digest(secret), token_id=principal.token_id,
            scope=principal.scope.value, created_at=moment, last_seen_at=moment,
            expires_at=moment + lifetime, source=(source or "")[:64] or None))
        rt.events.record_in(conn, Event(now, "console.signin", "success", actor=principal.name,
                                        source=source, subject=principal.token_id,
                                        detail={"scope": principal.scope.value}))
    return secret, ConsoleSession(principal.token_id, principal.name, principal.scope,
                                  csrf_token(secret))


def _ended(reason: str) -> AuthError:
    return AuthError(f"the console session {reason}", hint="sign in again")


def resume_session(rt: Runtime, secret: str) -> ConsoleSession:
    """The live session whose cookie holds ``secret``, or :class:`AuthError` (the session
    is then removed when it exists but has ended)."""
    if len(secret) != _SECRET_CHARS:
        raise _ended("is not valid")
    s, t = m.console_sessions.c, m.api_tokens.c
    key = _digest(secret)
    now = ts(rt.now())
    idle = rt.settings.console_idle_minutes * 60
    with reading(rt.engine) as conn:
        row = conn.execute(select(s.last_seen_at, s.expires_at, s.scope, t.id, t.name,
                                  t.revoked, t.expires_at.label("token_expires_at"))
                           .join(m.api_tokens, t.id == s.token_id)
                           .where(s.id_sha256 == key)).first()
    if row is None:
        raise _ended("is not valid")
    reason = ("has ended (the API token was revoked)" if row.revoked
              else "has ended (the API token expired)"
              if row.token_expires_at is not None and row.token_expires_at <= now
              else "has expired" if row.expires_at <= now
              else "was idle for too long" if row.last_seen_at + idle <= now
              else None)
    if reason is not None:
        with transaction(rt.engine) as conn:
            conn.execute(delete(m.console_sessions).where(s.id_sha256 == key))
        raise _ended(reason)
    # A page view reads; it writes only when last_seen_at is due (every 30 s at most).
    if row.last_seen_at < now - LAST_SEEN_GRANULARITY:
        with transaction(rt.engine) as conn:
            conn.execute(update(m.console_sessions).where(s.id_sha256 == key)
                         .values(last_seen_at=now))
    return ConsoleSession(row.id, row.name, Scope(row.scope), csrf_token(secret))


def end_session(rt: Runtime, secret: str, *, source: str | None) -> None:
    """Sign out: the session is removed from the store (recorded as ``console.signout``)."""
    try:
        session = resume_session(rt, secret)
    except IotsecError:
        return
    with transaction(rt.engine) as conn:
        conn.execute(delete(m.console_sessions)
                     .where(m.console_sessions.c.id_sha256 == _digest(secret)))
        rt.events.record_in(conn, Event(rt.now(), "console.signout", "success",
                                        actor=session.name, source=source,
                                        subject=session.token_id))
