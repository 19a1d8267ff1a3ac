"""``iotsec events``: the security event log: list, export, verify, checkpoint."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from iotsec import __version__
from iotsec.app.events import Event, iter_events, list_events
from iotsec.app.monitor.chain import checkpoint as sign_checkpoint
from iotsec.app.monitor.chain import verify as verify_chain
from iotsec.app.wire.access import EventOut
from iotsec.app.wire.monitor import ChainReportOut, CheckpointOut
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt, LimitOpt
from iotsec.cli.output import console, emit_json, err_console, plural, table, when
from iotsec.errors import InvalidInputError, IotsecError
from iotsec.eventlog.export import FORMATS, ExportedEvent, to_cef, to_jsonl, to_syslog
from iotsec.filesystem import atomic_stream
from iotsec.timeutil import parse_moment

__all__ = ["app", "checkpoint", "export", "list_", "verify"]

app = typer.Typer(help="Security events: the tamper-evident event log.", no_args_is_help=True)

KindOpt = Annotated[str | None, typer.Option("--kind", help="Only this kind, e.g. auth.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="Only this device's events.")]
SinceOpt = Annotated[str | None, typer.Option(
    "--since", help="Only events at or after: a duration back (2h, 7d) or an ISO 8601 time.")]
UntilOpt = Annotated[str | None, typer.Option(
    "--until", help="Only events at or before: a duration back or an ISO 8601 time.")]


class _NotVerified(IotsecError):
    code = "chain-broken"


@app.command("list")
def list_(kind: KindOpt = None, device: DeviceOpt = None, since: SinceOpt = None,
          until: UntilOpt = None, limit: LimitOpt = 100, as_json: JsonOpt = False) -> None:
    """Security events, newest first."""
    with runtime() as rt:
        now = rt.now()
        found = list_events(rt.engine, kind=kind, limit=limit, actor=device,
                            since=parse_moment(since, now) if since else None,
                            until=parse_moment(until, now) if until else None)
    if as_json:
        emit_json([EventOut.from_domain(e) for e in found])
        return
    table(plural(len(found), "event"),
          ["seq", "at", "kind", "outcome", "actor", "source", "subject"],
          [(e.seq, when(e.at), e.kind, e.outcome, e.actor, e.source, e.subject)
           for e in found])


def _exported(e: Event) -> ExportedEvent:
    return ExportedEvent(id=e.id, seq=e.seq, at=int(e.at.timestamp()), kind=e.kind,
                         outcome=e.outcome, actor=e.actor, source=e.source, subject=e.subject,
                         detail=dict(e.detail or {}), hash=e.hash)


@app.command("export")
def export(
    fmt: Annotated[str, typer.Option("--format", help="jsonl, cef or syslog (RFC 5424).")
                   ] = "jsonl",
    output: Annotated[str | None, typer.Option(
        "-o", "--output", help="Write to FILE (private, replaced whole) instead of stdout.")
                      ] = None,
    kind: KindOpt = None, device: DeviceOpt = None, since: SinceOpt = None,
    until: UntilOpt = None,
) -> None:
    """Every matching event, oldest first, one per line, for a SIEM."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown export format {fmt[:20]!r}",
                                hint="choose one of: " + ", ".join(FORMATS))
    host = socket.gethostname()

    def line(e: Event) -> str:
        x = _exported(e)
        if fmt == "cef":
            return to_cef(x, version=__version__)
        if fmt == "syslog":
            return to_syslog(x, hostname=host)
        return to_jsonl(x)

    with runtime() as rt:
        now = rt.now()
        events = iter_events(rt.engine, kind=kind, actor=device,
                             since=parse_moment(since, now) if since else None,
                             until=parse_moment(until, now) if until else None)

        def write(out: BinaryIO) -> int:
            count = 0
            for e in events:
                out.write(line(e).encode("utf-8") + b"\n")
                count += 1
            return count

        if output is None or output == "-":
            write(sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return
        with atomic_stream(Path(output), mode=0o600) as out:
            count = write(out)
    err_console.print(f"Exported {plural(count, 'event')} ({fmt}) to {output}", markup=False)


@app.command("verify")
def verify(as_json: JsonOpt = False) -> None:
    """Verify the event chain and its signed checkpoints; name the first bad entry.
    Exits 1 when anything was changed, deleted, inserted or reordered."""
    with runtime() as rt:
        report = verify_chain(rt)
    if as_json:
        emit_json(ChainReportOut.from_domain(report))
    else:
        covered = (f"signed checkpoints cover entries 1..{report.checkpointed_seq}"
                   if report.checkpointed_seq else "no signed checkpoint covers it yet")
        if report.ok:
            entries = plural(report.entries, "entry", "entries")
            console.print(f"The event chain is intact: {entries}, head "
                          f"{report.head_hash[:16]}…; {covered}.", markup=False)
        else:
            for fault in report.faults:
                where = ("under a signed checkpoint" if fault.covered
                         else "after the last checkpoint")
                err_console.print(f"- {fault.fault.value}: {fault.message} ({where})",
                                  markup=False, soft_wrap=True)
    if not report.ok:
        first = report.faults[0]
        raise _NotVerified(
            f"the event chain does not verify: {first.message}",
            hint="the store was changed outside iotsec; keep a copy of it for investigation "
            "and compare with your last backup or SIEM export")


@app.command("checkpoint")
def checkpoint(as_json: JsonOpt = False) -> None:
    """Sign the chain's current head with the audit key ('iotsec serve' does it every
    IOTSEC_EVENT_CHECKPOINT_SECONDS)."""
    with runtime() as rt:
        result = sign_checkpoint(rt)
    if as_json:
        emit_json(CheckpointOut(seq=result.seq, hash=result.hash, made=result.made))
    elif result.made:
        console.print(f"Signed a checkpoint at entry {result.seq} ({result.hash[:16]}…)",
                      markup=False)
    elif result.seq == 0:
        console.print("The event chain is empty: there is nothing to sign", markup=False)
    else:
        console.print(f"The checkpoint at entry {result.seq} already covers the chain",
                      markup=False)
