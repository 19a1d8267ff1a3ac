"""What the detector reads: the Mosquitto log, followed like ``tail -F`` (a rotated file is
read to its end before the new one is opened; a truncated file is read from its start),
and the EMQX hook decisions, which every serving process records as events
(``broker.authn``, ``broker.authz``), read from the event table by id. Each is turned into
:class:`~iotsec.detect.engine.Observation` values, and the Mosquitto lines into the same
security events ``iotsec broker ingest-log`` records."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, func, select

from iotsec.app.broker.events import INTERNAL_CLIENTS, LogTranslator
from iotsec.app.events import Event
from iotsec.broker.logs import MAX_LINE, LogRecord, parse_line, parse_publish
from iotsec.detect.engine import Observation
from iotsec.store import models as m

__all__ = ["EMQX_KINDS", "MAX_READ", "EventTail", "LogTail", "Pending", "observations_of"]

#: Bytes of log read per step at most (about 1,300 lines; the rest waits for the next
#: step, which comes at once): a step commits its alerts, so a smaller one alerts sooner.
MAX_READ = 128 * 1024
#: The events the EMQX hooks record, which the detector follows.
EMQX_KINDS = ("broker.authn", "broker.authz")
_MAX_USERS = 200_000


@dataclass(slots=True)
class Pending:
    """An observation whose evidence event (``row``, if any) is not in the chain yet."""

    observation: Observation
    row: dict[str, Any] | None = None


@dataclass(slots=True)
class LogTail:
    """Follows one log file from a saved position (``position``, ``inode``)."""

    path: Path
    position: int = 0
    inode: int | None = None
    handle: IO[bytes] | None = None
    skipping: bool = False  # inside a line longer than MAX_LINE
    size: int = 0  # the file's size when last read (for the lag)
    users: dict[str, str] = field(default_factory=dict)  # client id -> user name

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def _open(self) -> bool:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return False
        st = os.fstat(handle.fileno())
        if self.inode != st.st_ino or self.position > st.st_size:
            self.position = 0  # another file (rotated) or truncated: from its start
        self.inode = st.st_ino
        self.handle = handle
        return True

    def read(self, budget: int = MAX_READ) -> list[bytes]:
        """Complete new lines (without their newline); the position moves past them."""
        if self.handle is None and not self._open():
            return []
        assert self.handle is not None
        lines = self._read(budget)
        if not lines:
            # Nothing more in this file: has it been rotated or truncated under us?
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return []
            if st.st_ino != self.inode:
                self.close()
                if self._open():
                    return self._read(budget)
            elif st.st_size < self.position:
                self.position = 0
                return self._read(budget)
        return lines

    def _read(self, budget: int) -> list[bytes]:
        assert self.handle is not None
        self.handle.seek(self.position)
        data = self.handle.read(budget)
        self.size = max(os.fstat(self.handle.fileno()).st_size, self.position + len(data))
        if not data:
            return []
        if self.skipping:
            newline = data.find(b"\n")
            if newline < 0:
                self.position += len(data)
                return []
            self.position += newline + 1
            data = data[newline + 1:]
            self.skipping = False
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) > MAX_LINE:
                # An over-long line: skipped to its end without keeping it.
                self.position += len(data)
                self.skipping = True
            return []  # a partial last line waits for its end
        self.position += end + 1
        return data[:end].split(b"\n")

    @property
    def lag(self) -> int:
        return max(self.size - self.position, 0)

    def user(self, client_id: str | None) -> str | None:
        """The user name (the device id) a client id connected with; the client id when
        its connection was before the position the detector started from."""
        if client_id is None:
            return None
        return self.users.get(client_id, client_id)

    def remember(self, client_id: str, username: str) -> None:
        if len(self.users) >= _MAX_USERS and client_id not in self.users:
            self.users.pop(next(iter(self.users)))
        self.users[client_id] = username


def _at(record: LogRecord, event: Event | None, fallback: float) -> float:
    if event is not None:
        return event.at.timestamp()
    return record.at.timestamp() if record.at is not None else fallback


def observations_of(tail: LogTail, translator: LogTranslator, lines: list[bytes],
                    now: float) -> list[Pending]:
    """Parse ``lines``; the events they record and what the detector observes in them."""
    out: list[Pending] = []
    users = tail.users
    for raw in lines:
        text = raw.decode("utf-8", "replace")
        published = parse_publish(text)
        if published is not None:
            # Nine lines in ten at debug level: straight to an observation.
            seconds, client, topic, size = published
            user = users.get(client, client)
            if client in INTERNAL_CLIENTS or user in INTERNAL_CLIENTS:
                continue
            out.append(Pending(Observation(seconds if seconds is not None else now,
                                           "publish", device=user, client_id=client,
                                           topic=topic, size=size)))
            continue
        record = parse_line(text)
        kind = record.kind
        cid = record.client_id
        if kind == "publish":
            if cid is None or cid in INTERNAL_CLIENTS:
                continue
            device = tail.user(cid)
            if device in INTERNAL_CLIENTS:
                continue
            out.append(Pending(Observation(_at(record, None, now), "publish", device=device,
                                           client_id=cid, topic=record.topic,
                                           size=record.size or 0)))
            continue
        if kind == "connect" and cid is not None:
            tail.remember(cid, record.username or cid)
        event = translator.event(record)
        if event is None:
            continue
        row = event.row()
        at = _at(record, event, now)
        obs = _observation(tail, record, event, at)
        out.append(Pending(obs, row) if obs is not None else Pending(
            Observation(at, "none"), row))
    return out


def _observation(tail: LogTail, record: LogRecord, event: Event, at: float
                 ) -> Observation | None:
    cid = record.client_id
    kind, outcome = event.kind, event.outcome
    if kind == "broker.tls":
        return Observation(at, "authn-failure", source=event.source)
    if kind == "broker.connect":
        return Observation(at, "connect", device=tail.user(cid), client_id=cid,
                           source=event.source)
    if kind == "broker.disconnect":
        if record.detail == "not authorised":
            return Observation(at, "authn-failure", device=tail.user(cid),
                               source=event.source)
        return Observation(at, "disconnect", device=tail.user(cid), client_id=cid,
                           source=event.source, abnormal=outcome != "success")
    if kind in ("broker.publish", "broker.subscribe") and outcome == "denied":
        return Observation(at, "authz-denial", device=tail.user(cid), client_id=cid,
                           source=event.source, topic=event.subject)
    if kind == "broker.collision":
        previous = (event.detail or {}).get("previous_source")
        return Observation(at, "collision", device=tail.user(cid), client_id=cid,
                           source=event.source,
                           previous_source=previous if isinstance(previous, str) else None)
    return None


class EventTail:
    """The EMQX hook decisions recorded since ``position`` (an event id)."""

    def __init__(self, position: int | None) -> None:
        self.position = position
        self.lag = 0

    def read(self, conn: Connection, limit: int = 5000) -> list[Observation]:
        e = m.events.c
        if self.position is None:
            # First run: from now on (the history was recorded before detection began).
            self.position = int(conn.execute(select(func.max(e.id))).scalar() or 0)
        rows = conn.execute(select(e.id, e.seq, e.at, e.kind, e.outcome, e.actor, e.source,
                                   e.detail).where(e.id > self.position,
                                                   e.kind.in_(EMQX_KINDS))
                            .order_by(e.id).limit(limit)).all()
        out: list[Observation] = []
        for r in rows:
            self.position = int(r.id)
            try:
                detail = json.loads(r.detail)
            except ValueError:
                detail = {}
            count = detail.get("count", 1) if isinstance(detail, dict) else 1
            count = count if isinstance(count, int) and 0 < count < 1_000_000 else 1
            if r.kind == "broker.authn":
                kind = "authn-failure" if r.outcome == "failure" else "connect"
            elif r.outcome == "denied":
                kind = "authz-denial"
            else:
                continue
            out.append(Observation(float(r.at), kind, device=r.actor, source=r.source,
                                   count=count, ref=int(r.seq) if r.seq is not None else None))
        self.lag = len(rows) if len(rows) >= limit else 0
        return out
