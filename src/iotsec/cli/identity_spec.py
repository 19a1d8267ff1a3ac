"""The interfaces of ``iotsec cert list`` and ``iotsec device show`` in one place: their
arguments and options (declared with these names and defaults by the Typer commands of
:mod:`iotsec.cli.certs` and :mod:`iotsec.cli.devices`, and read by
:func:`iotsec.cli.spec.parse` for :mod:`iotsec.cli.lean`), their reads and what they print.

Without Typer or pydantic: both commands start without them when the home allows it (ADR
0051). tests/cli/test_lean_reads.py checks that the parser and the Typer commands accept
the same command lines and that both paths print the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from iotsec.app.pki.cert_records import list_certificates
from iotsec.cli.output import plural, table, when
from iotsec.cli.plain import write_json
from iotsec.cli.spec import JSON_FLAG, CommandSpec
from iotsec.timeutil import parse_duration

if TYPE_CHECKING:
    from datetime import timedelta

    from iotsec.app.reads import Reads

__all__ = ["CERT_LIST", "DEFAULT_LIMIT", "DEVICE_SHOW", "expiry_window", "list_certificates_of",
           "show_device"]

#: The most certificates ``cert list`` prints unless told otherwise.
DEFAULT_LIMIT: Final = 1000

CERT_LIST: Final = CommandSpec(
    path=("cert", "list"), arguments=(),
    options=(("--device", "device", None), ("--expiring-within", "expiring_within", None),
             ("--limit", "limit", DEFAULT_LIMIT)),
    flags=(JSON_FLAG,), integers=frozenset({"limit"}))

DEVICE_SHOW: Final = CommandSpec(path=("device", "show"), arguments=("device_id",),
                                 flags=(JSON_FLAG,))


def expiry_window(expiring_within: str | None) -> timedelta | None:
    """``--expiring-within`` read (e.g. ``30d``), before the store is opened."""
    return parse_duration(expiring_within) if expiring_within else None


def list_certificates_of(reads: Reads, device: str | None, window: timedelta | None,
                         limit: int, as_json: bool) -> None:
    """``cert list``: certificates newest first, or the unrevoked ones expiring within
    ``window`` soonest first; as JSON or as a table."""
    found = list_certificates(reads, device_id=device, expiring_within=window, limit=limit)
    now = reads.now()
    if as_json:
        # Deferred, here and below: a table needs no JSON shape.
        from iotsec.app.wire.identity_fields import certificate_fields

        write_json([certificate_fields(c, now) for c in found])
        return
    table(plural(len(found), "certificate"), ["serial", "device", "status", "not after", "reason"],
          [(c.serial, c.device_id or f"({c.kind})", c.status(now), when(c.not_after),
            c.revocation_reason.name if c.revocation_reason is not None else "")
           for c in found])


def show_device(reads: Reads, device_id: str, as_json: bool) -> None:
    """``device show``: a device, the profile it selects itself and its certificates."""
    # Deferred: listing certificates reads no device (and imports no policy model).
    from iotsec.app.identity.device_detail import device_detail

    device, held, profile, now = device_detail(reads, device_id)
    if as_json:
        from iotsec.app.wire.identity_fields import device_detail_fields

        write_json(device_detail_fields(device, held, now, profile))
        return
    table(f"device {device.id}", ["field", "value"], [
        ("state", device.state.value), ("groups", ", ".join(device.groups)),
        ("roles", ", ".join(device.roles)),
        ("profile", profile or "(its groups', else device)"),
        ("attributes", ", ".join(f"{k}={v}" for k, v in sorted(device.attributes.items()))),
        ("created", when(device.created_at)), ("updated", when(device.updated_at))])
    if held:
        table("certificates", ["serial", "status", "not after"],
              [(c.serial, c.status(now), when(c.not_after)) for c in held])
