"""``iotsec profile``: named certificate profiles beside the built-in ``device`` and
``server``."""

from __future__ import annotations

from typing import Annotated

import typer

from iotsec.app.pki import profiles as service
from iotsec.app.wire.enrol import RemovedOut
from iotsec.app.wire.profiles import ProfileOut
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt, NameArg
from iotsec.cli.output import console, emit_json, plural, table, when
from iotsec.pki.profiles import KEY_TYPES, NO_REVOCATION_MAX_DAYS, CertProfile

__all__ = ["add", "app", "list_", "remove", "show"]

app = typer.Typer(help="Certificate profiles: validity, key types, extended key usages and "
                  "DNS names of the certificates issued under each.", no_args_is_help=True)


def _rows(p: ProfileOut) -> list[tuple[str, str]]:
    return [("validity", plural(p.validity_days, "day")),
            ("key types", ", ".join(p.key_types) or "any accepted"),
            ("extended key usage", ", ".join(p.ekus)),
            ("DNS names from", ", ".join(p.dns_from) or "-"),
            ("revocation", "not checked (RFC 9608 noRevAvail)" if p.no_revocation
             else "checked"),
            ("built-in", "yes" if p.builtin else "no"),
            ("created", when(p.created_at) if p.created_at else "-")]


@app.command("add")
def add(
    name: NameArg,
    days: Annotated[int, typer.Option("--days", help="Validity in days; also the most a "
                                      "request's --days may ask.")],
    key_types: Annotated[str, typer.Option(
        "--key-types", metavar="LIST", help=f"Key types a CSR may carry, comma-separated: "
        f"{', '.join(KEY_TYPES)}.")],
    eku: Annotated[str, typer.Option(
        "--eku", metavar="LIST", help="Extended key usages, comma-separated: clientAuth, "
        "serverAuth.")] = "clientAuth",
    dns_from: Annotated[list[str] | None, typer.Option(
        "--dns-from", metavar="SOURCE", help="A DNS name of the certificate (repeatable): "
        "attr:NAME takes the device attribute NAME; anything else is a DNS name in which "
        "{device_id} stands for the device id.")] = None,
    no_revocation: Annotated[bool, typer.Option(
        "--no-revocation", help=f"Short-lived certificates (--days {NO_REVOCATION_MAX_DAYS} or "
        "less) that relying parties do not check for revocation (RFC 9608 noRevAvail; no CRL "
        "distribution point).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a named certificate profile."""
    profile = CertProfile.parse(name, days=days, key_types=key_types, ekus=eku,
                                dns_from=dns_from or [], no_revocation=no_revocation)
    with runtime() as rt:
        stored = service.add_profile(rt, profile)
    if as_json:
        emit_json(ProfileOut.from_domain(stored))
    else:
        console.print(f"Added certificate profile {stored.profile.name}", markup=False)


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List certificate profiles: the built-ins, then the named ones."""
    with runtime() as rt:
        found = [ProfileOut.from_domain(p) for p in service.list_profiles(rt)]
    if as_json:
        emit_json(found)
        return
    table(plural(len(found), "certificate profile"),
          ["name", "days", "key types", "eku", "dns from", "revocation"],
          [(p.name, p.validity_days, ", ".join(p.key_types) or "any", ", ".join(p.ekus),
            ", ".join(p.dns_from) or "-", "not checked" if p.no_revocation else "checked")
           for p in found])


@app.command("show")
def show(name: NameArg, as_json: JsonOpt = False) -> None:
    """Show a certificate profile and how many devices, groups and templates select it."""
    with runtime() as rt:
        stored, usage = service.get_profile(rt, name)
    out = ProfileOut.from_domain(stored, usage)
    if as_json:
        emit_json(out)
        return
    table(f"certificate profile {out.name}", ["field", "value"], [
        *_rows(out), ("selected by", f"{plural(usage.devices, 'device')}, "
                      f"{plural(usage.groups, 'group')}, "
                      f"{plural(usage.templates, 'enrolment template')}")])


@app.command("remove")
def remove(name: NameArg, as_json: JsonOpt = False) -> None:
    """Remove a named profile no device, group or enrolment template selects."""
    with runtime() as rt:
        service.remove_profile(rt, name)
    if as_json:
        emit_json(RemovedOut(kind="profile", name=name))
    else:
        console.print(f"Removed certificate profile {name}", markup=False)
