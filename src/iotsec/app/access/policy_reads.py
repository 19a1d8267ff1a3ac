"""The reads a decision's policy is compiled from (the policy version, the roles with their
rules, the roles bound to groups), written for the store's reader
(:mod:`iotsec.store.reader`): ``authz check`` imports no SQLAlchemy, and a serving process
reads them on its pool like its other reads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from iotsec.access.policy import Role, Rule
from iotsec.store.reader import Reader

__all__ = ["assemble_roles", "group_roles", "policy_version", "read_roles"]

_VERSION = "SELECT version FROM policy_version WHERE id = 1"
_ROLES = "SELECT name, description FROM roles ORDER BY name"
_RULES = ("SELECT role_name, effect, action, resource FROM role_rules "
          "ORDER BY role_name, position")
_GROUP_ROLES = ("SELECT group_name, role_name FROM group_roles "
                "ORDER BY group_name, role_name")


def policy_version(reader: Reader) -> int:
    """The store's policy version (every change of roles or bindings moves it)."""
    row = reader.first(_VERSION)
    assert row is not None  # the migrations insert the one row
    return int(row.version)


def assemble_roles(roles: Iterable[Any], rules: Iterable[Any]) -> list[Role]:
    """The roles of rows of ``roles`` (name, description) with their rules, from rows of
    ``role_rules`` (role_name, effect, action, resource) in position order; each rule is
    parsed again, as it was when it was written."""
    by_role: dict[str, list[Rule]] = {}
    for r in rules:
        by_role.setdefault(r.role_name, []).append(Rule.parse(r.effect, r.action, r.resource))
    return [Role(name=r.name, rules=tuple(by_role.get(r.name, ())), description=r.description)
            for r in roles]


def read_roles(reader: Reader) -> list[Role]:
    """Every role with its rules, by name."""
    return assemble_roles(reader.rows(_ROLES), reader.rows(_RULES))


def group_roles(reader: Reader) -> dict[str, list[str]]:
    """The roles bound to each group (groups with none are absent), by name."""
    bound: dict[str, list[str]] = {}
    for g, r in reader.tuples(_GROUP_ROLES):
        bound.setdefault(g, []).append(r)
    return bound
