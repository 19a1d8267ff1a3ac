"""A security event as it is recorded: what happened, when, to whom, and the row it is
stored as (its fields clipped to the columns' widths and kept printable)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from iotsec.timeutil import ts

__all__ = ["ACTOR_WIDTH", "MAX_FIELD", "SOURCE_WIDTH", "Event"]

MAX_FIELD = 256
#: The widths of the stored ``actor`` and ``source`` fields.
ACTOR_WIDTH, SOURCE_WIDTH = 160, 64


def _clip(value: str | None, width: int) -> str | None:
    # Fields may carry attacker-chosen text (a request path): kept printable, and within the
    # column's width after escaping (PostgreSQL refuses a longer value, and with it the whole
    # batch of events).
    if value is None:
        return None
    value = value[:width]
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in value)[:width]


@dataclass(frozen=True, slots=True)
class Event:
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
        """The stored fields (without the chain's ``seq`` and ``hash``)."""
        return {"at": ts(self.at), "kind": self.kind[:64], "outcome": self.outcome[:16],
                "actor": _clip(self.actor, ACTOR_WIDTH),
                "source": _clip(self.source, SOURCE_WIDTH),
                "subject": _clip(self.subject, MAX_FIELD),
                "detail": json.dumps(dict(self.detail or {}), sort_keys=True, default=str)}
