"""The console's audit view: the fleet audit's findings with the fix for each, computed in
a background thread and held for :data:`AUDIT_TTL` seconds (the audit reads every device
and certificate: tens of seconds at a million), so a page never waits for it."""

from __future__ import annotations

from iotsec.app.audit import run_audit
from iotsec.app.console.cache import Held, held_or_refreshing, value_now
from iotsec.app.runtime import Runtime
from iotsec.audit.model import AuditResult

__all__ = ["AUDIT_TTL", "audit_now", "audit_result"]

AUDIT_TTL = 300.0


def _run(rt: Runtime, actor: str) -> AuditResult:
    return run_audit(rt, broker_dir=rt.settings.broker_dir, actor=actor)


def audit_result(rt: Runtime, *, actor: str, fresh: bool = False) -> Held[AuditResult] | None:
    """The newest audit held, with its age (``None`` while a first one runs); older than
    :data:`AUDIT_TTL` seconds, or ``fresh`` (at most every few seconds), a newer one runs in
    the background."""
    return held_or_refreshing(rt, "audit", AUDIT_TTL, lambda: _run(rt, actor), fresh=fresh)


def audit_now(rt: Runtime, *, actor: str) -> AuditResult:
    """The newest audit, waiting for it if none is held (a download)."""
    return value_now(rt, "audit", AUDIT_TTL, lambda: _run(rt, actor))
