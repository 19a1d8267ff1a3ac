"""The broker's log as security events (``iotsec events list --device ID``).

Each ingest reads the log from where the previous one stopped (the offset and the file's
inode are kept in a state file; a rotated or truncated log is read from its start), parses
complete lines with :func:`iotsec.broker.logs.parse_line` and stores events in batches
through the events table, like every other security event:

=====================  =========  ==========================================================
kind                   outcome    when
=====================  =========  ==========================================================
``broker.connect``     success    a device's session started (source = address:port)
``broker.disconnect``  success    the device disconnected cleanly
``broker.disconnect``  failure    keepalive timeout, protocol error, connection lost...
``broker.publish``     denied     the ACL refused a PUBLISH (subject = topic)
``broker.subscribe``   denied     a subscription the policy does not allow (Mosquitto
                                  grants every SUBACK and filters delivery; iotsec flags
                                  the attempt)
``broker.tls``         failure    a TLS handshake failed (no or untrusted certificate,
                                  expired, revoked, plaintext on the TLS port...)
``broker.collision``   failure    a second connection with the same certificate took the
                                  session over (a cloned device?)
``broker.takeover``    success    iotsec ended the session (``broker.kick`` has the reason)
``broker.error``       failure    the broker logged an error (e.g. a reload that failed)
=====================  =========  ==========================================================

iotsec's own probe and control connections are not recorded.
"""

from __future__ import annotations

import json
import os
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iotsec.access.engine import CompiledPolicy
from iotsec.access.policy import Identity
from iotsec.access.topics import TopicError
from iotsec.app.access.decisions import current_policy, identity_for, quarantine_policy
from iotsec.app.broker.pki import CANARY_USER
from iotsec.app.events import Event, append_events
from iotsec.app.runtime import Runtime
from iotsec.broker.acl import INTERNAL_USERS
from iotsec.broker.logs import MAX_LINE, LogRecord, parse_line
from iotsec.errors import IotsecError, NotFoundError
from iotsec.filesystem import PRIVATE_FILE_MODE, atomic_write
from iotsec.identity.registry import DeviceState
from iotsec.store.db import transaction

__all__ = ["BATCH", "INTERNAL_CLIENTS", "MAX_INGEST_BYTES", "IngestResult", "LogTranslator",
           "ingest_log"]

#: Read at most this much log per ingest; the rest waits for the next one.
MAX_INGEST_BYTES = 64 * 1024 * 1024
BATCH = 1000
#: The client ids and user names of iotsec's own connections (never security events).
INTERNAL_CLIENTS = frozenset({*INTERNAL_USERS, CANARY_USER})


@dataclass(frozen=True)
class IngestResult:
    lines: int
    events: int
    by_kind: dict[str, int]
    offset: int


def _lines(path: Path, state: dict[str, Any], limit: int) -> Iterator[tuple[str, int]]:
    """Complete lines from the saved offset, each with the offset after it."""
    with path.open("rb") as fh:
        st = os.fstat(fh.fileno())
        offset = int(state.get("offset", 0))
        if state.get("inode") != st.st_ino or offset > st.st_size:
            offset = 0  # rotated or truncated: start again
        state["inode"] = st.st_ino
        state["offset"] = offset
        fh.seek(offset)
        budget = limit
        while budget > 0:
            raw = fh.readline(MAX_LINE + 2)
            if not raw or not raw.endswith(b"\n"):
                if len(raw) > MAX_LINE:
                    # An over-long line: skip to its end without keeping it.
                    offset += len(raw)
                    while raw and not raw.endswith(b"\n"):
                        raw = fh.readline(MAX_LINE + 2)
                        offset += len(raw)
                    state["offset"] = offset
                    continue
                break  # a partial last line: read it next time
            offset += len(raw)
            budget -= len(raw)
            state["offset"] = offset
            yield raw[:-1].decode("utf-8", "replace"), offset


class LogTranslator:
    """Turns records into events; remembers sources and pending takeovers (used by
    :func:`ingest_log` and by the detector, which follows the log continuously)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.sources: dict[str, str] = {}
        self.pending_takeover: dict[str, LogRecord] = {}
        self.held: set[str] = set()  # client ids iotsec's control account holds
        # Connections not yet a session (TLS failures are logged without the address).
        self.unmatched: deque[str] = deque(maxlen=10_000)
        self.tls_error: str | None = None
        self.identities: dict[str, tuple[Identity, DeviceState] | None] = {}
        self.policy: CompiledPolicy | None = None

    def _identity(self, device_id: str) -> tuple[Identity, DeviceState] | None:
        if device_id not in self.identities:
            try:
                self.identities[device_id] = identity_for(self.rt, device_id)
            except (NotFoundError, IotsecError):
                self.identities[device_id] = None
        return self.identities[device_id]

    def _unmatched(self, source: str | None) -> str | None:
        """Take ``source`` (or, with ``None``, the oldest) off the unmatched connections."""
        for candidate in list(self.unmatched):
            if source is None or candidate == source:
                self.unmatched.remove(candidate)
                return candidate
        return source

    def event(self, r: LogRecord) -> Event | None:
        at = r.at or self.rt.now()
        cid = r.client_id
        if r.kind == "connection":
            if r.source:
                self.unmatched.append(r.source)
            return None
        if r.kind == "connect":
            self._unmatched(r.source)
        if r.kind == "error" and r.detail and r.detail.startswith("OpenSSL Error"):
            self.tls_error = self.tls_error or r.detail.split(": ", 1)[-1]
            return None
        if cid in INTERNAL_CLIENTS or r.username in INTERNAL_CLIENTS:
            if r.kind == "connect" and r.username and r.username in INTERNAL_USERS and cid:
                self.held.add(cid)
                taken = self.pending_takeover.pop(cid, None)
                if taken is not None and cid not in INTERNAL_CLIENTS:
                    return Event(taken.at or at, "broker.takeover", "success", actor=cid,
                                 source=self.sources.get(cid), detail={"by": "iotsec"})
            return None
        if r.kind == "connect" and cid is not None:
            self.held.discard(cid)
            previous_source = self.sources.get(cid)
            self.sources[cid] = r.source or ""
            taken = self.pending_takeover.pop(cid, None)
            if taken is not None:
                return Event(taken.at or at, "broker.collision", "failure", actor=cid,
                             source=r.source, detail={
                                 "reason": "a second connection with the same identity took "
                                 "the session over", "previous_source": previous_source})
            return Event(at, "broker.connect", "success", actor=r.username or cid,
                         source=r.source, detail={"client_id": cid, "protocol": r.protocol,
                                                  "options": r.detail})
        if r.kind == "takeover" and cid is not None:
            self.pending_takeover[cid] = r
            return None
        if r.kind == "disconnect" and cid == "<unknown>":
            # A connection that never became a session: a TLS handshake that failed after
            # the connection was accepted (its error is the OpenSSL line just before; the
            # address is the oldest connection not yet a session: best effort, Mosquitto
            # does not log it here), or garbage on the port.
            error, self.tls_error = self.tls_error or r.detail, None
            return Event(at, "broker.tls", "failure", source=self._unmatched(None),
                         detail={"error": error})
        if r.kind == "disconnect" and cid is not None:
            self.tls_error = None
            if cid in self.held:
                self.held.discard(cid)
                return None
            clean = r.detail == "disconnected"
            return Event(at, "broker.disconnect", "success" if clean else "failure",
                         actor=None if cid == "<unknown>" else cid,
                         source=self.sources.get(cid), detail={"reason": r.detail})
        if r.kind == "publish-denied":
            return Event(at, "broker.publish", "denied", actor=cid, subject=r.topic,
                         source=self.sources.get(cid or ""),
                         detail={"qos": r.qos, "options": r.detail})
        if r.kind == "tls-failure":
            # The handshake failed while the connection was accepted: Mosquitto logs only
            # this line (no "New connection", no "<unknown> disconnected").
            return Event(at, "broker.tls", "failure", source=r.source,
                         detail={"error": r.detail})
        if r.kind == "acl-denied":
            return Event(at, "broker.publish", "denied", actor=cid, detail={"reason": r.detail})
        if r.kind == "error" and r.detail:
            return Event(at, "broker.error", "failure", detail={"message": r.detail})
        if r.kind == "subscribe" and cid is not None and r.topic is not None:
            return self._subscription(at, cid, r)
        return None

    def _subscription(self, at: Any, cid: str, r: LogRecord) -> Event | None:
        found = self._identity(cid)
        topic = r.topic or ""
        if found is None:
            return Event(at, "broker.subscribe", "denied", actor=cid, subject=topic,
                         detail={"reason": "not a registered device"})
        identity, state = found
        if self.policy is None:
            self.policy = current_policy(self.rt)
        policy = (quarantine_policy(self.rt) if state is DeviceState.QUARANTINED
                  else self.policy)
        try:
            decision = policy.decide(identity, "subscribe", topic)
        except TopicError:
            return None
        if state not in (DeviceState.ACTIVE, DeviceState.PENDING, DeviceState.QUARANTINED):
            reason = f"device is {state.value}"
        elif decision.allowed:
            return None
        elif state is DeviceState.QUARANTINED:
            reason = f"device is quarantined: {decision.explanation}"
        else:
            reason = decision.explanation
        return Event(at, "broker.subscribe", "denied", actor=cid, subject=topic,
                     source=self.sources.get(cid),
                     detail={"reason": reason, "qos": r.qos,
                             "broker": "granted; messages the policy forbids are not delivered"})


def _load_state(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8")[:4096])
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def ingest_log(rt: Runtime, log_file: Path, *, state_file: Path | None = None,
               max_bytes: int = MAX_INGEST_BYTES) -> IngestResult:
    """Parse new lines of ``log_file`` into security events (see the module docstring).
    Without ``state_file`` the whole file is read."""
    state = _load_state(state_file)
    translator = LogTranslator(rt)
    counts: Counter[str] = Counter()
    batch: list[dict[str, Any]] = []
    lines = 0

    def flush() -> None:
        if batch:
            with transaction(rt.engine) as conn:
                append_events(conn, batch)
            batch.clear()

    try:
        source = _lines(log_file, state, max_bytes)
        for text, _ in source:
            lines += 1
            event = translator.event(parse_line(text))
            if event is None:
                continue
            counts[event.kind] += 1
            batch.append(event.row())
            if len(batch) >= BATCH:
                flush()
    except FileNotFoundError:
        raise NotFoundError(f"the broker log {log_file} does not exist",
                            hint="the broker writes DIR/run/mosquitto.log once it has started"
                            ) from None
    flush()
    offset = int(state.get("offset", 0))
    if state_file is not None:
        atomic_write(state_file, json.dumps(state).encode("utf-8"), mode=PRIVATE_FILE_MODE)
    return IngestResult(lines=lines, events=sum(counts.values()), by_kind=dict(counts),
                        offset=offset)
