"""Security events in the formats a SIEM takes: JSON lines, ArcSight CEF and RFC 5424
syslog. Each function turns one event into one line (no newline); every field an attacker
may have chosen (a device id, a request path, a detail) is escaped as its format
requires, so that no field can forge another field or another line."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["FORMATS", "ExportedEvent", "severity", "to_cef", "to_jsonl", "to_syslog"]

FORMATS: Final = ("jsonl", "cef", "syslog")


@dataclass(frozen=True, slots=True)
class ExportedEvent:
    id: int | None
    seq: int | None
    at: int  # Unix seconds
    kind: str
    outcome: str
    actor: str | None
    source: str | None
    subject: str | None
    detail: dict[str, Any]
    hash: str | None


#: CEF and syslog severities by outcome: refusals and failures matter more than successes.
_CEF_SEVERITY: Final = {"denied": 6, "failure": 5, "refused": 5, "error": 7}
_SYSLOG_SEVERITY: Final = {"denied": 4, "failure": 4, "refused": 5, "error": 3}  # warning...


def severity(event: ExportedEvent) -> int:
    """The CEF severity (0-10) of ``event``: 8 for alerts and quarantines, higher for failed
    and refused operations than for successful ones."""
    if event.kind.startswith(("alert.", "incident.")):
        return 8
    return _CEF_SEVERITY.get(event.outcome, 3)


def _iso(at: int) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_jsonl(event: ExportedEvent) -> str:
    return json.dumps({"id": event.id, "seq": event.seq, "at": _iso(event.at),
                       "kind": event.kind, "outcome": event.outcome, "actor": event.actor,
                       "source": event.source, "subject": event.subject,
                       "detail": event.detail, "hash": event.hash},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))


_NEWLINES = re.compile(r"\r\n|\r|\n")


def _cef_header(text: str) -> str:
    # CEF: in the header, backslash and pipe are escaped; no newlines at all.
    return _NEWLINES.sub(" ", text.replace("\\", "\\\\").replace("|", "\\|"))


def _cef_value(text: str) -> str:
    # CEF: in extension values, backslash and equals are escaped, newlines written as \n.
    escaped = text.replace("\\", "\\\\").replace("=", "\\=")
    return _NEWLINES.sub("\\\\n", escaped)


def to_cef(event: ExportedEvent, *, version: str) -> str:
    """``CEF:0|iotsec|iotsec|VERSION|KIND|KIND OUTCOME|SEVERITY|extensions``."""
    ext: list[tuple[str, str | None]] = [
        ("rt", str(event.at * 1000)), ("outcome", event.outcome),
        ("suser", event.actor), ("src" if _is_ip(event.source) else "shost", event.source),
        ("duser" if event.subject and not event.subject.startswith("/") else "request",
         event.subject),
        ("externalId", None if event.id is None else str(event.id)),
        ("cs1Label", "detail"),
        ("cs1", json.dumps(event.detail, sort_keys=True, ensure_ascii=False)),
        ("cs2Label", "chainHash"), ("cs2", event.hash),
        ("cn1Label", "chainSeq"), ("cn1", None if event.seq is None else str(event.seq)),
    ]
    extensions = " ".join(f"{k}={_cef_value(v)}" for k, v in ext if v is not None)
    return "|".join(("CEF:0", "iotsec", "iotsec", _cef_header(version),
                     _cef_header(event.kind), _cef_header(f"{event.kind} {event.outcome}"),
                     str(severity(event)), extensions))


_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def _is_ip(text: str | None) -> bool:
    return bool(text) and (bool(_IPV4.match(text or "")) or ":" in (text or ""))


def _sd_value(text: str) -> str:
    # RFC 5424 6.3.3: '"', '\' and ']' are escaped inside PARAM-VALUE. A line break would
    # end the message on a line-based transport: it is written as backslash-n (a literal
    # backslash is doubled, so the two never read alike).
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
    return _NEWLINES.sub("\\\\n", escaped)


def _header_token(text: str, limit: int) -> str:
    # HOSTNAME, APP-NAME and MSGID are PRINTUSASCII without spaces; "-" when empty.
    cleaned = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def to_syslog(event: ExportedEvent, *, hostname: str, facility: int = 13,
              procid: str = "-") -> str:
    """An RFC 5424 message: ``<PRI>1 TIMESTAMP HOSTNAME iotsec PROCID KIND [iotsec@32473
    ...] MSG``. Facility 13 is "log audit". The structured data carries every field; the
    message is a short human line."""
    severity_code = _SYSLOG_SEVERITY.get(event.outcome, 6)
    if event.kind.startswith(("alert.", "incident.")):
        severity_code = 2
    pri = facility * 8 + severity_code
    params = [("id", None if event.id is None else str(event.id)),
              ("seq", None if event.seq is None else str(event.seq)),
              ("outcome", event.outcome), ("actor", event.actor), ("source", event.source),
              ("subject", event.subject),
              ("detail", json.dumps(event.detail, sort_keys=True, ensure_ascii=False)),
              ("hash", event.hash)]
    # 32473 is the private enterprise number RFC 5612 reserves for documentation.
    sd = "[iotsec@32473 " + " ".join(
        f'{k}="{_sd_value(v)}"' for k, v in params if v is not None) + "]"
    message = _NEWLINES.sub(" ", f"{event.kind} {event.outcome}"
                            + (f" actor={event.actor}" if event.actor else "")
                            + (f" subject={event.subject}" if event.subject else ""))
    return (f"<{pri}>1 {_iso(event.at)} {_header_token(hostname, 255)} iotsec "
            f"{_header_token(procid, 128)} {_header_token(event.kind, 32)} {sd} {message}")
