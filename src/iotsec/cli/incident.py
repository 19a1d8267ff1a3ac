"""``iotsec incident``: incident response on a device (its timeline)."""

from __future__ import annotations

from typing import Annotated

import typer

from iotsec import __version__
from iotsec.app.monitor.incidents import MAX_TIMELINE, timeline
from iotsec.app.wire.monitor import TimelineEntryOut
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import emit_json, err_console, plural, table, when, write_output
from iotsec.eventlog.timeline import timeline_html
from iotsec.timeutil import from_ts, parse_moment

__all__ = ["app", "show_timeline"]

app = typer.Typer(help="Incident response: a device's timeline.", no_args_is_help=True)


@app.command("timeline")
def show_timeline(
    device_id: Annotated[str, typer.Argument(metavar="DEVICE", help="The device's id.")],
    since: Annotated[str | None, typer.Option(
        "--since", help="From: a duration back (2h, 7d) or an ISO 8601 time.")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="Until: a duration back or an ISO 8601 time.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_TIMELINE,
                                       help="At most this many (the newest).")] = 10_000,
    html: Annotated[str | None, typer.Option(
        "--html", metavar="FILE", help="Also write a one-file HTML report.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The device's events (what it did, what was done to it and to its certificates) and
    its alerts, oldest first."""
    with runtime() as rt:
        now = rt.now()
        start = parse_moment(since, now) if since else None
        end = parse_moment(until, now) if until else None
        found = timeline(rt, device_id, since=start, until=end, limit=limit)
    if html is not None:
        write_output(html, timeline_html(device_id, found, version=__version__, generated=now,
                                         since=start, until=end).encode("utf-8"))
        err_console.print(f"Wrote the timeline of {device_id} to {html}", markup=False)
    if as_json:
        emit_json([TimelineEntryOut.from_domain(e) for e in found])
        return
    table(f"{plural(len(found), 'entry', 'entries')} for {device_id}",
          ["at", "source", "kind", "outcome", "actor", "subject", "seq"],
          [(when(from_ts(e.at)), e.source, e.kind, e.outcome, e.actor, e.subject, e.seq)
           for e in found])
