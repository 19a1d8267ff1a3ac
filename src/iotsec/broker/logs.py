"""Mosquitto 2.0 log lines, parsed into records (pure).

The formats are Mosquitto 2.0.11's own (``src/*.c`` log calls), with the timestamp either
as iotsec renders it (``2026-01-31T12:00:00+0000: ``, see
:data:`iotsec.broker.mosquitto.LOG_TIMESTAMP_FORMAT`) or Mosquitto's default Unix seconds
(``1769860800: ``). What is recognised:

- ``New client connected from IP:PORT as ID (pN, cN, kN, u'USER').``: a session started;
- ``Client ID disconnected.`` / ``closed its connection.`` / ``has exceeded timeout`` /
  ``disconnected due to ...`` / ``disconnected: ...`` / ``disconnected, not authorised.`` /
  ``been disconnected by administrative action.``: a session ended;
- ``Client ID already connected, closing old connection.``: the client id was taken over
  (by iotsec ending a session, or by a second holder of the same certificate);
- ``Client connection from IP failed: ERROR.``: a TLS handshake failed (no certificate, an
  unknown CA, an expired or revoked certificate, plaintext on the TLS port...);
- ``Denied PUBLISH from ID (dN, qN, rN, mN, 'TOPIC', ... (N bytes))`` (debug level);
- ``Received PUBLISH from ID (dN, qN, rN, mN, 'TOPIC', ... (N bytes))`` (debug level): a
  message a client published (its topic and size feed detection);
- ``ID QOS FILTER`` (the ``subscribe`` log type): a subscription, which ``acl_file`` never
  refuses; iotsec checks it against the policy when ingesting;
- ``Reloading config.``, ``Error...``/``Warning...`` lines, and the start/stop lines.

Anything else is ``other``. A line longer than :data:`MAX_LINE` is not parsed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["MAX_LINE", "LogRecord", "parse_line", "parse_publish"]

#: Longest line parsed: a Denied PUBLISH line holds a topic of up to 65,535 bytes.
MAX_LINE = 70_000

_ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[+-]\d{4}|Z)?): (.*)$", re.DOTALL)
_EPOCH = re.compile(r"^(\d{1,12}): (.*)$", re.DOTALL)
_CONNECTED = re.compile(
    r"^New client connected from (.+?):(\d{1,5}) as (.+) \(p(\d+), c(\d), k(\d+)"
    r"(?:, u'(.*)')?\)\.$", re.DOTALL)
_NEW_CONNECTION = re.compile(r"^New connection from (.+?):(\d{1,5}) on port (-?\d+)\.$")
_RECEIVED_PUBLISH = re.compile(
    r"^Received PUBLISH from (.+) \(d(\d), q(\d), r(\d), m(\d+), '(.*)', \.\.\. \((\d+) bytes\)\)$",
    re.DOTALL)
_TAKEOVER = re.compile(r"^Client (.+) already connected, closing old connection\.$", re.DOTALL)
_TLS_FAILED = re.compile(r"^Client connection from (.+?) failed: (.*?)\.?$", re.DOTALL)
_DENIED_PUBLISH = re.compile(
    r"^Denied PUBLISH from (.+) \(d(\d), q(\d), r(\d), m(\d+), '(.*)', \.\.\. \((\d+) bytes\)\)$",
    re.DOTALL)
_DISCONNECTS = (
    (re.compile(r"^Client (.+) disconnected\.$", re.DOTALL), "disconnected"),
    (re.compile(r"^Client (.+) closed its connection\.$", re.DOTALL), "closed"),
    (re.compile(r"^Client (.+) has exceeded timeout, disconnecting\.$", re.DOTALL), "timeout"),
    (re.compile(r"^Client (.+) disconnected, not authorised\.$", re.DOTALL), "not authorised"),
    (re.compile(r"^Client (.+) been disconnected by administrative action\.$", re.DOTALL),
     "administrative action"),
    (re.compile(r"^Client (.+) disconnected due to (.+)\.$", re.DOTALL), None),
    (re.compile(r"^Client (.+) disconnected: (.+?)\.?$", re.DOTALL), None),
)
_DANGEROUS = re.compile(r'^ACL denying access to client with dangerous (username|client id) '
                        r'"(.*)"$', re.DOTALL)
_SUBSCRIBE = re.compile(r"^(\S+) ([0-2]) (\S.*)$", re.DOTALL)
_LIFECYCLE = re.compile(r"^mosquitto version (\S+) (starting|running|terminating)$")


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One parsed line. ``kind`` is one of: connect, connection, disconnect, takeover,
    tls-failure, publish, publish-denied, subscribe, acl-denied, reload, error, warning, lifecycle,
    other, oversize."""

    kind: str
    at: datetime | None = None
    client_id: str | None = None
    username: str | None = None
    source: str | None = None
    topic: str | None = None
    detail: str | None = None
    qos: int | None = None
    protocol: int | None = None
    size: int | None = None


@functools.lru_cache(maxsize=1024)
def _iso_moment(stamp: str) -> datetime | None:
    """A log's timestamp; cached: a busy broker writes thousands of lines per second."""
    try:
        if stamp.endswith("Z"):
            return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if len(stamp) > 19:
            return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").astimezone(UTC)
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


_PUBLISH_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[+-]\d{4}|Z)?|\d{1,12}): Received PUBLISH from (.+) "
    r"\(d\d, q(\d), r\d, m\d+, '(.*)', \.\.\. \((\d+) bytes\)\)$", re.DOTALL)


@functools.lru_cache(maxsize=1024)
def _seconds(stamp: str) -> float | None:
    if stamp.isdigit():
        return float(stamp)
    moment = _iso_moment(stamp)
    return moment.timestamp() if moment is not None else None


def parse_publish(line: str) -> tuple[float | None, str, str, int] | None:
    """The most frequent line of a debug-level log, ``Received PUBLISH``, parsed on its
    own (Unix seconds, client id, topic, payload bytes), or None for any other line:
    :func:`parse_line` reads it the same way, more slowly."""
    if "Received PUBLISH from " not in line[:64] or len(line) > MAX_LINE:
        return None
    m = _PUBLISH_LINE.match(line)
    if m is None:
        return None
    return _seconds(m.group(1)), m.group(2), m.group(4), int(m.group(5))


def _timestamp(line: str) -> tuple[datetime | None, str]:
    m = _ISO.match(line)
    if m:
        moment = _iso_moment(m.group(1))
        if moment is None:
            return None, line
        return moment, m.group(2)
    m = _EPOCH.match(line)
    if m:
        try:
            return datetime.fromtimestamp(int(m.group(1)), UTC), m.group(2)
        except (OverflowError, OSError, ValueError):
            return None, m.group(2)
    return None, line


def parse_line(line: str) -> LogRecord:
    """Parse one log line (without its newline). Never raises."""
    if len(line) > MAX_LINE:
        return LogRecord("oversize")
    at, text = _timestamp(line.rstrip("\r\n"))
    if text.startswith("Received PUBLISH from "):
        # The most frequent line at debug level: matched first.
        m = _RECEIVED_PUBLISH.match(text)
        if m:
            return LogRecord("publish", at, client_id=m.group(1), topic=m.group(6),
                             qos=int(m.group(3)), size=int(m.group(7)))
    if text.startswith(("Sending ", "Received ", "No will message")):
        # The rest of the debug-level packet trace: nothing to recognise in it.
        return LogRecord("other", at, detail=text[:200])
    m = _CONNECTED.match(text)
    if m:
        return LogRecord("connect", at, client_id=m.group(3), username=m.group(7),
                         source=f"{m.group(1)}:{m.group(2)}", protocol=int(m.group(4)),
                         detail=f"clean={m.group(5)} keepalive={m.group(6)}")
    m = _NEW_CONNECTION.match(text)
    if m:
        return LogRecord("connection", at, source=f"{m.group(1)}:{m.group(2)}",
                         detail=f"port {m.group(3)}")
    m = _DENIED_PUBLISH.match(text)
    if m:
        return LogRecord("publish-denied", at, client_id=m.group(1), topic=m.group(6),
                         qos=int(m.group(3)), size=int(m.group(7)),
                         detail=f"retain={m.group(4)} bytes={m.group(7)}")
    m = _TAKEOVER.match(text)
    if m:
        return LogRecord("takeover", at, client_id=m.group(1))
    m = _TLS_FAILED.match(text)
    if m:
        return LogRecord("tls-failure", at, source=m.group(1), detail=m.group(2))
    for pattern, reason in _DISCONNECTS:
        m = pattern.match(text)
        if m:
            return LogRecord("disconnect", at, client_id=m.group(1),
                             detail=reason if reason is not None else m.group(2))
    m = _DANGEROUS.match(text)
    if m:
        return LogRecord("acl-denied", at, client_id=m.group(2), detail=f"dangerous {m.group(1)}")
    m = _LIFECYCLE.match(text)
    if m:
        return LogRecord("lifecycle", at, detail=f"{m.group(2)} {m.group(1)}")
    if text == "Reloading config.":
        return LogRecord("reload", at)
    if text.startswith("Error") or text.startswith("OpenSSL Error"):
        return LogRecord("error", at, detail=text)
    if text.startswith("Warning"):
        return LogRecord("warning", at, detail=text)
    m = _SUBSCRIBE.match(text)
    if m:
        return LogRecord("subscribe", at, client_id=m.group(1), qos=int(m.group(2)),
                         topic=m.group(3))
    return LogRecord("other", at, detail=text[:200])
