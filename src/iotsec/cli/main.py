"""Entry point: the Typer app and the one place where errors become exit codes.

Command groups are loaded when they are called: ``iotsec --version`` imports none of them,
and ``iotsec device show`` only the device commands and what they use, so every command
starts without paying for the others (the store, the broker, the scanner...). The table
below is the one place that names them.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Annotated, Final

import typer
import typer.main
from typer.core import TyperGroup
from typer.models import CommandInfo, TyperInfo

from iotsec import __version__
from iotsec.errors import IotsecError

if TYPE_CHECKING:
    # The click that Typer carries (and builds every command with).
    from typer._click.core import Command, Context

__all__ = ["COMMANDS", "app", "main"]

#: Every command of ``iotsec``, in the order ``--help`` lists them: its name, and the module
#: attribute that holds it (a Typer app for a command group, a function for a command).
COMMANDS: Final[tuple[tuple[str, str], ...]] = (
    ("ca", "iotsec.cli.ca:app"),
    ("device", "iotsec.cli.devices:app"),
    ("cert", "iotsec.cli.certs:app"),
    ("role", "iotsec.cli.access:role_app"),
    ("group", "iotsec.cli.access:group_app"),
    ("authz", "iotsec.cli.access:authz_app"),
    ("policy", "iotsec.cli.policy:app"),
    ("token", "iotsec.cli.tokens:token_app"),
    ("events", "iotsec.cli.events:app"),
    ("alerts", "iotsec.cli.alerts:app"),
    ("detect", "iotsec.cli.detect:app"),
    ("incident", "iotsec.cli.incident:app"),
    ("device-token", "iotsec.cli.device_tokens:app"),
    ("firmware", "iotsec.cli.firmware:app"),
    ("ota", "iotsec.cli.ota:app"),
    ("payload", "iotsec.cli.protect:payload_app"),
    ("data", "iotsec.cli.data:data_app"),
    ("netseg", "iotsec.cli.netseg:app"),
    ("keys", "iotsec.cli.keys:app"),
    ("broker", "iotsec.cli.broker:app"),
    ("gateway", "iotsec.cli.gateway:app"),
    ("coap", "iotsec.cli.coap:app"),
    ("backup", "iotsec.cli.backup:app"),
    ("enrol", "iotsec.cli.enrol:app"),
    ("profile", "iotsec.cli.profiles:app"),
    ("ocsp", "iotsec.cli.ocsp:app"),
    ("compliance", "iotsec.cli.compliance:app"),
    ("init", "iotsec.cli.setup:init"),
    ("crl", "iotsec.cli.crl:crl"),
    ("scan", "iotsec.cli.scan:scan"),
    ("audit", "iotsec.cli.audit:audit"),
    ("serve", "iotsec.cli.serve:serve"),
    ("migrate", "iotsec.cli.backup:migrate"),
    ("device-agent", "iotsec.cli.device_agent:device_agent"),
)
_TARGETS: Final = dict(COMMANDS)


def _load(name: str, target: str) -> Command:
    """The click command of ``target``, built as ``add_typer``/``command`` would have."""
    module_name, attribute = target.split(":")
    found = getattr(importlib.import_module(module_name), attribute)
    if isinstance(found, typer.Typer):
        return typer.main.get_group_from_info(
            TyperInfo(found, name=name), pretty_exceptions_short=app.pretty_exceptions_short,
            rich_markup_mode=app.rich_markup_mode, suggest_commands=app.suggest_commands)
    return typer.main.get_command_from_info(
        CommandInfo(name=name, callback=found),
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=app.rich_markup_mode)


class LazyGroup(TyperGroup):
    """The root command: the commands of :data:`COMMANDS`, each imported when first asked
    for (and those registered on :data:`app` itself, as usual)."""

    def list_commands(self, ctx: Context) -> list[str]:
        # The table's order whichever were loaded already, then any registered here only.
        table = [name for name, _ in COMMANDS]
        return table + [name for name in super().list_commands(ctx) if name not in _TARGETS]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        command = super().get_command(ctx, cmd_name)
        target = _TARGETS.get(cmd_name)
        if command is None and target is not None:
            command = _load(cmd_name, target)
            self.add_command(command, cmd_name)
        return command


app = typer.Typer(
    name="iotsec",
    help="iotsec: device identity, PKI and security control plane for IoT fleets.",
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


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
        from iotsec.cli.output import print_error  # deferred: Rich, for errors only

        print_error(exc)
        return 1
    except OSError as exc:
        # A full disk, a read-only file system, a file where a directory is needed: the
        # system refused, which is no bug of iotsec's. Translated here once for every command.
        from iotsec.cli.output import print_error
        from iotsec.filesystem import os_error

        print_error(os_error(exc))
        return 1
    except KeyboardInterrupt:
        from iotsec.cli.output import err_console

        err_console.print("iotsec: interrupted", markup=False)
        return 130
    except Exception as exc:
        if os.environ.get("IOTSEC_DEBUG"):
            raise
        from iotsec.cli.output import err_console

        err_console.print(f"iotsec: internal error: {type(exc).__name__}: {exc} "
                          "(this is a bug; run again with IOTSEC_DEBUG=1 for details)",
                          markup=False, soft_wrap=True)
        return 1
    return 0


