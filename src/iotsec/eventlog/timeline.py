"""A device's incident timeline as data and as a one-file HTML report: its events (what it
did, what was done to it and to its certificates) and its alerts, in time order."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from iotsec.findings.html import escape, html_document, html_sections

__all__ = ["TimelineEntry", "timeline_html"]


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: int  # Unix seconds
    source: str  # event | alert
    kind: str  # the event kind, or alert.<rule>
    outcome: str  # the event outcome, or the alert severity
    actor: str | None
    subject: str | None
    summary: str
    detail: dict[str, Any]
    seq: int | None  # the event's position in the chain
    id: int | None  # the event's or the alert's id


def _when(at: int) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def timeline_html(device_id: str, entries: Sequence[TimelineEntry], *, version: str,
                  generated: datetime, since: datetime | None, until: datetime | None) -> str:
    """The timeline as a self-contained HTML page (no script, no outside resource); every
    field is escaped."""
    window = " to ".join(x.strftime("%Y-%m-%d %H:%M:%SZ") if x else "…"
                         for x in (since, until)) if since or until else "all recorded"
    rows = "".join(
        f"<tr><td class=\"mono\">{escape(_when(e.at))}</td><td>{escape(e.source)}</td>"
        f"<td class=\"mono\">{escape(e.kind)}</td><td>{escape(e.outcome)}</td>"
        f"<td class=\"mono\">{escape(e.actor)}</td><td class=\"mono\">{escape(e.subject)}</td>"
        f"<td>{escape(e.summary)}<details><summary>detail</summary><pre class=\"mono\">"
        f"{escape(json.dumps(e.detail, indent=1, sort_keys=True, default=str))}</pre>"
        f"</details></td><td class=\"mono\">{escape(e.seq)}</td></tr>"
        for e in entries)
    table = ("<table><thead><tr><th>at (UTC)</th><th>source</th><th>kind</th>"
             "<th>outcome</th><th>actor</th><th>subject</th><th>what</th><th>chain</th>"
             f"</tr></thead><tbody>{rows}</tbody></table>") if entries else (
        "<p class=\"muted\">Nothing was recorded about this device in this window.</p>")
    events = sum(1 for e in entries if e.source == "event")
    summary = (f"<p>{len(entries)} entries: {events} events, {len(entries) - events} alerts."
               " Events carry their position in the tamper-evident chain; run 'iotsec events"
               " verify' to check it.</p>")
    return html_document(
        title=f"Incident timeline: {device_id}",
        subtitle=f"{window}; generated {generated.strftime('%Y-%m-%d %H:%M:%SZ')}",
        body=html_sections([("Summary", summary), ("Timeline", table)]), version=version,
        css=_CSS)


_CSS = (
    "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330}header{background:#1d2330;"
    "color:#fff;padding:16px 24px}header h1{margin:0;font-size:20px}main{padding:16px 24px}"
    "table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #dde;"
    "padding:4px 6px;text-align:left;vertical-align:top}.mono{font-family:ui-monospace,"
    "monospace;font-size:12px;word-break:break-all}.muted{color:#667}pre{white-space:"
    "pre-wrap;margin:4px 0}footer{color:#667;text-align:center;padding:16px}")
