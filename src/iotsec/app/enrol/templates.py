"""Provisioning templates: what a device enrolling under one becomes (groups, roles,
attributes, certificate profile, approval), and where its id comes from."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from iotsec.app.events import Event
from iotsec.app.identity.bindings import require_roles
from iotsec.app.pki.profiles import require_profile
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError, NotFoundError
from iotsec.identity.enrolment import IdFrom, Template, parse_template_name
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.store.direct import Direct, Unit
from iotsec.timeutil import from_ts, ts

__all__ = ["add_template", "get_template", "list_templates", "load_template", "remove_template",
           "template_of"]

_T = m.provisioning_templates


def template_of(row: Any, prefix: str = "") -> Template:
    """The template a stored row holds (its columns named ``prefix`` + the column's name:
    a row that joined the template to something else)."""
    def column(name: str) -> Any:
        return getattr(row, prefix + name)

    return Template(name=column("name"), groups=tuple(json.loads(column("groups"))),
                    roles=tuple(json.loads(column("roles"))),
                    attributes=json.loads(column("attributes")),
                    id_from=IdFrom(column("id_from")),
                    require_approval=bool(column("require_approval")),
                    profile=column("profile"), created_at=from_ts(column("created_at")))


# On the driver (iotsec.store.direct): every EST enrolment under a template reads it.
_ONE_TEMPLATE = Direct(select(_T).where(_T.c.name == bindparam("name")))


def load_template(conn: Unit, name: str) -> Template:
    """The template ``name`` inside the caller's unit of work, or :class:`NotFoundError`."""
    key = parse_template_name(name)
    row = _ONE_TEMPLATE.first(conn, {"name": key})
    if row is None:
        raise NotFoundError(f"no provisioning template {key!r}",
                            hint="see 'iotsec enrol template list'")
    return template_of(row)


def _values(template: Template) -> dict[str, Any]:
    return {"groups": json.dumps(list(template.groups)),
            "roles": json.dumps(list(template.roles)),
            "attributes": json.dumps(dict(template.attributes), sort_keys=True),
            "id_from": template.id_from.value, "require_approval": template.require_approval,
            "profile": template.profile}


def add_template(rt: Runtime, template: Template, *, replace: bool = False) -> Template:
    """Store a template (or, with ``replace``, change an existing one: devices already
    enrolled keep what they got). Every role it names must exist."""
    moment = rt.now().replace(microsecond=0)
    with transaction(rt.engine) as conn:
        require_roles(conn, template.roles)
        require_profile(conn, template.profile)
        exists = conn.execute(select(_T.c.name).where(_T.c.name == template.name)).first()
        if exists is not None and not replace:
            raise ConflictError(f"provisioning template {template.name!r} already exists",
                                hint="choose another name, or give --replace to change it")
        if exists is None:
            conn.execute(insert(_T).values(name=template.name, created_at=ts(moment),
                                           **_values(template)))
        else:
            conn.execute(update(_T).where(_T.c.name == template.name)
                         .values(**_values(template)))
    rt.events.record(Event(moment, "est.template-" + ("replaced" if exists else "added"),
                           "success", subject=template.name,
                           detail={"groups": list(template.groups), "roles": list(template.roles),
                                   "id_from": template.id_from.value,
                                   "require_approval": template.require_approval,
                                   "profile": template.profile}))
    return get_template(rt, template.name)


def get_template(rt: Runtime, name: str) -> Template:
    """One template, or :class:`NotFoundError`."""
    with reading(rt.engine) as conn:
        return load_template(conn, name)


def list_templates(rt: Runtime) -> list[Template]:
    """Every template, by name."""
    with reading(rt.engine) as conn:
        return [template_of(r) for r in conn.execute(select(_T).order_by(_T.c.name))]


def _users(conn: Connection, name: str, now: int) -> str | None:
    """What still needs template ``name``: an active secret, a claim CA or a device
    waiting for approval (used, expired or revoked secrets do not count)."""
    s = m.enrolment_secrets.c
    active = conn.execute(select(func.count()).select_from(m.enrolment_secrets).where(
        s.template == name, s.revoked_at.is_(None), s.uses_left > 0, s.expires_at > now)
    ).scalar_one()
    if active:
        return f"{active} active enrolment secret(s)"
    ca = conn.execute(select(m.claim_cas.c.name).where(m.claim_cas.c.template == name)).first()
    if ca is not None:
        return f"claim CA {ca.name!r}"
    waiting = conn.execute(select(m.pending_enrolments.c.device_id)
                           .where(m.pending_enrolments.c.template == name)).first()
    if waiting is not None:
        return f"device {waiting.device_id!r}, waiting for approval"
    return None


def remove_template(rt: Runtime, name: str) -> None:
    """Remove a template nothing uses any more; its spent secrets go with it."""
    key = parse_template_name(name)
    moment = rt.now().replace(microsecond=0)
    with transaction(rt.engine) as conn:
        load_template(conn, key)
        user = _users(conn, key, ts(moment))
        if user is not None:
            raise ConflictError(f"provisioning template {key!r} is used by {user}",
                                hint="revoke its secrets, remove its claim CAs and approve or "
                                "retire its waiting devices first")
        conn.execute(delete(m.enrolment_secrets).where(m.enrolment_secrets.c.template == key))
        conn.execute(delete(_T).where(_T.c.name == key))
    rt.events.record(Event(moment, "est.template-removed", "success", subject=key))
