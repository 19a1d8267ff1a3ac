"""Entry point: the Typer app and the one place where errors become exit codes."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from iotsec import __version__
from iotsec.cli import (
    access,
    backup,
    broker,
    ca,
    certs,
    crl,
    device_tokens,
    devices,
    enrol,
    firmware,
    keys,
    netseg,
    ocsp,
    ota,
    policy,
    protect,
    serve,
    setup,
    tokens,
)
from iotsec.cli import scan as scan_cmd
from iotsec.cli.audit import audit as audit_cmd
from iotsec.cli.device_agent import device_agent
from iotsec.cli.output import err_console, print_error
from iotsec.errors import IotsecError
from iotsec.filesystem import os_error

__all__ = ["app", "main"]

app = typer.Typer(
    name="iotsec",
    help="iotsec: device identity, PKI and security control plane for IoT fleets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# One line per command group.
for group, name in (
    (ca.app, "ca"), (devices.app, "device"), (certs.app, "cert"),
    (access.role_app, "role"), (access.group_app, "group"), (access.authz_app, "authz"),
    (policy.app, "policy"), (tokens.token_app, "token"), (tokens.events_app, "events"),
    (device_tokens.app, "device-token"), (firmware.app, "firmware"), (ota.app, "ota"),
    (protect.payload_app, "payload"), (protect.data_app, "data"), (netseg.app, "netseg"),
    (keys.app, "keys"), (broker.app, "broker"), (backup.app, "backup"), (enrol.app, "enrol"),
    (ocsp.app, "ocsp"),
):
    app.add_typer(group, name=name)
app.add_typer(__import__("iotsec.cli.compliance").cli.compliance.app, name="compliance")
for command, name in ((setup.init, "init"), (crl.crl, "crl"), (scan_cmd.scan, "scan"),
                      (audit_cmd, "audit"), (serve.serve, "serve"),
                      (backup.migrate, "migrate"), (device_agent, "device-agent")):
    app.command(name)(command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"iotsec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Set IOTSEC_HOME to choose the home (default ./.iotsec)."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; refused operations exit 1 with one line on stderr, usage errors 2."""
    try:
        # Standalone mode: Typer reports usage errors itself (exit 2) and raises SystemExit.
        app(args=argv, prog_name="iotsec")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except IotsecError as exc:
        print_error(exc)
        return 1
    except OSError as exc:
        # A full disk, a read-only file system, a file where a directory is needed: the
        # system refused, which is no bug of iotsec's. Translated here once for every command.
        print_error(os_error(exc))
        return 1
    except KeyboardInterrupt:
        err_console.print("iotsec: interrupted", markup=False)
        return 130
    except Exception as exc:
        if os.environ.get("IOTSEC_DEBUG"):
            raise
        err_console.print(f"iotsec: internal error: {type(exc).__name__}: {exc} "
                          "(this is a bug; run again with IOTSEC_DEBUG=1 for details)",
                          markup=False, soft_wrap=True)
        return 1
    return 0


