"""``iotsec role``, ``iotsec group`` and ``iotsec authz``: device access control.

Each command imports the services it calls when it runs, so that ``--help`` (and every
command) starts without the others' services and the store's SQL layer.
"""

from __future__ import annotations

from typing import Annotated

import typer

from iotsec.access.policy import Role, parse_rule_spec
from iotsec.app.wire.access import NamesOut, RoleOut
from iotsec.app.wire.profiles import ProfileSelectionOut
from iotsec.cli.access_spec import AUTHZ_CHECK, report_decision
from iotsec.cli.context import runtime
from iotsec.cli.options import ClearOpt, JsonOpt, NameArg, ProfileNameArg, check_selection
from iotsec.cli.output import console, emit_json, plural, table

__all__ = [
    "authz_app", "authz_check", "group_add", "group_app", "group_set_profile", "role_add",
    "role_app", "role_list", "role_show"
]

role_app = typer.Typer(help="Device roles: rules of allow/deny, action and resource.",
                       no_args_is_help=True)
group_app = typer.Typer(help="Device groups and the roles their members inherit.",
                        no_args_is_help=True)
authz_app = typer.Typer(help="Ask the policy engine for a decision.", no_args_is_help=True)


@role_app.command("add")
def role_add(
    name: NameArg,
    allow: Annotated[list[str] | None, typer.Option(
        "--allow", help="ACTION:RESOURCE, e.g. 'publish:devices/${device.id}/#' (repeatable)")
    ] = None,
    deny: Annotated[list[str] | None, typer.Option(
        "--deny", help="ACTION:RESOURCE (repeatable); a matching deny beats any allow")] = None,
    description: Annotated[str, typer.Option("--description", help="Free text.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Create a role."""
    from iotsec.app.access import roles as role_service  # deferred: start-up time

    rules = [parse_rule_spec("deny", s) for s in deny or []]
    rules += [parse_rule_spec("allow", s) for s in allow or []]
    role = Role.build(name, rules, description)
    with runtime() as rt:
        role_service.add_role(rt, role, actor="cli")
        info = role_service.get_role(rt, role.name)
    if as_json:
        emit_json(RoleOut.from_domain(info))
    else:
        console.print(f"Created role {role.name} with {plural(len(role.rules), 'rule')}",
                      markup=False)


@role_app.command("list")
def role_list(as_json: JsonOpt = False) -> None:
    """List roles with their rules and who holds them."""
    from iotsec.app.access import roles as role_service  # deferred: start-up time

    with runtime() as rt:
        infos = role_service.list_roles(rt)
    if as_json:
        emit_json([RoleOut.from_domain(i) for i in infos])
        return
    table(plural(len(infos), "role"), ["role", "rules", "devices", "groups"],
          [(i.role.name, "\n".join(r.as_text() for r in i.role.rules), i.devices,
            ", ".join(i.groups)) for i in infos])


@role_app.command("show")
def role_show(name: NameArg, as_json: JsonOpt = False) -> None:
    """Show one role."""
    from iotsec.app.access import roles as role_service  # deferred: start-up time

    with runtime() as rt:
        info = role_service.get_role(rt, name)
    if as_json:
        emit_json(RoleOut.from_domain(info))
        return
    table(f"role {info.role.name}", ["#", "effect", "action", "resource"],
          [(i, r.effect.value, r.action, r.resource) for i, r in enumerate(info.role.rules)])
    console.print(f"held by {plural(info.devices, 'device')} directly; groups: "
                  f"{', '.join(info.groups) or '-'}", markup=False)


@group_app.command("add")
def group_add(
    name: NameArg,
    role: Annotated[list[str] | None, typer.Option("--role", help="Role (repeatable).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a group (or use an existing one) and bind roles its members inherit."""
    from iotsec.app.access import roles as role_service  # deferred: start-up time

    with runtime() as rt:
        roles = role_service.add_group(rt, name, role or [], actor="cli")
    if as_json:
        emit_json(NamesOut(name=name, roles=roles))
    else:
        console.print(f"Group {name}: roles {', '.join(roles) or '-'}", markup=False)


@group_app.command("set-profile")
def group_set_profile(name: NameArg, profile: ProfileNameArg = None, clear: ClearOpt = False,
                      as_json: JsonOpt = False) -> None:
    """Issue the certificates of the group's members under PROFILE, unless a device names
    its own (members of groups that name different profiles are refused)."""
    from iotsec.app.pki.profiles import set_group_profile  # deferred: start-up time

    check_selection(profile, clear)
    with runtime() as rt:
        now = set_group_profile(rt, name, profile)
    if as_json:
        emit_json(ProfileSelectionOut(kind="group", name=name, profile=now))
    else:
        console.print(f"Group {name}: certificate profile {now or '(none)'}", markup=False)


@authz_app.command("check")
def authz_check(
    device: Annotated[str, typer.Argument(metavar="DEVICE")],
    action: Annotated[str, typer.Argument(metavar="ACTION",
                                          help="connect, publish, subscribe, receive, ...")],
    resource: Annotated[str, typer.Argument(metavar="RESOURCE",
                                            help="A topic (a filter for subscribe).")],
    cert_serial: Annotated[str | None, typer.Option(AUTHZ_CHECK.flag("cert_serial"),
                                                    help="For ${cert.serial} rules.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print allow or deny and the rule that decided (exit 0 allow, 1 deny)."""
    from iotsec.app.access import decisions as service  # deferred: start-up time

    # Usually run before Typer is imported (iotsec.cli.lean, ADR 0050): here when the command
    # line or the home needs the full runtime, with the same answer.
    with runtime() as rt:
        decision = service.check(rt, device, action, resource, cert_serial)
    code = report_decision(decision, as_json)
    if code:
        raise typer.Exit(code)
