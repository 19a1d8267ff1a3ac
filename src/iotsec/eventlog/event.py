"""A security event as it is recorded: its fields, and the row they are stored as.

Defined apart from the store code (:mod:`iotsec.app.events`) so that a path that appends an
event without SQLAlchemy (:mod:`iotsec.store.writer`) builds the very same row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from iotsec.timeutil import ts

__all__ = ["ACTOR_WIDTH", "MAX_FIELD", "SOURCE_WIDTH", "Event", "key_use_event"]

MAX_FIELD = 256
#: The widths of events.actor and events.source.
ACTOR_WIDTH, SOURCE_WIDTH = 160, 64
#: The detail's JSON: what ``json.dumps(detail, sort_keys=True, default=str)`` gives, with one
#: encoder made once (``dumps`` with arguments makes a new one per call, which costs more
#: than encoding an event's few fields).
_DETAIL_JSON = json.JSONEncoder(sort_keys=True, default=str).encode


class Event(NamedTuple):
    at: datetime
    kind: str
    outcome: str
    actor: str | None = None
    source: str | None = None
    subject: str | None = None
    detail: Mapping[str, Any] | None = None
    id: int | None = None
    #: The event's position in the chain and its hash (set once it is stored).
    seq: int | None = None
    hash: str | None = None

    def row(self) -> dict[str, Any]:
        def clip(v: str | None, width: int) -> str | None:
            # Fields may carry attacker-chosen text (a request path): kept printable, and
            # within the column's width after escaping (PostgreSQL refuses a longer value,
            # and with it the whole batch of events).
            if v is None:
                return None
            v = v[:width]
            if v.isprintable():
                return v
            return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in v)[:width]

        return {"at": ts(self.at), "kind": self.kind[:64], "outcome": self.outcome[:16],
                "actor": clip(self.actor, ACTOR_WIDTH),
                "source": clip(self.source, SOURCE_WIDTH),
                "subject": clip(self.subject, MAX_FIELD),
                "detail": _DETAIL_JSON(dict(self.detail or {}))}


def key_use_event(at: datetime, label: str, operation: str, backend: str) -> Event:
    """The record of one use of a custody key (``operation``: sign, unwrap...; ``backend``:
    where the key lives, file or pkcs11)."""
    return Event(at=at, kind="key.use", outcome="ok", subject=label,
                 detail={"operation": operation, "backend": backend})
