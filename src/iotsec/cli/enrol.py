"""``iotsec enrol``: what lets a device enrol over EST without an operator credential --
enrolment secrets (bootstrap credentials), provisioning templates and claim CAs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer

from iotsec.app.enrol import claims, secrets, templates
from iotsec.app.wire.base import Wire
from iotsec.app.wire.enrol import ClaimCaOut, RemovedOut, SecretOut, TemplateOut
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt, NameArg
from iotsec.cli.output import console, emit_json, err_console, plural, read_input, table, when
from iotsec.errors import InvalidInputError
from iotsec.identity.enrolment import MAX_ALLOW_LIST, Template, parse_allow_list
from iotsec.timeutil import parse_duration

__all__ = [
    "app", "claim_add", "claim_app", "claim_list", "claim_remove", "secret_app", "secret_create",
    "secret_list", "secret_revoke", "template_add", "template_app", "template_list",
    "template_remove", "template_show"
]

app = typer.Typer(help="Device enrolment over EST: enrolment secrets, provisioning templates "
                  "and claim CAs.", no_args_is_help=True)
secret_app = typer.Typer(help="Enrolment secrets: one- or N-use bootstrap credentials a device "
                         "presents over HTTP Basic.", no_args_is_help=True)
template_app = typer.Typer(help="Provisioning templates: what a device enrolling under one "
                           "becomes.", no_args_is_help=True)
claim_app = typer.Typer(help="Claim CAs: manufacturers' CAs whose certificates may each enrol "
                        "once.", no_args_is_help=True)
app.add_typer(secret_app, name="secret")
app.add_typer(template_app, name="template")
app.add_typer(claim_app, name="claim-ca")

#: Identifier columns of these tables beyond the shared ones (never cut).
_IDS = ("template", "fingerprint")


def _listing(as_json: bool, wire: Sequence[Wire], noun: str, columns: list[str],
             rows: list[tuple[object, ...]]) -> None:
    """A list command's answer: the wire models for ``--json``, else the table."""
    if as_json:
        emit_json(list(wire))
    else:
        table(plural(len(rows), noun), columns, rows, ids=_IDS)


def _removed(as_json: bool, kind: str, name: str, what: str) -> None:
    if as_json:
        emit_json(RemovedOut(kind=kind, name=name))
    else:
        console.print(f"Removed {what} {name}", markup=False)


TemplateOpt = Annotated[str | None, typer.Option(
    "--template", metavar="NAME", help="A provisioning template.")]


# --- secrets -------------------------------------------------------------------------------


@secret_app.command("create")
def secret_create(
    device: Annotated[str | None, typer.Argument(
        metavar="[DEVICE]", help="The registered device the secret enrols.")] = None,
    template: TemplateOpt = None,
    uses: Annotated[int, typer.Option("--uses", help="How many enrolments it allows "
                                      "(1 to 10000).")] = 1,
    expires: Annotated[str, typer.Option("--expires", help="Lifetime, e.g. 1h or 7d (one "
                                         "minute to 30 days).")] = "1h",
    as_json: JsonOpt = False,
) -> None:
    """Create an enrolment secret for one device or for a template (shown once; only its
    hash is stored)."""
    if (device is None) == (template is None):
        raise InvalidInputError("an enrolment secret is for one device or for one template",
                                hint="give a device id, or --template NAME, not both")
    lifetime = parse_duration(expires)
    with runtime() as rt:
        info, secret = secrets.create_secret(rt, device_id=device, template=template,
                                             uses=uses, expires_in=lifetime)
    bound = f"device {info.device_id}" if info.device_id else f"template {info.template}"
    err_console.print(
        f"Created enrolment secret {info.id} for {bound}: {plural(info.uses_total, 'use')}, "
        f"expires {when(info.expires_at)}. The secret is shown once and not stored; it is "
        "not shown again. The device sends it over HTTP Basic (user name: the id, "
        "password: the secret).", markup=False, soft_wrap=True)
    if as_json:
        emit_json(SecretOut.from_domain(info, secret))
        return
    console.print(f"id      {info.id}\nsecret  {secret}", markup=False, soft_wrap=True)


@secret_app.command("list")
def secret_list(as_json: JsonOpt = False) -> None:
    """List enrolment secrets, newest first (never the secrets themselves)."""
    with runtime() as rt:
        found = secrets.list_secrets(rt)
    _listing(as_json, [SecretOut.from_domain(s) for s in found], "enrolment secret",
             ["id", "device", "template", "state", "uses left", "expires", "created"],
             [(s.id, s.device_id, s.template, s.state.value, f"{s.uses_left}/{s.uses_total}",
               when(s.expires_at), when(s.created_at)) for s in found])


@secret_app.command("revoke")
def secret_revoke(secret_id: Annotated[str, typer.Argument(metavar="ID")],
                  as_json: JsonOpt = False) -> None:
    """Revoke an enrolment secret at once."""
    with runtime() as rt:
        info = secrets.revoke_secret(rt, secret_id)
    if as_json:
        emit_json(SecretOut.from_domain(info))
    else:
        console.print(f"Revoked enrolment secret {info.id}", markup=False)


# --- templates -----------------------------------------------------------------------------


def _template_rows(t: Template) -> list[tuple[str, str]]:
    return [("groups", ", ".join(t.groups)), ("roles", ", ".join(t.roles) or "(default)"),
            ("attributes", ", ".join(f"{k}={v}" for k, v in sorted(t.attributes.items()))),
            ("id from", t.id_from.value),
            ("approval", "required" if t.require_approval else "not required"),
            ("profile", t.profile), ("created", when(t.created_at))]


@template_app.command("add")
def template_add(
    name: NameArg,
    group: Annotated[list[str] | None, typer.Option(
        "--group", help="Group of the devices it creates (repeatable).")] = None,
    role: Annotated[list[str] | None, typer.Option(
        "--role", help="Role of the devices it creates (repeatable; default: the role "
        "'device').")] = None,
    attr: Annotated[list[str] | None, typer.Option(
        "--attr", help="key=value attribute of the devices it creates (repeatable).")] = None,
    id_from: Annotated[str, typer.Option(
        "--id-from", help="Where a new device's id comes from: csr-cn (the CSR's CN), "
        "serial-number (the claim certificate's, else the CSR's subject serialNumber) or "
        "secret (the enrolment secret's id).")] = "csr-cn",
    require_approval: Annotated[bool, typer.Option(
        "--require-approval", help="New devices wait (awaiting-approval) until "
        "'iotsec device approve ID'.")] = False,
    profile: Annotated[str, typer.Option(
        "--profile", help="Certificate profile of the devices it enrols when neither the "
        "device nor its groups name one: device, server or a named profile "
        "('iotsec profile list').")] = "device",
    replace: Annotated[bool, typer.Option(
        "--replace", help="Change the template of that name (enrolled devices keep what "
        "they got).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a provisioning template."""
    template = Template.parse(name, groups=group or [], roles=role or [],
                              attributes=attr or [], id_from=id_from,
                              require_approval=require_approval, profile=profile)
    with runtime() as rt:
        stored = templates.add_template(rt, template, replace=replace)
    if as_json:
        emit_json(TemplateOut.from_domain(stored))
    else:
        console.print(f"{'Stored' if replace else 'Added'} provisioning template "
                      f"{stored.name}", markup=False)


@template_app.command("list")
def template_list(as_json: JsonOpt = False) -> None:
    """List provisioning templates."""
    with runtime() as rt:
        found = templates.list_templates(rt)
    _listing(as_json, [TemplateOut.from_domain(t) for t in found], "provisioning template",
             ["name", "groups", "roles", "id from", "approval", "profile", "created"],
             [(t.name, ", ".join(t.groups), ", ".join(t.roles) or "(default)", t.id_from.value,
               "required" if t.require_approval else "", t.profile, when(t.created_at))
              for t in found])


@template_app.command("show")
def template_show(name: NameArg, as_json: JsonOpt = False) -> None:
    """Show a provisioning template."""
    with runtime() as rt:
        found = templates.get_template(rt, name)
    if as_json:
        emit_json(TemplateOut.from_domain(found))
        return
    table(f"provisioning template {found.name}", ["field", "value"], _template_rows(found))


@template_app.command("remove")
def template_remove(name: NameArg, as_json: JsonOpt = False) -> None:
    """Remove a provisioning template nothing uses any more."""
    with runtime() as rt:
        templates.remove_template(rt, name)
    _removed(as_json, "template", name, "provisioning template")


# --- claim CAs -----------------------------------------------------------------------------


@claim_app.command("add")
def claim_add(
    name: NameArg,
    ca: Annotated[str, typer.Option("--ca", metavar="FILE",
                                    help="The claim CA's certificate (PEM).")],
    template: Annotated[str, typer.Option("--template", metavar="NAME",
                                          help="The template its devices enrol under.")],
    allow: Annotated[str | None, typer.Option(
        "--allow", metavar="FILE", help="Allow list: one certificate serial (hex) or hardware "
        "id per line; only those may claim.")] = None,
    hook: Annotated[str | None, typer.Option(
        "--hook", metavar="URL", help="Pre-provisioning hook: must answer 2xx to a JSON POST "
        "within 5 s for a claim to enrol (https, or http on loopback).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a claim CA: each certificate it issued may enrol once, under TEMPLATE."""
    ca_pem = read_input(ca, claims.MAX_CA_PEM, "CA file")
    allowed = None
    if allow is not None:
        try:
            allowed = parse_allow_list(read_input(allow, MAX_ALLOW_LIST, "allow list")
                                       .decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInputError(f"the allow list {allow} is not UTF-8 text",
                                    hint="one serial or hardware id per line") from None
    with runtime() as rt:
        added = claims.add_claim_ca(rt, name, ca_pem, template, allow=allowed, hook_url=hook)
    if as_json:
        emit_json(ClaimCaOut.from_domain(added))
    else:
        console.print(f"Added claim CA {added.name} ({added.certificate.subject.rfc4514_string()})"
                      f" for template {added.template}", markup=False, soft_wrap=True)


@claim_app.command("list")
def claim_list(as_json: JsonOpt = False) -> None:
    """List claim CAs."""
    with runtime() as rt:
        found = claims.list_claim_cas(rt)
    _listing(as_json, [ClaimCaOut.from_domain(c) for c in found], "claim CA",
             ["name", "subject", "template", "allow list", "hook", "not after", "fingerprint"],
             [(c.name, c.certificate.subject.rfc4514_string(), c.template,
               "" if c.allow is None else plural(len(c.allow), "entry", "entries"),
               c.hook_url, when(c.certificate.not_valid_after_utc), c.fingerprint)
              for c in found])


@claim_app.command("remove")
def claim_remove(name: NameArg, as_json: JsonOpt = False) -> None:
    """Remove a claim CA: its certificates enrol no more."""
    with runtime() as rt:
        claims.remove_claim_ca(rt, name)
    _removed(as_json, "claim-ca", name, "claim CA")
