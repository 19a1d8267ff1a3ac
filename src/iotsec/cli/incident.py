"""``iotsec incident``: incident response: quarantine and release devices, the incidents,
and a device's timeline."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer

from iotsec import __version__
from iotsec.app.monitor.incident_records import get_incident, list_incidents
from iotsec.app.monitor.incidents import MAX_TIMELINE, timeline
from iotsec.app.monitor.quarantine import quarantine_devices, release_devices
from iotsec.app.monitor.selection import Selector
from iotsec.app.wire.incidents import IncidentOut, QuarantineOut, ReleaseOut
from iotsec.app.wire.monitor import TimelineEntryOut
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt, LimitOpt
from iotsec.cli.output import console, emit_json, err_console, plural, table, when, write_output
from iotsec.eventlog.timeline import timeline_html
from iotsec.timeutil import from_ts, parse_moment

__all__ = ["app", "list_", "quarantine", "release", "show", "show_timeline"]

app = typer.Typer(help="Incident response: quarantine and release devices, incidents, and a "
                  "device's timeline.", no_args_is_help=True)
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept with the incident).")]
BrokerDirOpt = Annotated[Path | None, typer.Option(
    "--broker-dir", help="The Mosquitto directory to sync (default: IOTSEC_BROKER_DIR).")]


def _actor() -> str:
    """The operator at this terminal, as the events name them."""
    try:
        return f"cli:{getpass.getuser()}"[:160]
    except (KeyError, OSError):
        return "cli"


@app.command("quarantine")
def quarantine(
    devices: Annotated[list[str] | None, typer.Argument(
        metavar="[DEVICE]...", help="The devices' ids.")] = None,
    group: Annotated[str | None, typer.Option("--group", help="Every device of a group.")
                     ] = None,
    query: Annotated[list[str] | None, typer.Option(
        "--query", help="field=value (group, state, id with a trailing *, attr.NAME); "
        "repeat to narrow.")] = None,
    revoke: Annotated[bool, typer.Option(
        "--revoke", help="Also revoke their certificates (keyCompromise).")] = False,
    reason: ReasonOpt = "",
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show what would be quarantined; change nothing.")] = False,
    confirm_count: Annotated[int | None, typer.Option(
        "--confirm-count", min=0, help="The exact number of devices, required above "
        "IOTSEC_QUARANTINE_MAX_DEVICES.")] = None,
    broker_dir: BrokerDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Quarantine devices: only their remediation topic (quarantine/<id>/#) stays
    reachable, their live sessions are dropped, one incident and one alert are opened."""
    selector = Selector.parse(devices or [], group, query or [])
    with runtime() as rt:
        result = quarantine_devices(rt, selector, revoke=revoke, reason=reason,
                                    actor=_actor(), dry_run=dry_run,
                                    confirm_count=confirm_count, broker_dir=broker_dir)
    if as_json:
        emit_json(QuarantineOut.from_domain(result))
        return
    verb = "Would quarantine" if result.dry_run else "Quarantined"
    table(f"{verb} {plural(len(result.quarantined), 'device')}"
          + (f" (incident {result.incident})" if result.incident else ""),
          ["device", "outcome"],
          [(d, "would be quarantined" if result.dry_run else "quarantined")
           for d in result.quarantined] + [(d, f"left alone: {why}")
                                           for d, why in result.skipped], ids=["device"])
    if result.revoked:
        console.print(f"Revoked {plural(len(result.revoked), 'certificate')}.", markup=False)
    if result.kicked:
        console.print("Dropped the live sessions of " + ", ".join(result.kicked),
                      markup=False, soft_wrap=True)


@app.command("release")
def release(
    devices: Annotated[list[str] | None, typer.Argument(
        metavar="[DEVICE]...", help="The devices' ids.")] = None,
    incident: Annotated[str | None, typer.Option(
        "--incident", help="Every device this incident holds.")] = None,
    reason: ReasonOpt = "",
    broker_dir: BrokerDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Return quarantined devices to the state each had before."""
    with runtime() as rt:
        result = release_devices(rt, devices or [], incident=incident, actor=_actor(),
                                 reason=reason, broker_dir=broker_dir)
    if as_json:
        emit_json(ReleaseOut.from_domain(result))
        return
    table(f"Released {plural(len(result.released), 'device')}", ["device", "state"],
          list(result.released), ids=["device"])
    for closed in result.closed_incidents:
        console.print(f"Incident {closed} is closed.", markup=False)


@app.command("list")
def list_(state: Annotated[str | None, typer.Option("--state", help="open or closed.")
                           ] = None,
          limit: LimitOpt = 100, as_json: JsonOpt = False) -> None:
    """Incidents, the most recently opened first."""
    with runtime() as rt:
        found = list_incidents(rt, state=state, limit=limit)
    if as_json:
        emit_json([IncidentOut.from_domain(i) for i in found])
        return
    table(plural(len(found), "incident"),
          ["id", "state", "opened", "actor", "devices", "revoked", "reason"],
          [(i.id, i.state, when(i.opened_at), i.actor, i.devices, i.revoked, i.reason)
           for i in found], ids=["id", "actor"])


@app.command("show")
def show(incident_id: Annotated[str, typer.Argument(metavar="INCIDENT",
                                                    help="The incident's id.")],
         as_json: JsonOpt = False) -> None:
    """One incident, with the devices it still holds."""
    with runtime() as rt:
        found = get_incident(rt, incident_id)
    out = IncidentOut.from_domain(found)
    if as_json:
        emit_json(out)
        return
    for key, value in out.model_dump(mode="json").items():
        console.print(f"{key}: {value}", markup=False, soft_wrap=True)


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
