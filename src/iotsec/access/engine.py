"""The decision engine: a compiled policy that answers allow/deny and says why.

Roles are compiled once into per-action tuples of deny and allow rules with their levels
pre-split and their variables pre-located, so a decision costs a dictionary lookup per role
and a short loop per rule, not a scan of the whole policy.

Semantics:
- default deny; an explicit deny that matches beats any allow;
- a device's roles are its own plus those of each of its groups;
- ``subscribe`` is allowed only if some allow rule's filter covers *every* topic the
  requested filter can match, and no deny rule's filter overlaps it;
- ``publish``, ``receive``, ``connect`` and API actions are checked against a topic name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from iotsec.access.policy import Effect, Identity, Role, Rule, check_identity_value, parse_action
from iotsec.access.topics import (
    Level,
    TopicFilter,
    covers_levels,
    overlaps_levels,
    parse_topic_name,
)

_LITERAL, _PLUS, _HASH, _VAR = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    action: str
    resource: str
    role: str | None = None
    rule_index: int | None = None
    rule: Rule | None = None
    reason: str | None = None

    @property
    def explanation(self) -> str:
        if self.reason is not None:
            return self.reason
        if self.rule is None:
            return "no rule allows it (default deny)"
        verb = "allowed" if self.allowed else "denied"
        return (f"{verb} by role {self.role!r} rule {self.rule_index}: "
                f"{self.rule.as_text()}")


@dataclass(frozen=True, slots=True)
class _Compiled:
    role: str
    index: int
    rule: Rule
    kinds: tuple[int, ...]
    levels: tuple[str, ...]  # for a variable level: the variable's name


def _compile(role: str, index: int, rule: Rule) -> _Compiled:
    kinds = []
    levels = []
    for i, level in enumerate(rule.levels):
        if i in rule.variables:
            kinds.append(_VAR)
            levels.append(level[2:-1])
        elif level == "+":
            kinds.append(_PLUS)
            levels.append(level)
        elif level == "#":
            kinds.append(_HASH)
            levels.append(level)
        else:
            kinds.append(_LITERAL)
            levels.append(level)
    return _Compiled(role, index, rule, tuple(kinds), tuple(levels))


def _values_of(identity: Identity, name: str) -> tuple[str, ...]:
    if name == "device.id":
        candidates: Iterable[str | None] = (identity.device_id,)
    elif name == "device.group":
        candidates = identity.groups
    elif name == "cert.cn":
        candidates = (identity.cert_cn,)
    elif name == "cert.serial":
        candidates = (identity.cert_serial,)
    elif name.startswith("device.attr."):
        candidates = (identity.attributes.get(name[12:]),)
    else:
        candidates = ()
    return tuple(v for v in (check_identity_value(c) for c in candidates) if v)


class _Values(dict[str, tuple[str, ...]]):
    """Each variable's acceptable values for one identity, computed on first use
    (invalid values dropped)."""

    __slots__ = ("identity",)

    def __init__(self, identity: Identity) -> None:
        super().__init__()
        self.identity = identity

    def __missing__(self, name: str) -> tuple[str, ...]:
        value = _values_of(self.identity, name)
        self[name] = value
        return value


def variable_values(identity: Identity) -> Mapping[str, tuple[str, ...]]:
    return _Values(identity)


def _match_name(c: _Compiled, names: tuple[str, ...], ctx: Mapping[str, tuple[str, ...]]
                ) -> bool:
    kinds, levels = c.kinds, c.levels
    n = len(names)
    if n and names[0][:1] == "$" and kinds[0] in (_PLUS, _HASH):
        return False
    for i, kind in enumerate(kinds):
        if kind == _HASH:
            return True
        if i >= n:
            return False
        if kind == _LITERAL:
            if levels[i] != names[i]:
                return False
        elif kind == _VAR and names[i] not in ctx[levels[i]]:
            return False
    return len(kinds) == n


def _resolve(c: _Compiled, ctx: Mapping[str, tuple[str, ...]]) -> list[Level] | None:
    """The rule's levels for this identity, a variable becoming the set of its values;
    None if a variable has no valid value (the rule then matches nothing)."""
    levels: list[Level] = []
    for kind, level in zip(c.kinds, c.levels, strict=True):
        if kind == _VAR:
            values = ctx[level]
            if not values:
                return None
            levels.append(frozenset(values))
        else:
            levels.append(level)
    return levels


_RulePair = tuple[tuple[_Compiled, ...], tuple[_Compiled, ...]]
_CACHE_LIMIT = 500_000


class CompiledPolicy:
    """Roles and their bindings to devices and groups, ready for fast decisions."""

    def __init__(self, roles: Iterable[Role],
                 device_roles: Mapping[str, Iterable[str]] | None = None,
                 group_roles: Mapping[str, Iterable[str]] | None = None) -> None:
        self._rules: dict[str, dict[str, _RulePair]] = {}
        for role in roles:
            by_action: dict[str, tuple[list[_Compiled], list[_Compiled]]] = {}
            for index, rule in enumerate(role.rules):
                deny, allow = by_action.setdefault(rule.action, ([], []))
                (deny if rule.effect is Effect.DENY else allow).append(
                    _compile(role.name, index, rule))
            self._rules[role.name] = {a: (tuple(d), tuple(al)) for a, (d, al) in by_action.items()}
        self._device_roles = {k: tuple(v) for k, v in (device_roles or {}).items()}
        self._group_roles = {k: tuple(v) for k, v in (group_roles or {}).items()}
        self._actions: set[str] = set()
        self._resolved: dict[tuple[str, tuple[str, ...], str], tuple[_RulePair, ...]] = {}

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(self._rules)

    def roles_for(self, identity: Identity) -> tuple[str, ...]:
        roles = list(self._device_roles.get(identity.device_id, ()))
        for group in identity.groups:
            for role in self._group_roles.get(group, ()):
                if role not in roles:
                    roles.append(role)
        return tuple(roles)

    def decide(self, identity: Identity, action: str, resource: str) -> Decision:
        """Allow or deny ``action`` on ``resource`` (a topic name, or a filter for
        ``subscribe``). Invalid input raises; it is never silently denied."""
        key = (identity.device_id, identity.groups, action)
        per_role = self._resolved.get(key)
        if per_role is None:
            if action not in self._actions:
                self._actions.add(parse_action(action))
            per_role = tuple(self._rules[r][action] for r in self.roles_for(identity)
                             if r in self._rules and action in self._rules[r])
            if len(self._resolved) >= _CACHE_LIMIT:
                self._resolved.clear()
            self._resolved[key] = per_role
        if not per_role:
            if action == "subscribe":
                TopicFilter.parse(resource)
            else:
                parse_topic_name(resource)
            return Decision(False, action, resource)
        ctx = variable_values(identity)
        if action == "subscribe":
            requested = TopicFilter.parse(resource)
            for deny, _ in per_role:
                for c in deny:
                    levels = _resolve(c, ctx)
                    if levels is not None and overlaps_levels(levels, requested.levels):
                        return Decision(False, action, resource, c.role, c.index, c.rule)
            for _, allow in per_role:
                for c in allow:
                    levels = _resolve(c, ctx)
                    if levels is not None and covers_levels(levels, requested.levels):
                        return Decision(True, action, resource, c.role, c.index, c.rule)
            return Decision(False, action, resource)
        names = parse_topic_name(resource)
        for deny, _ in per_role:
            for c in deny:
                if _match_name(c, names, ctx):
                    return Decision(False, action, resource, c.role, c.index, c.rule)
        for _, allow in per_role:
            for c in allow:
                if _match_name(c, names, ctx):
                    return Decision(True, action, resource, c.role, c.index, c.rule)
        return Decision(False, action, resource)
