"""Policy as code: export, apply and lint the whole access policy."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from sqlalchemy import Connection, delete, func, insert, select

from iotsec.access.document import parse_document, render_document
from iotsec.access.lint import lint
from iotsec.access.policy import Role
from iotsec.app.access.roles import load_roles, write_role
from iotsec.app.events import Event
from iotsec.app.identity.bindings import bump_policy_version, roles_changed
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError
from iotsec.findings.model import Finding
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import ts

__all__ = ["ApplyResult", "apply_policy", "export_policy", "lint_policy"]


def _group_roles(conn: Connection) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for g, r in conn.execute(select(m.group_roles.c.group_name, m.group_roles.c.role_name)
                             .order_by(m.group_roles.c.group_name, m.group_roles.c.role_name)):
        result.setdefault(g, []).append(r)
    return result


def export_policy(rt: Runtime) -> str:
    with reading(rt.engine) as conn:
        return render_document(load_roles(conn), _group_roles(conn))


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    groups_changed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.removed or self.groups_changed)


def _same(a: Role, b: Role) -> bool:
    return a.description == b.description and [x.as_text() for x in a.rules] == \
        [x.as_text() for x in b.rules]


def apply_policy(rt: Runtime, data: bytes, *, prune: bool = False,
                 dry_run: bool = False, actor: str = "cli") -> ApplyResult:
    """Make the stored roles and group bindings match the document, in one transaction.

    Roles in the document are created or replaced; groups in the document get exactly the
    roles listed. With ``prune``, roles absent from the document are removed (refused while
    a device or group still holds one). ``dry_run`` reports without writing. A change is
    recorded as a ``policy.applied`` event (who, what changed, the document's SHA-256) in the
    same transaction.
    """
    doc = parse_document(data)
    moment = rt.now()
    now = ts(moment)
    result = ApplyResult()
    with transaction(rt.engine) as conn:
        current = {r.name: r for r in load_roles(conn)}
        wanted_names = {r.name for r in doc.roles}
        referenced = {r for rs in doc.groups.values() for r in rs}
        missing = sorted(referenced - wanted_names - set(current))
        if missing:
            raise ConflictError(f"the document binds unknown role {missing[0]!r} to a group",
                                hint="define the role in the document")
        for role in doc.roles:
            old = current.get(role.name)
            if old is None:
                result.created.append(role.name)
            elif _same(old, role):
                result.unchanged.append(role.name)
                continue
            else:
                result.updated.append(role.name)
            write_role(conn, role, now, replace=True)
        groups_now = _group_roles(conn)
        for group, roles in sorted(doc.groups.items()):
            if sorted(groups_now.get(group, [])) == sorted(roles):
                continue
            result.groups_changed.append(group)
            if conn.execute(select(m.groups.c.name).where(m.groups.c.name == group)).first() \
                    is None:
                conn.execute(insert(m.groups).values(name=group, created_at=now))
            conn.execute(delete(m.group_roles).where(m.group_roles.c.group_name == group))
            if roles:
                conn.execute(insert(m.group_roles), [{"group_name": group, "role_name": r}
                                                     for r in roles])
            bump_policy_version(conn)
        if prune:
            for name in sorted(set(current) - wanted_names):
                held = conn.execute(select(func.count()).select_from(m.device_roles)
                                    .where(m.device_roles.c.role_name == name)).scalar_one()
                held += conn.execute(select(func.count()).select_from(m.group_roles)
                                     .where(m.group_roles.c.role_name == name)).scalar_one()
                if held:
                    raise ConflictError(f"role {name!r} is not in the document but is still "
                                        f"held by {held} devices or groups",
                                        hint="unassign it first, or apply without --prune")
                conn.execute(delete(m.roles).where(m.roles.c.name == name))
                result.removed.append(name)
                bump_policy_version(conn)
        if dry_run:
            conn.rollback()
        elif result.created or result.updated or result.removed or result.groups_changed:
            rt.events.record_in(conn, Event(moment, "policy.applied", "success", actor=actor,
                                            subject="policy", detail={
                                                "created": result.created[:50],
                                                "updated": result.updated[:50],
                                                "removed": result.removed[:50],
                                                "groups": result.groups_changed[:50],
                                                "sha256": hashlib.sha256(data).hexdigest()}))
    roles_changed(rt)
    return result


def lint_policy(rt: Runtime) -> list[Finding]:
    with reading(rt.engine) as conn:
        roles = load_roles(conn)
        counts = {name: int(n) for name, n in conn.execute(
            select(m.device_roles.c.role_name, func.count())
            .group_by(m.device_roles.c.role_name))}
        groups = _group_roles(conn)
    return lint(roles, device_counts=counts, group_roles=groups)
