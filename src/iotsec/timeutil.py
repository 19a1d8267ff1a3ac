"""Time helpers: the store keeps integer Unix seconds; durations are written like ``30d``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from iotsec.errors import InvalidInputError

__all__ = ["from_ts", "parse_duration", "parse_moment", "ts"]

# Pattern texts, compiled (and cached by the re module) on first use: compiling them with
# the module would add to the start-up of every command, most of which read no duration.
_DURATION = r"\s*([0-9]{1,6})\s*([smhdw]?)\s*"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "": 86400}


def ts(moment: datetime) -> int:
    return int(moment.timestamp())


def from_ts(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s``; a bare number means days."""
    match = re.fullmatch(_DURATION, text, re.ASCII)
    if not match:
        raise InvalidInputError(f"{text[:40]!r} is not a duration",
                                hint="write a number and a unit: 30d, 12h, 90m, 2w or 45s")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_moment(text: str, now: datetime) -> datetime:
    """A point in time: a duration back from ``now`` (``2h``, ``7d``: see
    :func:`parse_duration`) or an ISO 8601 date or time (UTC unless it names an offset)."""
    stripped = text.strip()
    moment: datetime | None = None
    try:
        if re.fullmatch(_DURATION, stripped, re.ASCII):
            moment = now - parse_duration(stripped)
        elif len(stripped) <= 40:
            moment = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
        if moment is not None:
            ts(moment)  # representable as Unix seconds
    except (ValueError, OverflowError):
        moment = None
    if moment is None:
        raise InvalidInputError(f"{text[:40]!r} is neither a duration nor a date",
                                hint="write 2h or 7d (that long ago), or an ISO 8601 time "
                                "such as 2026-12-01T08:00:00Z")
    return moment
