"""``iotsec alerts``: list, show, acknowledge and resolve alerts; run the scheduled checks
and the deliveries once."""

from __future__ import annotations

from typing import Annotated

import typer

from iotsec.app.monitor.alerts import get_alert, list_alerts, set_state
from iotsec.app.monitor.checks import run_checks
from iotsec.app.monitor.delivery import deliver_due
from iotsec.app.wire.monitor import AlertOut, CheckResultOut
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt, LimitOpt
from iotsec.cli.output import console, emit_json, plural, table, when
from iotsec.eventlog.alerts import AlertState

__all__ = ["ack", "app", "check", "deliver", "list_", "resolve", "show"]

app = typer.Typer(help="Alerts: detections and scheduled checks, and their delivery.",
                  no_args_is_help=True)
IdArg = Annotated[int, typer.Argument(min=1, help="The alert's id.")]


@app.command("list")
def list_(state: Annotated[str | None, typer.Option(
              "--state", help="open, acknowledged or resolved.")] = None,
          limit: LimitOpt = 100, as_json: JsonOpt = False) -> None:
    """Alerts, the most recently updated first."""
    wanted = AlertState.parse(state) if state else None
    with runtime() as rt:
        found = list_alerts(rt, state=wanted, limit=limit)
    if as_json:
        emit_json([AlertOut.from_domain(a) for a in found])
        return
    table(plural(len(found), "alert"),
          ["id", "severity", "state", "rule", "subject", "count", "updated", "summary"],
          [(a.id, a.severity.value, a.state.value, a.rule, a.subject, a.count,
            when(a.updated_at), a.summary) for a in found], ids=["rule", "subject"])


@app.command("show")
def show(alert_id: IdArg, as_json: JsonOpt = False) -> None:
    """One alert with its evidence and suggested response."""
    with runtime() as rt:
        alert = get_alert(rt, alert_id)
    out = AlertOut.from_domain(alert)
    if as_json:
        emit_json(out)
        return
    for key, value in out.model_dump(mode="json").items():
        console.print(f"{key}: {value}", markup=False, soft_wrap=True)


def _change(alert_id: int, target: AlertState, as_json: bool) -> None:
    with runtime() as rt:
        alert = set_state(rt, alert_id, target, actor="cli")
    if as_json:
        emit_json(AlertOut.from_domain(alert))
    else:
        console.print(f"Alert {alert.id} is {alert.state.value}", markup=False)


@app.command("ack")
def ack(alert_id: IdArg, as_json: JsonOpt = False) -> None:
    """Acknowledge an alert: someone is on it."""
    _change(alert_id, AlertState.ACKNOWLEDGED, as_json)


@app.command("resolve")
def resolve(alert_id: IdArg, as_json: JsonOpt = False) -> None:
    """Resolve an alert: it is over (final)."""
    _change(alert_id, AlertState.RESOLVED, as_json)


@app.command("check")
def check(as_json: JsonOpt = False) -> None:
    """Run the scheduled checks once ('iotsec serve' runs them every
    IOTSEC_ALERT_TICK_SECONDS) and deliver what is due."""
    with runtime() as rt:
        result = run_checks(rt)
        deliver_due(rt)
    if as_json:
        emit_json(CheckResultOut(raised=result.raised, repeated=result.repeated,
                                 resolved=result.resolved))
        return
    console.print(f"{plural(len(result.raised), 'new alert')}, "
                  f"{len(result.repeated)} still open, {len(result.resolved)} resolved",
                  markup=False)


@app.command("deliver")
def deliver(as_json: JsonOpt = False) -> None:
    """Send the alert deliveries that are due now."""
    with runtime() as rt:
        result = deliver_due(rt)
    if as_json:
        emit_json({"delivered": result.delivered, "failed": result.failed,
                   "dead": result.dead})
        return
    console.print(f"{result.delivered} delivered, {result.failed} to retry, "
                  f"{result.dead} given up", markup=False)
