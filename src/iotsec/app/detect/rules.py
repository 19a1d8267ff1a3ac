"""The detection rules in force: validated, applied (stored, so every serving process
sees them) and shown. With no document applied, the built-in set
(:data:`iotsec.detect.rules.DEFAULT_RULES`) is in force."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select

from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.detect.rules import DEFAULT_RULES, RuleSet, default_rules, parse_rules
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = ["AppliedRules", "apply_rules", "current_rules", "validate_rules"]


@dataclass(frozen=True, slots=True)
class AppliedRules:
    rules: RuleSet
    digest: str
    version: int | None  # None: the built-in set (nothing applied)
    applied_at: datetime | None
    applied_by: str | None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def validate_rules(data: bytes) -> RuleSet:
    """Parse and check a rule document without applying it."""
    return parse_rules(data)


def apply_rules(rt: Runtime, data: bytes, *, actor: str | None = None) -> AppliedRules:
    """Validate ``data`` and make it the rules in force (a ``detect.rules`` event of the
    same transaction). Nothing is stored when it does not validate."""
    rules = parse_rules(data)
    moment = rt.now()
    digest = _digest(rules.source)
    with transaction(rt.engine) as conn:
        version = int(conn.execute(insert(m.detect_rules).values(
            document=rules.source, digest=digest, applied_at=ts(moment),
            applied_by=actor).returning(m.detect_rules.c.id)).scalar_one())
        rt.events.record_in(conn, Event(moment, "detect.rules", "success", actor=actor,
                                        subject=f"version {version}", detail={
                                            "digest": digest, "rules": len(rules.rules),
                                            "max_automatic_actions":
                                                rules.max_automatic_actions}))
    return AppliedRules(rules, digest, version, moment.replace(microsecond=0), actor)


def current_rules(rt: Runtime) -> AppliedRules:
    """The newest applied document, or the built-in set when none was applied."""
    r = m.detect_rules.c
    with reading(rt.engine) as conn:
        row = conn.execute(select(r.id, r.document, r.digest, r.applied_at, r.applied_by)
                           .order_by(r.id.desc()).limit(1)).first()
    if row is None:
        return AppliedRules(default_rules(), _digest(DEFAULT_RULES), None, None, None)
    # Stored documents were validated when applied; parsed again with the code in force.
    return AppliedRules(parse_rules(row.document.encode("utf-8")), row.digest, int(row.id),
                        from_ts(row.applied_at), row.applied_by)
