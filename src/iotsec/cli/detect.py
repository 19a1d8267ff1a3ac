"""``iotsec detect``: the detection rules (validate, apply, show), the detector's status,
and the detector run on its own (``iotsec serve`` runs it in the background)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from iotsec.app.detect.loop import Leader, detector_loop, log_file_of
from iotsec.app.detect.rules import apply_rules, current_rules, validate_rules
from iotsec.app.detect.status import detect_status
from iotsec.app.wire.detect import (
    DetectAuditActionOut,
    DetectRuleOut,
    DetectRulesOut,
    DetectStatusOut,
)
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, emit_json, plural, read_input, table, when
from iotsec.detect.rules import MAX_RULES_BYTES
from iotsec.errors import InvalidInputError

__all__ = ["app", "apply", "rules_app", "run", "show", "status", "validate"]

app = typer.Typer(help="Continuous detection: rules as code, status, the detector.",
                  no_args_is_help=True)
rules_app = typer.Typer(help="Detection rules as policy-as-code (YAML).",
                        no_args_is_help=True)
app.add_typer(rules_app, name="rules")
#: The kinds that count within a window (the others fire on one event or on silence).
_WINDOWED = frozenset({"authn-failures", "authz-denials", "message-rate", "disconnect-storm",
                       "client-id-conflict"})
FileArg = Annotated[str, typer.Argument(metavar="FILE", help="YAML rule file ('-' = stdin).")]


def _rules_table(out: DetectRulesOut) -> None:
    table(plural(len(out.rules), "rule"),
          ["name", "kind", "per", "window", "threshold", "severity", "action", "enabled"],
          [(r.name, r.kind, r.per, r.window if r.kind in _WINDOWED else "-",
            r.threshold if r.threshold is not None else
            (f"baseline x{r.baseline['deviations']:g} floor {r.baseline['floor']:g}"
             if r.baseline else "-"),
            r.severity, r.action + (" (dry run)" if r.dry_run else ""),
            "yes" if r.enabled else "no") for r in out.rules], ids=["name"])


@rules_app.command("validate")
def validate(path: FileArg, as_json: JsonOpt = False) -> None:
    """Check a rule file (errors name the line); nothing is applied."""
    rules = validate_rules(read_input(path, MAX_RULES_BYTES, "rule file"))
    if as_json:
        emit_json({"valid": True, "rules": [DetectRuleOut.from_domain(r) for r in rules.rules],
                   "audit": [DetectAuditActionOut.from_domain(b) for b in rules.audit],
                   "max_automatic_actions": rules.max_automatic_actions})
        return
    bound = f", {plural(len(rules.audit), 'audit finding')} bound" if rules.audit else ""
    console.print(f"{path}: valid, {plural(len(rules.rules), 'rule')}{bound}", markup=False)


@rules_app.command("apply")
def apply(path: FileArg, as_json: JsonOpt = False) -> None:
    """Make FILE the rules in force for every serving process (validated first)."""
    data = read_input(path, MAX_RULES_BYTES, "rule file")
    with runtime() as rt:
        applied = apply_rules(rt, data, actor="cli")
    out = DetectRulesOut.from_domain(applied)
    if as_json:
        emit_json(out)
        return
    console.print(f"Applied detection rules version {out.version}: "
                  f"{plural(len(out.rules), 'rule')}", markup=False)


@rules_app.command("show")
def show(as_json: JsonOpt = False, document: Annotated[bool, typer.Option(
        "--document", help="Print the YAML document in force (to edit and apply).")] = False
         ) -> None:
    """The rules in force (the built-in set until a file is applied)."""
    with runtime() as rt:
        out = DetectRulesOut.from_domain(current_rules(rt))
    if as_json:
        emit_json(out)
    elif document:
        typer.echo(out.document, nl=False)
    else:
        source = f"version {out.version}, applied {when(out.applied_at)}" \
            if out.version is not None else "built-in rules (none applied)"
        console.print(f"{source}; at most {out.max_automatic_actions} automatic actions "
                      "per hour", markup=False)
        _rules_table(out)
        for bound in out.audit:
            console.print(f"audit finding {bound.finding}: {bound.action}"
                          + (" (dry run)" if bound.dry_run else ""), markup=False)


@app.command("status")
def status(as_json: JsonOpt = False) -> None:
    """Who runs detection (the lease holder), lag, lines/s and the last line read."""
    with runtime() as rt:
        out = DetectStatusOut.from_domain(detect_status(rt))
    if as_json:
        emit_json(out)
        return
    if out.holder is None:
        console.print("No process has run detection yet ('iotsec serve' runs it)",
                      markup=False)
    else:
        state = "live" if out.live else "expired"
        console.print(f"Lease holder: {out.holder} ({state}, token {out.token}, renewed "
                      f"{when(out.renewed_at)})", markup=False, soft_wrap=True)
    console.print(f"Rules: {out.rules} enabled ("
                  + (f"version {out.rules_version}" if out.rules_version else "built-in")
                  + ")", markup=False)
    table(plural(len(out.sources), "source"),
          ["source", "lines", "lines/s", "lag", "last line", "position"],
          [(x.source, x.lines, x.lines_per_second, x.lag, when(x.last_line_at), x.position)
           for x in out.sources], ids=["source"])


@app.command("run")
def run(once: Annotated[bool, typer.Option(
            "--once", help="Read what is there now, then stop (and release the lease).")]
        = False,
        log: Annotated[Path | None, typer.Option(
            "--log", metavar="FILE",
            help="The Mosquitto log to follow (default: IOTSEC_BROKER_DIR/run/mosquitto.log)."
        )] = None,
        as_json: JsonOpt = False) -> None:
    """Run the detector in the foreground: with several, the lease holder works and the
    others stand by. 'iotsec serve' runs it in the background already."""
    with runtime() as rt:
        if rt.settings.detect_tick_seconds <= 0:
            raise InvalidInputError("detection is turned off (IOTSEC_DETECT_TICK_SECONDS=0)",
                                    hint="unset IOTSEC_DETECT_TICK_SECONDS or give it a value "
                                    "above 0")
        log_file = log.expanduser().absolute() if log else log_file_of(rt.settings.broker_dir)
        if once:
            leader = Leader(rt, log_file=log_file, checks=False)
            try:
                busy = leader.once()
                if not leader.holding:
                    raise InvalidInputError(
                        "another process holds the detector lease",
                        hint="see 'iotsec detect status'; that process runs detection")
                while busy:
                    busy = leader.once()
            finally:
                leader.stop()
            if as_json:
                emit_json({"lines": leader.lines, "alerts": leader.alerts})
            else:
                console.print(f"Read {plural(leader.lines, 'log line')}, raised "
                              f"{plural(len(leader.alerts), 'new alert')}", markup=False)
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        console.print(f"Detector running (log: {log_file or 'none'}); Ctrl-C stops it",
                      markup=False, soft_wrap=True)
        detector_loop(rt, stop, log_file=log_file)
