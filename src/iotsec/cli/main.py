"""Entry point: the Typer app and the one place where errors become exit codes.

Command groups are loaded when they are called: ``iotsec --version`` imports none of them,
and ``iotsec device show`` only the device commands and what they use, so every command
starts without paying for the others (the store, the broker, the scanner...). The table
below is the one place that names them.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import threading
from gettext import gettext
from typing import TYPE_CHECKING, Annotated, Final

import typer
import typer.main
from typer._click.utils import make_default_short_help
from typer.core import TyperGroup
from typer.models import CommandInfo, TyperInfo

from iotsec import __version__
from iotsec.errors import IotsecError

if TYPE_CHECKING:
    # The click that Typer carries (and builds every command with).
    from typer._click.core import Command, Context
    from typer._click.formatting import HelpFormatter

__all__ = ["COMMANDS", "app", "main"]

#: Every command of ``iotsec``, in the order ``--help`` lists them: its name, the module
#: attribute that holds it (a Typer app for a command group, a function for a command), and
#: the first paragraph of its help, which ``iotsec --help`` shows without importing the
#: command (tests/cli/test_lazy_commands.py keeps it equal to the command's own help).
COMMANDS: Final[tuple[tuple[str, str, str], ...]] = (
    ("ca", "iotsec.cli.ca:app", "The certificate authorities."),
    ("device", "iotsec.cli.devices:app", "Register and manage devices."),
    ("cert", "iotsec.cli.certs:app", "Device certificates."),
    ("role", "iotsec.cli.access:role_app",
     "Device roles: rules of allow/deny, action and resource."),
    ("group", "iotsec.cli.access:group_app",
     "Device groups and the roles their members inherit."),
    ("authz", "iotsec.cli.access:authz_app", "Ask the policy engine for a decision."),
    ("policy", "iotsec.cli.policy:app", "The access policy as code: apply, export, lint."),
    ("token", "iotsec.cli.tokens:token_app", "API tokens for operators and automation."),
    ("events", "iotsec.cli.events:app", "Security events: the tamper-evident event log."),
    ("alerts", "iotsec.cli.alerts:app",
     "Alerts: detections and scheduled checks, and their delivery."),
    ("detect", "iotsec.cli.detect:app",
     "Continuous detection: rules as code, status, the detector."),
    ("incident", "iotsec.cli.incident:app",
     "Incident response: quarantine and release devices, incidents, and a device's "
     "timeline."),
    ("device-token", "iotsec.cli.device_tokens:app",
     "Device tokens (JWTs) for devices that cannot use mutual TLS."),
    ("firmware", "iotsec.cli.firmware:app",
     "Signed firmware images (MCUboot format): keys, sign, verify, inspect."),
    ("ota", "iotsec.cli.ota:app",
     "Secure OTA: the TUF update repository and rollout campaigns."),
    ("payload", "iotsec.cli.protect:payload_app",
     "End-to-end protected payloads (COSE_Encrypt0 / COSE_Sign1): make keys, seal and "
     "open single messages for debugging."),
    ("data", "iotsec.cli.data:data_app",
     "Encrypt files at rest under the home's key-encryption key (streamed, any size)."),
    ("netseg", "iotsec.cli.netseg:app",
     "Network segmentation: zones and rules as a policy file, checked, and compiled to"
     " an nftables firewall."),
    ("keys", "iotsec.cli.keys:app",
     "Keys in custody: list, generate, export public keys, rotate the key-encryption "
     "key, and report what depends on each key."),
    ("broker", "iotsec.cli.broker:app",
     "Drive the MQTT broker that enforces iotsec's decisions."),
    ("gateway", "iotsec.cli.gateway:app",
     "Protocol gateways: CoAP over DTLS for constrained devices."),
    ("coap", "iotsec.cli.coap:app", "CoAP for constrained devices: OSCORE security contexts."),
    ("backup", "iotsec.cli.backup:app", "Encrypted backups of a home, and restoring them."),
    ("enrol", "iotsec.cli.enrol:app",
     "Device enrolment over EST: enrolment secrets, provisioning templates and claim "
     "CAs."),
    ("profile", "iotsec.cli.profiles:app",
     "Certificate profiles: validity, key types, extended key usages and DNS names of "
     "the certificates issued under each."),
    ("ocsp", "iotsec.cli.ocsp:app", "OCSP (RFC 6960): ask a responder about a certificate."),
    ("compliance", "iotsec.cli.compliance:app",
     "Compliance reports (ETSI EN 303 645, NIST IR 8259A, OWASP IoT Top 10) and "
     "attestations."),
    ("init", "iotsec.cli.setup:init",
     "Create the home: store, root CA, issuing CA and the first admin API token."),
    ("crl", "iotsec.cli.crl:crl",
     "Publish the current CRL (DER by default), rebuilding it when it is due: the "
     "complete CRL, its delta (--delta) or one partition's (--partition K)."),
    ("scan", "iotsec.cli.scan:scan",
     "Scan TARGETS (and with --fleet the registered devices) for open services, "
     "identify each by probing, and report plaintext protocols, anonymous or wildcard "
     "MQTT, default credentials and TLS weaknesses. Exit 0: nothing at or above "
     "--fail-on; 1: findings at or above it; 2: the scan could not run."),
    ("audit", "iotsec.cli.audit:audit",
     "Audit the fleet from iotsec's own state: CA and device certificates, keys, "
     "revoked certificates still in use, shared identities, client id conflicts, the "
     "policy, the broker's configuration and CRL, event recording, firmware and API "
     "tokens. Exit 0: nothing at or above --fail-on; 1: findings at or above it; 2: "
     "the audit could not run."),
    ("serve", "iotsec.cli.serve:serve",
     "Serve the REST API (HTTPS with a certificate from iotsec's own CA), /crl and "
     "/ocsp, EST enrolment on --est-port, and OCSP, CRLs and CA certificates over "
     "plain HTTP on --public-http-port."),
    ("migrate", "iotsec.cli.backup:migrate",
     "Move the home's SQLite store to PostgreSQL: copied and verified (row counts and "
     "digests, CRLs byte for byte), then used by every later command."),
    ("device-agent", "iotsec.cli.device_agent:device_agent",
     "Enrol the device if DIR holds no certificate, then renew it until stopped."),
)
_TARGETS: Final = {name: target for name, target, _help in COMMANDS}
_HELP: Final = {name: text for name, _target, text in COMMANDS}


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
        table = [name for name, _target, _help in COMMANDS]
        return table + [name for name in super().list_commands(ctx) if name not in _TARGETS]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        command = super().get_command(ctx, cmd_name)
        target = _TARGETS.get(cmd_name)
        if command is None and target is not None:
            command = _load(cmd_name, target)
            self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        """The command list of ``iotsec --help``, from the table's help texts: listing the
        commands imports none of them (those registered on :data:`app` only are loaded)."""
        rows: list[tuple[str, str]] = []
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        for name in names:
            text = _HELP.get(name)
            if text is None:
                command = self.get_command(ctx, name)
                if command is None or command.hidden:
                    continue
                rows.append((name, command.get_short_help_str(limit)))
            else:
                rows.append((name, make_default_short_help(text, limit).strip()))
        with formatter.section(gettext("Commands")):  # as click names it
            formatter.write_dl(rows)


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
    """Run the CLI; refused operations exit 1 with one line on stderr, usage errors 2.

    Run as the ``iotsec`` program (no ``argv``: the arguments are the process's), the
    process then ends at once (:func:`_end_process`); given ``argv``, the exit code is
    returned."""
    code = _run(argv)
    if argv is None:
        _end_process(code)
    return code


def _end_process(code: int) -> None:
    """End the process with ``code`` without tearing the interpreter down: freeing every
    object and module of a command one by one takes longer than many commands themselves.
    What an exit must still do is done first: the ``atexit`` functions, and the standard
    streams flushed. Returns (the process then exits the usual way) while a thread that
    Python would wait for is still running, or when a stream cannot be flushed (Python
    reports that at exit)."""
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon for t in threading.enumerate()):
        return
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        code = code or 120  # as Python's own exit when it cannot flush standard output
    os._exit(code)


def _run(argv: list[str] | None) -> int:
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


