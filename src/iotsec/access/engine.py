"""The decision engine: a compiled policy that answers allow/deny and says why.

Roles are compiled once into per-action tuples of deny and allow rules with their levels
pre-split and their variables pre-located, so a decision costs a dictionary lookup per role
and a short loop per rule, not a scan of the whole policy.

Semantics:
- default deny; an explicit deny that matches beats any allow;
- a device's roles are its own (``Identity.roles``, read with the device) plus those its
  groups are bound to in the policy;
- ``subscribe`` is allowed only if some allow rule's filter covers *every* topic the
  requested filter can match, and no deny rule's filter overlaps it;
- ``publish``, ``receive``, ``connect`` and API actions are checked against a topic name.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import NamedTuple

from iotsec.access.policy import Effect, Identity, Role, Rule, check_identity_value, parse_action
from iotsec.access.topics import (
    Level,
    TopicFilter,
    covers_levels,
    overlaps_levels,
    parse_topic_name,
)

__all__ = ["CompiledPolicy", "Decision", "variable_values"]

_LITERAL, _PLUS, _HASH, _VAR = 0, 1, 2, 3


class Decision(NamedTuple):
    """An answer and what decided it (immutable; cheap to build on the hot path)."""

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
    # Pre-computed for matching topic names without walking every level:
    length: int  # exact number of levels, or (with '#') the minimum
    has_hash: bool
    dollar_guard: bool  # a leading wildcard, which '$' topics escape
    literal_at: Callable[[tuple[str, ...]], object] | None
    literal_values: object
    var_slots: tuple[tuple[int, str], ...]
    #: The first level when it is a literal: a topic whose first level differs cannot match,
    #: which the decision loop checks before calling the matcher.
    first: str | None


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
    has_hash = bool(kinds) and kinds[-1] == _HASH
    literal_pos = [i for i, k in enumerate(kinds) if k == _LITERAL]
    literal_at = operator.itemgetter(*literal_pos) if literal_pos else None
    literal_values: object = (levels[literal_pos[0]] if len(literal_pos) == 1
                              else tuple(levels[i] for i in literal_pos))
    return _Compiled(
        role, index, rule, tuple(kinds), tuple(levels),
        length=len(kinds) - 1 if has_hash else len(kinds), has_hash=has_hash,
        dollar_guard=kinds[0] in (_PLUS, _HASH), literal_at=literal_at,
        literal_values=literal_values,
        var_slots=tuple((i, levels[i]) for i, k in enumerate(kinds) if k == _VAR),
        first=levels[0] if kinds[0] == _LITERAL else None)


#: Valid ``${device.group}`` values by groups tuple (few distinct tuples in a fleet).
_GROUP_VALUES: dict[tuple[str, ...], tuple[str, ...]] = {}
_GROUP_VALUES_LIMIT = 100_000


def _values_of(identity: Identity, name: str) -> tuple[str, ...]:
    if name == "device.group":
        groups = identity.groups
        values = _GROUP_VALUES.get(groups)
        if values is None:
            values = tuple([v for v in map(check_identity_value, groups) if v])
            if len(_GROUP_VALUES) < _GROUP_VALUES_LIMIT:
                _GROUP_VALUES[groups] = values
        return values
    value: str | None
    if name == "device.id":
        value = identity.device_id
    elif name == "cert.cn":
        value = identity.cert_cn
    elif name == "cert.serial":
        value = identity.cert_serial
    elif name.startswith("device.attr."):
        value = identity.attributes.get(name[12:])
    else:
        return ()
    checked = check_identity_value(value)
    return (checked,) if checked else ()


class _Values(dict[str, tuple[str, ...]]):
    """Each variable's acceptable values for one identity, computed on first use
    (invalid values dropped)."""

    __slots__ = ("identity",)

    def __init__(self, identity: Identity) -> None:  # an empty dict needs no dict.__init__
        self.identity = identity

    def __missing__(self, name: str) -> tuple[str, ...]:
        value = _values_of(self.identity, name)
        self[name] = value
        return value


def variable_values(identity: Identity) -> Mapping[str, tuple[str, ...]]:
    return _Values(identity)


def _match_name(c: _Compiled, names: tuple[str, ...], device_id: str | None,
                ctx: Mapping[str, tuple[str, ...]]) -> bool:
    """Does the rule match the topic name? ``device_id`` is the identity's id if it is a
    valid variable value (the common variable, checked without the lazy mapping)."""
    n = len(names)
    if c.has_hash:
        if n < c.length:
            return False
    elif n != c.length:
        return False
    if c.dollar_guard and n and names[0][:1] == "$":
        return False
    if c.literal_at is not None and c.literal_at(names) != c.literal_values:
        return False
    for i, name in c.var_slots:
        if name == "device.id":
            if names[i] != device_id:
                return False
        elif names[i] not in ctx[name]:
            return False
    return True


def _resolve(c: _Compiled, device_id: str | None, ctx: Mapping[str, tuple[str, ...]]
             ) -> Sequence[Level] | None:
    """The rule's levels for this identity: a variable with one value becomes that literal,
    one with several the set of them; None if a variable has no valid value (the rule then
    matches nothing)."""
    if not c.var_slots:
        return c.levels
    levels: list[Level] = list(c.levels)
    for i, name in c.var_slots:
        if name == "device.id":
            if device_id is None:
                return None
            levels[i] = device_id
            continue
        values = ctx[name]
        if not values:
            return None
        levels[i] = values[0] if len(values) == 1 else frozenset(values)
    return levels


_RulePair = tuple[tuple[_Compiled, ...], tuple[_Compiled, ...]]
_NO_RULES: _RulePair = ((), ())
_CACHE_LIMIT = 500_000
#: Views dropped at once when ``_views`` is full, beyond the one that makes room: a
#: sixteenth of the bound, so that dropping is not done on every new view.
_VIEWS_DROPPED = _CACHE_LIMIT // 16


class _View:
    """What decisions for one identity need under one compiled policy, worked out on its
    first decision: the checked ``${device.id}`` value, the other variables' values (filled
    on first use), and the per-action rules of its set of roles (shared by every identity
    holding the same roles)."""

    __slots__ = ("ctx", "device_id", "identity", "roles", "rules")

    def __init__(self, identity: Identity, roles: tuple[str, ...],
                 rules: dict[str, _RulePair]) -> None:
        self.identity = identity
        self.device_id = check_identity_value(identity.device_id)
        self.ctx = _Values(identity)
        self.roles = roles
        self.rules = rules


def _first_filter(rules: tuple[_Compiled, ...], requested: tuple[str, ...], first: str | None,
                  view: _View, relation: Callable[[Sequence[Level], Sequence[str]], bool]
                  ) -> _Compiled | None:
    """The first rule in ``relation`` (overlaps, covers) with the requested filter."""
    for c in rules:
        if first is not None and c.first is not None and c.first != first:
            continue
        levels = _resolve(c, view.device_id, view.ctx)
        if levels is not None and relation(levels, requested):
            return c
    return None


class CompiledPolicy:
    """Roles and their bindings to groups, ready for fast decisions.

    Its size grows with roles and groups, never with devices: a device's own roles come with
    its identity (``Identity.roles``), so compiling does not read the fleet."""

    def __init__(self, roles: Iterable[Role], *,
                 group_roles: Mapping[str, Iterable[str]] | None = None,
                 every_identity: tuple[str, ...] | None = None) -> None:
        """``group_roles``: the roles bound to each group. ``every_identity``: the roles
        every identity holds, whatever its own and its groups' (the policy of quarantined
        devices: the quarantine role only)."""
        self._every = every_identity
        self._rules: dict[str, dict[str, _RulePair]] = {}
        for role in roles:
            by_action: dict[str, tuple[list[_Compiled], list[_Compiled]]] = {}
            for index, rule in enumerate(role.rules):
                deny, allow = by_action.setdefault(rule.action, ([], []))
                (deny if rule.effect is Effect.DENY else allow).append(
                    _compile(role.name, index, rule))
            self._rules[role.name] = {a: (tuple(d), tuple(al)) for a, (d, al) in by_action.items()}
        self._group_roles = {k: tuple(v) for k, v in (group_roles or {}).items()}
        #: Every action some rule names; any other (valid) action has no rules.
        self._actions = frozenset(a for by_action in self._rules.values() for a in by_action)
        self._views: dict[str, _View] = {}
        self._rule_sets: dict[tuple[str, ...], dict[str, _RulePair]] = {}
        self._by_bindings: dict[tuple[tuple[str, ...], tuple[str, ...]],
                                tuple[tuple[str, ...], dict[str, _RulePair]]] = {}

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(self._rules)

    def roles_for(self, identity: Identity) -> tuple[str, ...]:
        if self._every is not None:
            return self._every
        roles = list(dict.fromkeys(identity.roles))
        for group in identity.groups:
            for role in self._group_roles.get(group, ()):
                if role not in roles:
                    roles.append(role)
        return tuple(roles)

    def decide(self, identity: Identity, action: str, resource: str) -> Decision:
        """Allow or deny ``action`` on ``resource`` (a topic name, or a filter for
        ``subscribe``). Invalid input raises; it is never silently denied."""
        view = self._views.get(identity.device_id)
        if view is None or (view.identity is not identity and view.identity != identity):
            view = self._view(identity)
        pair = view.rules.get(action)
        if pair is None:
            pair = self._rules_for(view, action)
        denies, allows = pair
        if action == "subscribe":
            requested = TopicFilter.parse(resource).levels
            if denies or allows:
                # A literal first level rules out every rule with another literal there.
                first = requested[0] if requested[0] not in ("+", "#") else None
                c = _first_filter(denies, requested, first, view, overlaps_levels)
                if c is not None:
                    return Decision(False, action, resource, c.role, c.index, c.rule)
                c = _first_filter(allows, requested, first, view, covers_levels)
                if c is not None:
                    return Decision(True, action, resource, c.role, c.index, c.rule)
            return Decision(False, action, resource)
        names = parse_topic_name(resource)
        if denies or allows:
            # Inline rather than a helper: this is the hottest loop of a decision.
            device_id, ctx, first = view.device_id, view.ctx, names[0]
            for c in denies:
                if (c.first is None or c.first == first) and _match_name(c, names, device_id,
                                                                          ctx):
                    return Decision(False, action, resource, c.role, c.index, c.rule)
            for c in allows:
                if (c.first is None or c.first == first) and _match_name(c, names, device_id,
                                                                          ctx):
                    return Decision(True, action, resource, c.role, c.index, c.rule)
        return Decision(False, action, resource)

    def _view(self, identity: Identity) -> _View:
        # A fleet has few distinct (own roles, groups) pairs: their role set and its rules
        # are worked out once per pair, not once per device.
        key = (identity.roles, identity.groups)
        known = self._by_bindings.get(key)
        if known is None:
            roles = self.roles_for(identity)
            rules = self._rule_sets.get(roles)
            if rules is None:
                if len(self._rule_sets) >= _CACHE_LIMIT:
                    self._rule_sets.clear()
                rules = self._rule_sets[roles] = {}
            if len(self._by_bindings) >= _CACHE_LIMIT:
                self._by_bindings.clear()
            known = self._by_bindings[key] = (roles, rules)
        roles, rules = known
        views = self._views
        if len(views) >= _CACHE_LIMIT:
            # The views made first are dropped, not all of them: a fleet larger than the
            # bound keeps the views of the devices it decided for most recently, instead of
            # making every decision after the bound a first one again. A dict keeps its
            # insertion order; the keys are copied in one call, then dropped (a view another
            # thread makes meanwhile is correct whether it is dropped or kept).
            for device_id in list(islice(views, len(views) - _CACHE_LIMIT + 1
                                         + _VIEWS_DROPPED)):
                views.pop(device_id, None)
        view = views[identity.device_id] = _View(identity, roles, rules)
        return view

    def _rules_for(self, view: _View, action: str) -> _RulePair:
        """The deny and allow rules of the view's roles for ``action`` (role order kept).
        Only actions some rule names are remembered, so unknown actions cannot grow it."""
        if action not in self._actions:
            parse_action(action)
            return _NO_RULES
        pairs = [self._rules[r][action] for r in view.roles
                 if r in self._rules and action in self._rules[r]]
        pair = (tuple(c for deny, _ in pairs for c in deny),
                tuple(c for _, allow in pairs for c in allow))
        view.rules[action] = pair
        return pair
