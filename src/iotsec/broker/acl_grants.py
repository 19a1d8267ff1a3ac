"""A role set's rules as broker access (pure): the rule templates, with their whole-level
variables, that a set of roles grants or denies at the broker.

Mosquitto checks a PUBLISH (``write``) and each delivery (``read``); a message on topic T
is delivered only if the roles allow both ``receive`` on T and ``subscribe`` to T, so the
``read`` templates are the pairwise intersections of the allow-receive and allow-subscribe
filters (:func:`intersect`). An intersection that depends on a variable's value is kept as
a pair and resolved per device by :mod:`iotsec.broker.acl`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from iotsec.access.policy import Effect, Rule
from iotsec.access.topics import overlaps_levels

__all__ = [
    "Grants", "Level", "Template", "Var", "grants", "intersect", "overlap_warnings", "template"
]


@dataclass(frozen=True, slots=True)
class Var:
    """A whole-level policy variable in a rule template."""

    name: str


Level = str | Var
Template = tuple[Level, ...]


@dataclass(slots=True)
class Grants:
    """One role set's rules as broker access: templates, or receive x subscribe pairs whose
    intersection depends on the device (a variable against a literal)."""

    write: list[Template] = field(default_factory=list)
    read: list[Template] = field(default_factory=list)
    read_pairs: list[tuple[Template, Template]] = field(default_factory=list)
    deny: list[Template] = field(default_factory=list)
    deny_actions: list[str] = field(default_factory=list)


def template(rule: Rule) -> Template:
    """The rule's filter as levels, each variable a :class:`Var`."""
    out: list[Level] = []
    for i, level in enumerate(rule.levels):
        if i in rule.variables:
            name = level[2:-1]
            # The broker's username is the certificate CN, which iotsec sets to the device id.
            out.append(Var("device.id" if name == "cert.cn" else name))
        else:
            out.append(level)
    return tuple(out)


class _NeedsDevice(Exception):
    """Two template levels whose intersection depends on the device's values."""


def _intersect_level(x: Level, y: Level) -> Level | None:
    if x == "+":
        return y
    if y == "+":
        return x
    if isinstance(x, Var) or isinstance(y, Var):
        if x == y:
            return x
        raise _NeedsDevice
    return x if x == y else None


def intersect(a: Sequence[Level], b: Sequence[Level]) -> tuple[Level, ...] | None:
    """The filter matching exactly the topics both filters match, or ``None`` if none.

    Raises :class:`_NeedsDevice` when the answer depends on a variable's value."""
    out: list[Level] = []
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x == "#":
            result = tuple(out) + tuple(b[i:])
            break
        if y == "#":
            result = tuple(out) + tuple(a[i:])
            break
        if x is None or y is None:
            return None
        level = _intersect_level(x, y)
        if level is None:
            return None
        out.append(level)
    else:
        result = tuple(out)
    if not result:
        return None
    # A filter whose first level is a wildcard does not match '$' topics.
    first = result[0]
    if isinstance(first, str) and first.startswith("$") and (
            a[0] in ("+", "#") or b[0] in ("+", "#")):
        return None
    return result


def grants(rules: Iterable[Rule]) -> Grants:
    """What ``rules`` (one role set's) grant and deny at the broker."""
    g = Grants()
    receive: list[Template] = []
    subscribe: list[Template] = []
    for rule in rules:
        if rule.action not in ("publish", "receive", "subscribe"):
            continue  # connect is handled per device; API actions are not the broker's
        t = template(rule)
        if rule.effect is Effect.DENY:
            if t not in g.deny:
                g.deny.append(t)
                g.deny_actions.append(rule.action)
        elif rule.action == "publish":
            g.write.append(t)
        elif rule.action == "receive":
            receive.append(t)
        else:
            subscribe.append(t)
    for r in receive:
        for s in subscribe:
            try:
                both = intersect(r, s)
            except _NeedsDevice:
                g.read_pairs.append((r, s))
                continue
            if both is not None and both not in g.read:
                g.read.append(both)
    return g


def overlap_warnings(g: Grants) -> list[str]:
    """Deny rules that, as all-access deny lines, also block an access they do not name."""
    def plain(t: Template) -> tuple[str, ...]:
        return tuple("+" if isinstance(level, Var) else level for level in t)

    out = []
    for t, action in zip(g.deny, g.deny_actions, strict=True):
        other = g.read if action == "publish" else g.write
        kind = "receiving" if action == "publish" else "publishing"
        if any(overlaps_levels(plain(t), plain(o)) for o in other):
            shown = "/".join(f"${{{x.name}}}" if isinstance(x, Var) else x for x in t)
            out.append(f"deny {action} {shown} also blocks {kind} on it at the broker "
                       "(Mosquitto's deny lines deny every access)")
    return out
