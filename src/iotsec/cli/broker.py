"""``iotsec broker mosquitto``: render a Mosquitto setup, sync a running broker, ingest its log."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from iotsec.app.broker import mosquitto as service
from iotsec.app.broker.emqx_render import EmqxRenderOptions
from iotsec.app.broker.emqx_render import render as render_emqx
from iotsec.app.broker.events import ingest_log
from iotsec.broker.mosquitto import Layout
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, emit_json, err_console, plural
from iotsec.errors import BrokerConfigError, InvalidInputError, NotFoundError

__all__ = [
    "BindOpt", "DnsOpt", "IpOpt", "PortOpt", "app", "emqx_app", "emqx_render", "ingest",
    "mosquitto_app", "render", "sync"
]

app = typer.Typer(help="Drive the MQTT broker that enforces iotsec's decisions.",
                  no_args_is_help=True)
mosquitto_app = typer.Typer(help="Mosquitto 2.0: mutual TLS, ACL from the policy, CRL, "
                            "live revocation.", no_args_is_help=True)
app.add_typer(mosquitto_app, name="mosquitto")

# The listener options 'mosquitto render' and 'emqx render' share.
PortOpt = Annotated[int, typer.Option("--port", min=1, max=65535,
                                      help="Mutual-TLS port for devices.")]
BindOpt = Annotated[str, typer.Option("--bind", help="Address to listen on.")]
DnsOpt = Annotated[list[str] | None, typer.Option(
    "--dns", help="DNS name devices use for the broker (repeatable).")]
IpOpt = Annotated[list[str] | None, typer.Option(
    "--ip", help="IP address devices use for the broker (repeatable).")]


def _show(result: service.SyncResult, as_json: bool, verb: str) -> None:
    if as_json:
        emit_json(asdict(result))
        return
    state = "reloaded and confirmed" if result.reloaded else "not reloaded (no running broker)"
    console.print(f"{verb} {result.directory} generation {result.generation}: {state}; "
                  f"ACL {plural(result.pattern_lines, 'pattern line')}, "
                  f"{plural(result.user_blocks, 'user block')}, "
                  f"{plural(result.blocked, 'device')} blocked; CRL #{result.crl_number} "
                  f"valid until {result.crl_next_update}", markup=False, soft_wrap=True)
    if result.kicked:
        console.print(f"ended live sessions: {', '.join(result.kicked)}", markup=False,
                      soft_wrap=True)
    for warning in result.warnings:
        err_console.print(f"warning: {warning}", markup=False, soft_wrap=True)


@mosquitto_app.command("render")
def render(
    output: Annotated[Path, typer.Option("-o", "--output", metavar="DIR",
                                         help="The broker directory to write.")],
    port: PortOpt = 8883,
    bind: BindOpt = "127.0.0.1",
    plain_localhost: Annotated[bool, typer.Option(
        "--plain-localhost", help="Also a plaintext listener on 127.0.0.1 (--plain-port).")
                               ] = False,
    plain_port: Annotated[int, typer.Option("--plain-port", min=1, max=65535)] = 1883,
    dns: DnsOpt = None,
    ip: IpOpt = None,
    broker_user: Annotated[str | None, typer.Option(
        "--broker-user", help="Account the broker runs as (default: mosquitto when root).")
                           ] = None,
    debug_log: Annotated[bool, typer.Option(
        "--debug-log/--no-debug-log",
        help="Log at debug level (needed for denied-publish events).")] = True,
    persistence: Annotated[bool, typer.Option("--persistence/--no-persistence")] = True,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run/--no-dry-run", help="Check the files with the real mosquitto first.")
                       ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Write mosquitto.conf, certificates, CA chain, CRL and ACL to DIR."""
    options = service.BrokerOptions(
        port=port, bind=bind, plain_localhost_port=plain_port if plain_localhost else None,
        dns=tuple(dns or ()), ips=tuple(ip or ()),
        broker_user=broker_user if broker_user is not None else service.default_broker_user(),
        debug_log=debug_log, persistence=persistence)
    with runtime() as rt:
        result = service.render(rt, output, options, dry_run=dry_run)
    _show(result, as_json, "rendered")
    if not as_json:
        err_console.print(f"start the broker with: mosquitto -c {Layout.parse(output).conf}",
                          markup=False, soft_wrap=True)


@mosquitto_app.command("sync")
def sync(
    directory: Annotated[Path, typer.Argument(metavar="DIR")],
    pid: Annotated[int | None, typer.Option("--pid", help="The broker's process id.")] = None,
    pidfile: Annotated[Path | None, typer.Option(
        "--pidfile", help="File holding it (default: DIR/run/mosquitto.pid).")] = None,
    if_needed: Annotated[bool, typer.Option(
        "--if-needed", help="Do nothing unless the ACL or CRL would change.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run/--no-dry-run")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Re-render DIR from the store and make the running broker apply it (fail-closed)."""
    if pid is not None and pidfile is not None:
        raise InvalidInputError("give --pid or --pidfile, not both")
    with runtime() as rt:
        if if_needed and not service.sync_needed(rt, directory):
            if as_json:
                emit_json({"directory": str(directory), "changed": False})
            else:
                console.print("nothing to do", markup=False)
            return
        result = service.sync(rt, directory, pid=pid, pidfile=pidfile, dry_run=dry_run)
    _show(result, as_json, "synced")


@mosquitto_app.command("ingest-log")
def ingest(
    directory: Annotated[Path | None, typer.Argument(
        metavar="[DIR|FILE]", help="A rendered broker directory (reads DIR/run/mosquitto.log), "
        "or a Mosquitto log file.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Another Mosquitto log.")] = None,
    state: Annotated[Path | None, typer.Option(
        "--state", help="Where to keep the read position (default: in DIR/private).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Turn new broker log lines into security events ('iotsec events list')."""
    if (directory is None) == (file is None):
        raise InvalidInputError("give a broker DIR or --file FILE")
    if directory is not None and not directory.exists():
        raise NotFoundError(f"{directory} does not exist",
                            hint="give a rendered broker directory or a Mosquitto log file")
    if directory is not None and not directory.is_dir():
        file, directory = directory, _layout_of_log(directory)
    if directory is not None:
        if not directory.is_dir():
            raise BrokerConfigError(
                f"{directory} is not a rendered broker directory",
                hint="give the directory 'iotsec broker mosquitto render -o DIR' wrote, "
                "or a log file with --file FILE")
        layout = Layout.parse(directory)
        log_file, state = file or layout.log_file, state or layout.private / "ingest.json"
    else:
        assert file is not None
        log_file = file
    with runtime() as rt:
        result = ingest_log(rt, log_file, state_file=state)
    if as_json:
        data: dict[str, Any] = asdict(result)
        emit_json(data)
        return
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(result.by_kind.items())) or "none"
    console.print(f"{plural(result.lines, 'line')}, {plural(result.events, 'event')} ({kinds})",
                  markup=False)


def _layout_of_log(log: Path) -> Path | None:
    """The rendered broker directory whose log ``log`` is (``DIR/run/mosquitto.log``), so
    its read position is kept there too; ``None`` for a log file anywhere else."""
    root = log.absolute().parent.parent
    try:
        layout = Layout.parse(root)
    except InvalidInputError:
        return None
    return root if layout.log_file == log.absolute() and layout.private.is_dir() else None


emqx_app = typer.Typer(help="EMQX 5 (clusters): mutual TLS, HTTP authentication and "
                       "authorization answered by iotsec.", no_args_is_help=True)
app.add_typer(emqx_app, name="emqx")


@emqx_app.command("render")
def emqx_render(
    output: Annotated[Path, typer.Option("-o", "--output", metavar="DIR",
                                         help="Directory to write the snippet and certs to.")],
    api_url: Annotated[str, typer.Option(
        "--api-url", help="URL of 'iotsec serve' as the EMQX nodes reach it.")
                       ] = "https://127.0.0.1:8443",
    port: PortOpt = 8883,
    bind: BindOpt = "127.0.0.1",
    dns: DnsOpt = None,
    ip: IpOpt = None,
    certs_path: Annotated[Path | None, typer.Option(
        "--certs-path", help="Where DIR/certs will be on the EMQX nodes.")] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", help="A 0600 file holding a token of scope broker.")] = None,
    issue: Annotated[bool, typer.Option(
        "--issue-token", help="Issue a new broker-scope token (valid one year).")] = False,
    broker_user: Annotated[str | None, typer.Option(
        "--broker-user", help="Account EMQX runs as (files get its group, when root).")
                           ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the EMQX snippet (TLS listener, HTTP authn/authz, no_match = deny) and certs."""
    options = EmqxRenderOptions(api_url=api_url, port=port, bind=bind, dns=tuple(dns or ()),
                                ips=tuple(ip or ()), certs_path=certs_path,
                                broker_user=broker_user, token_file=token_file,
                                issue_token=issue)
    with runtime() as rt:
        result = render_emqx(rt, output, options)
    if as_json:
        emit_json(asdict(result))
        return
    console.print(f"rendered {result.snippet}" + (" (new server certificate)" if
                                                   result.server_certificate_issued else ""),
                  markup=False, soft_wrap=True)
    for path in result.files[1:]:
        console.print(f"  {path}", markup=False, soft_wrap=True)
    if result.token_issued:
        console.print(f"issued broker token {result.token_issued} (in the snippet only)",
                      markup=False)
    for warning in result.warnings:
        err_console.print(f"warning: {warning}", markup=False, soft_wrap=True)
    err_console.print(f'add to emqx.conf on every node: include "{result.snippet}"',
                      markup=False, soft_wrap=True)
