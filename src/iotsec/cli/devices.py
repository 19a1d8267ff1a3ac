"""``iotsec device``: the device registry.

The commands import the services they call when they run (the registry service, roles, the
broker, EST), and the wire models where they print JSON, so that ``device show`` starts with
its reads only (no SQLAlchemy, and no wire model for its tables).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, TextIO

import typer

from iotsec.cli.context import runtime
from iotsec.cli.identity_spec import show_device
from iotsec.cli.options import ClearOpt, JsonOpt, LimitOpt, ProfileNameArg, check_selection
from iotsec.cli.output import (
    console,
    emit_json,
    plural,
    rich_console,
    table,
    when,
)
from iotsec.errors import InvalidInputError, NotFoundError
from iotsec.identity.registry import DeviceState

__all__ = [
    "IdArg", "ProfileNameArg", "add", "app", "approve", "assign", "disable",
    "enable", "import_", "list_", "retire", "set_profile", "show"
]

app = typer.Typer(help="Register and manage devices.", no_args_is_help=True)

IdArg = Annotated[str, typer.Argument(metavar="ID")]


@app.command("add")
def add(
    device_id: Annotated[str, typer.Argument(metavar="ID", help="The device id.")],
    group: Annotated[list[str] | None, typer.Option("--group", help="Group (repeatable).")] = None,
    attr: Annotated[list[str] | None, typer.Option("--attr", help="key=value (repeatable).")
                    ] = None,
    role: Annotated[list[str] | None, typer.Option(
        "--role", help="Role (repeatable); default: the least-privilege role 'device'.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a device (state: pending until its first certificate)."""
    from iotsec.app.identity import devices as service  # deferred: start-up time

    new = service.NewDevice.parse(device_id, group or [], attr or [], role)
    with runtime() as rt:
        device = service.add_device(rt, new, actor="cli")
    if as_json:
        from iotsec.app.wire.identity import DeviceOut
        emit_json(DeviceOut.from_domain(device))
    else:
        console.print(f"Registered device {device.id} ({device.state.value})", markup=False)


@app.command("list")
def list_(
    group: Annotated[str | None, typer.Option("--group", help="Only this group.")] = None,
    state: Annotated[str | None, typer.Option("--state", help="Only this state.")] = None,
    limit: LimitOpt = 1000,
    after: Annotated[str | None, typer.Option("--after", help="Ids after this one.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List devices, ordered by id."""
    from iotsec.app.identity import devices as service  # deferred: start-up time

    wanted = None
    if state is not None:
        try:
            wanted = DeviceState(state)
        except ValueError:
            raise InvalidInputError(f"unknown state {state!r}", hint="use one of: " + ", ".join(
                s.value for s in DeviceState)) from None
    with runtime() as rt:
        found = service.list_devices(rt, group=group, state=wanted, limit=limit, after=after)
    if as_json:
        from iotsec.app.wire.identity import DeviceOut
        emit_json([DeviceOut.from_domain(d) for d in found])
        return
    table(plural(len(found), "device"),
          ["id", "state", "groups", "roles", "attributes", "created"],
          [(d.id, d.state.value, ", ".join(d.groups), ", ".join(d.roles),
            ", ".join(f"{k}={v}" for k, v in sorted(d.attributes.items())), when(d.created_at))
           for d in found])


@app.command("assign")
def assign(
    device_id: IdArg,
    role: Annotated[list[str], typer.Option("--role", help="Role to bind (repeatable).")],
    as_json: JsonOpt = False,
) -> None:
    """Bind roles to a registered device."""
    from iotsec.app.access.roles import assign_device
    from iotsec.app.wire.access import NamesOut

    with runtime() as rt:
        roles = assign_device(rt, device_id, role, actor="cli")
    if as_json:
        emit_json(NamesOut(name=device_id, roles=roles))
    else:
        console.print(f"Device {device_id}: roles {', '.join(roles)}", markup=False)


@app.command("show")
def show(
    device_id: IdArg,
    as_json: JsonOpt = False,
) -> None:
    """Show a device and its certificates."""
    with runtime() as rt:
        show_device(rt, device_id, as_json)


@app.command("set-profile")
def set_profile(device_id: IdArg, profile: ProfileNameArg = None, clear: ClearOpt = False,
                as_json: JsonOpt = False) -> None:
    """Issue the device's certificates under PROFILE (before its groups' and its enrolment
    template's; a request's --profile still comes first)."""
    from iotsec.app.pki.profiles import set_device_profile  # deferred: start-up time

    check_selection(profile, clear)
    with runtime() as rt:
        now = set_device_profile(rt, device_id, profile)
    if as_json:
        from iotsec.app.wire.profiles import ProfileSelectionOut
        emit_json(ProfileSelectionOut(kind="device", name=device_id, profile=now))
    else:
        console.print(f"Device {device_id}: certificate profile {now or '(none of its own)'}",
                      markup=False)


def _set_state(device_id: str, target: DeviceState, as_json: bool) -> None:
    from iotsec.app.broker.device_state import change_state_and_sync

    with runtime() as rt:
        device = change_state_and_sync(rt, device_id, target, actor="cli")
    if as_json:
        from iotsec.app.wire.identity import DeviceOut
        emit_json(DeviceOut.from_domain(device))
    else:
        console.print(f"Device {device.id} is now {device.state.value}", markup=False)


@app.command("disable")
def disable(device_id: IdArg, as_json: JsonOpt = False) -> None:
    """Disable a device (reversible; its certificates stay valid but it is refused)."""
    _set_state(device_id, DeviceState.DISABLED, as_json)


@app.command("enable")
def enable(device_id: IdArg, as_json: JsonOpt = False) -> None:
    """Re-enable a disabled device."""
    _set_state(device_id, DeviceState.ACTIVE, as_json)


@app.command("approve")
def approve(device_id: IdArg, as_json: JsonOpt = False) -> None:
    """Approve a device that enrolled under a template requiring approval
    (awaiting-approval -> pending): its next enrolment request gets its certificate."""
    from iotsec.app.enrol.est import approve as approve_enrolment

    with runtime() as rt:
        device = approve_enrolment(rt, device_id, actor="cli")
    if as_json:
        from iotsec.app.wire.identity import DeviceOut
        emit_json(DeviceOut.from_domain(device))
    else:
        console.print(f"Approved device {device.id}: it is now {device.state.value} and "
                      "gets its certificate on its next enrolment request", markup=False)


@app.command("retire")
def retire(device_id: IdArg, as_json: JsonOpt = False) -> None:
    """Retire a device for good, revoking its certificates (cessationOfOperation)."""
    _set_state(device_id, DeviceState.RETIRED, as_json)


@contextmanager
def _open_csv(path: str) -> Iterator[TextIO]:
    """The import file as text, read as it is consumed (``-``: standard input)."""
    if path == "-":
        stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
        try:
            yield stream
        finally:
            stream.detach()
        return
    try:
        fh = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise NotFoundError(f"import file {path} does not exist", hint="check the path"
                            ) from None
    except IsADirectoryError:
        raise InvalidInputError(f"import file {path} is a directory", hint="give a file"
                                ) from None
    with fh:
        yield fh


@app.command("import")
def import_(
    path: Annotated[str, typer.Argument(metavar="FILE.csv", help="CSV: id,groups,attributes "
                                        "(groups and attributes separated by ';'); '-' reads "
                                        "standard input.")],
    as_json: JsonOpt = False,
) -> None:
    """Register many devices from a CSV file, all or nothing: the file is streamed in
    batches inside one transaction, and a bad or duplicate row (named by its line)
    imports nothing."""
    from rich.progress import MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from iotsec.app.identity import bulk_import

    with _open_csv(path) as stream, runtime() as rt:
        if as_json:
            count = bulk_import.import_csv(rt, stream, actor="cli")
            emit_json({"imported": count})
            return
        with Progress(TextColumn("importing"), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=rich_console(console), transient=False) as progress:
            task = progress.add_task("import", total=None)
            count = bulk_import.import_csv(
                rt, stream, progress=lambda n: progress.advance(task, n), actor="cli")
    console.print(f"Imported {plural(count, 'device')}")
