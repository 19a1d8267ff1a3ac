"""One step of detection: read what is new, record it, detect, alert — in one transaction.

The events a step's log lines record, the alerts its detections raise, the new read
positions and the renewal of the lease (checked against its fencing token) commit
together: a restart or a take-over reads on from exactly where the last committed step
stopped, so no line is lost or counted twice and no alert is raised twice. The
detector's learnt state (baselines, device profiles) is written every
:data:`PERSIST_SECONDS` in the same way. The mitigation actions of new alerts run after
the commit (:mod:`iotsec.app.detect.actions`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from iotsec.app.broker.events import LogTranslator
from iotsec.app.detect.lease import check_held
from iotsec.app.detect.rules import current_rules
from iotsec.app.detect.sources import EventTail, LogTail, observations_of
from iotsec.app.events import append_events
from iotsec.app.monitor.alerts import raise_alert
from iotsec.app.runtime import Runtime
from iotsec.detect.engine import Detection, Detector
from iotsec.detect.rules import Kind, Rule
from iotsec.eventlog.alerts import NewAlert
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import ts

__all__ = ["EMQX_SOURCE", "LOG_SOURCE", "PERSIST_SECONDS", "Follower", "Raised", "StepResult"]

LOG_SOURCE = "mosquitto-log"
EMQX_SOURCE = "emqx-events"
PERSIST_SECONDS = 10.0
_TICK_SECONDS = 10.0

_SUGGESTED: dict[Kind, str] = {
    Kind.AUTHN_FAILURES: "find who is behind the source; block it at the firewall if it is "
    "not one of yours ('iotsec events list --kind broker.tls')",
    Kind.AUTHZ_DENIALS: "compare the device's topics with its role ('iotsec authz explain'); "
    "a device probing topics may be compromised: consider 'iotsec incident quarantine'",
    Kind.MESSAGE_RATE: "check the device's firmware and what it publishes; throttle or "
    "disable it if it floods the broker",
    Kind.MESSAGE_SIZE: "look at what the device sends: large payloads may be data leaving",
    Kind.NEW_NETWORK: "confirm the device moved; if not, its credentials may be in use "
    "elsewhere: revoke its certificate ('iotsec cert revoke')",
    Kind.DISCONNECT_STORM: "check the broker and the network (a broker restart, an outage, "
    "or someone taking sessions over)",
    Kind.CERT_TWO_PLACES: "the certificate is in two places: one of them is a clone; revoke "
    "it and re-enrol the genuine device",
    Kind.CLIENT_ID_CONFLICT: "two clients fight over one client id: find the second one "
    "('iotsec events list --kind broker.collision')",
    Kind.UNUSUAL_TOPIC: "confirm the new topic is expected (a firmware update?); if not, "
    "the device may be compromised",
    Kind.SILENT: "check the device's power and network; a silent device may have been "
    "tampered with",
}


@dataclass(frozen=True, slots=True)
class Raised:
    alert_id: int
    rule: Rule
    subject: str
    device: str | None


@dataclass(slots=True)
class StepResult:
    lines: int = 0
    observations: int = 0
    new_alerts: list[Raised] = field(default_factory=list)
    repeated: int = 0

    @property
    def busy(self) -> bool:
        return self.lines > 0 or self.observations > 0


def _alert(d: Detection, ids: list[int]) -> NewAlert:
    return NewAlert(rule=d.rule.name, severity=d.rule.severity,
                    subject=d.subject if d.rule.per.value == "fleet"
                    else f"{d.rule.per.value}:{d.subject}",
                    summary=d.summary, suggested=d.rule.suggested or _SUGGESTED[d.rule.kind],
                    evidence={**d.evidence, "kind": d.rule.kind.value, "events": ids,
                              "action": d.rule.action.value, "dry_run": d.rule.dry_run})


class Follower:
    """The detector's state in this process while it holds the lease."""

    def __init__(self, rt: Runtime, log_file: Path | None, holder: str, token: int,
                 ttl: float) -> None:
        self.rt, self.holder, self.token, self.ttl = rt, holder, token, ttl
        self.rules = current_rules(rt)
        self.detector = Detector(self.rules.rules)
        self.translator = LogTranslator(rt)
        self.log: LogTail | None = None
        with reading(rt.engine) as conn:
            cursors = {r.source: r for r in conn.execute(select(m.detect_cursors))}
            s = m.detect_state.c
            for r in conn.execute(select(s.rule, s.subject, s.data)):
                self.detector.restore(r.rule, r.subject, json.loads(r.data))
        if log_file is not None:
            saved = cursors.get(LOG_SOURCE)
            self.log = LogTail(log_file, position=int(saved.position) if saved else 0,
                               inode=int(saved.inode) if saved and saved.inode else None)
        saved = cursors.get(EMQX_SOURCE)
        self.events = EventTail(int(saved.position) if saved else None)
        self.lines = {src: int(r.lines) for src, r in cursors.items()}
        self.rate: dict[str, float] = {src: float(r.rate) for src, r in cursors.items()}
        self.last_step = time.monotonic()
        self.last_persist = time.monotonic()
        self.last_tick = 0.0

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    def step(self) -> StepResult:
        """Read, record and detect once; raises LeaseLostError when the lease is gone."""
        rt = self.rt
        moment = rt.now()
        now = moment.timestamp()
        lines = self.log.read() if self.log is not None else []
        pending = observations_of(self.log, self.translator, lines, now) \
            if self.log is not None else []
        result = StepResult(lines=len(lines))
        with reading(rt.engine) as conn:
            emqx = self.events.read(conn)
        detections: list[Detection] = []
        caught_up = self.log is None or self.log.lag == 0
        # Silence is judged once the backlog is read: lines still unread may be the very
        # messages that show a device alive.
        if caught_up and now - self.last_tick >= _TICK_SECONDS:
            self.last_tick = now
            detections += self.detector.tick(now)
        persist = time.monotonic() - self.last_persist >= PERSIST_SECONDS \
            and bool(self.detector.dirty)
        if not (lines or emqx or detections or persist):
            return result  # nothing to write: the lease is renewed by the loop
        with transaction(rt.engine) as conn:
            check_held(conn, self.holder, self.token, ts(moment), self.ttl)
            rows = [p.row for p in pending if p.row is not None]
            append_events(conn, rows)
            for p in pending:
                obs = p.observation
                if p.row is not None and "seq" in p.row:
                    obs = replace(obs, ref=int(p.row["seq"]))
                detections += self.detector.observe(obs)
            detections += self.detector.observe_all(emqx)
            result.observations = len(pending) + len(emqx)
            for d in detections:
                alert_id, fresh = raise_alert(rt, conn, _alert(d, _ids(conn, d.refs)),
                                              source="detector")
                if fresh:
                    device = d.subject if d.rule.per.value == "device" else None
                    result.new_alerts.append(Raised(alert_id, d.rule, d.subject, device))
                else:
                    result.repeated += 1
            self._cursors(conn, ts(moment), len(lines), len(emqx))
            if persist:
                _persist(conn, self.detector.take_dirty(), ts(moment))
        if persist:
            self.last_persist = time.monotonic()
        return result

    def _cursors(self, conn: Connection, now: int, lines: int, events: int) -> None:
        elapsed = max(time.monotonic() - self.last_step, 1e-3)
        self.last_step = time.monotonic()
        values: list[dict[str, Any]] = []
        if self.log is not None:
            values.append({"source": LOG_SOURCE, "position": self.log.position,
                           "inode": self.log.inode, "count": lines, "lag": self.log.lag})
        values.append({"source": EMQX_SOURCE, "position": self.events.position or 0,
                       "inode": None, "count": events, "lag": self.events.lag})
        c = m.detect_cursors.c
        for v in values:
            src, count = v.pop("source"), v.pop("count")
            total = self.lines.get(src, 0) + count
            self.lines[src] = total
            rate = 0.8 * self.rate.get(src, 0.0) + 0.2 * (count / elapsed)
            self.rate[src] = rate
            row = {**v, "lines": total, "rate": rate, "updated_at": now}
            if count:
                row["last_line_at"] = now
            done = conn.execute(update(m.detect_cursors).where(c.source == src).values(row))
            if done.rowcount == 0:
                conn.execute(insert(m.detect_cursors).values(source=src, **row))


def _ids(conn: Connection, seqs: tuple[int, ...]) -> list[int]:
    """The event ids of the chain positions ``seqs`` (an alert's evidence)."""
    if not seqs:
        return []
    e = m.events.c
    return sorted(int(r.id) for r in conn.execute(select(e.id).where(e.seq.in_(seqs))))


def _persist(conn: Connection, dirty: list[tuple[str, str, dict[str, Any]]], now: int
             ) -> None:
    s = m.detect_state.c
    for i in range(0, len(dirty), 500):
        chunk = dirty[i:i + 500]
        for rule in {r for r, _, _ in chunk}:
            subjects = [subj[:256] for r, subj, _ in chunk if r == rule]
            conn.execute(delete(m.detect_state).where(s.rule == rule,
                                                      s.subject.in_(subjects)))
        conn.execute(insert(m.detect_state), [
            {"rule": rule[:64], "subject": subj[:256], "data": json.dumps(data),
             "updated_at": now} for rule, subj, data in chunk])
