"""The engine against a brute-force reference: random small policies, identities and
requests, decided once by ``CompiledPolicy`` and once by naive substitution plus the
reference matcher of ``tests.access.reference``."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from iotsec.access.engine import CompiledPolicy
from iotsec.access.policy import Identity, Role, Rule
from tests.access.reference import (
    ref_covers,
    ref_matches,
    ref_overlaps,
)

LITERALS = ["a", "b", "$x", ""]
VARIABLES = ["${device.id}", "${device.group}"]
# Identity values: valid ones that collide with literals, and ones that must be ignored.
VALUES = ["a", "b", "$x", "+", "#", "", "a/b"]
GROUPS = ["a", "b", "$x", "#", "", "a/b"]
ROLE_NAMES = ["r0", "r1", "r2"]


@st.composite
def patterns(draw: st.DrawFn, alphabet: list[str], max_levels: int = 3) -> str:
    levels = draw(st.lists(st.sampled_from([*alphabet, "+"]), min_size=1, max_size=max_levels))
    if draw(st.booleans()):
        if len(levels) < max_levels and draw(st.booleans()):
            levels.append("#")
        else:
            levels[-1] = "#"
    text = "/".join(levels)
    assume(text != "")
    return text


names = st.lists(st.sampled_from(LITERALS), min_size=1, max_size=4).map("/".join).filter(bool)


@dataclass(frozen=True)
class Case:
    roles: list[Role]
    group_roles: dict[str, list[str]]
    identity: Identity


@st.composite
def cases(draw: st.DrawFn, actions: tuple[str, ...]) -> Case:
    roles = []
    for name in ROLE_NAMES[:draw(st.integers(1, 3))]:
        rules = draw(st.lists(st.builds(
            Rule.parse, st.sampled_from(["allow", "allow", "deny"]), st.sampled_from(actions),
            patterns([*LITERALS, *VARIABLES])), max_size=4))
        roles.append(Role.build(name, rules))
    role_names = st.lists(st.sampled_from(ROLE_NAMES), max_size=3, unique=True)
    device_id = draw(st.sampled_from(VALUES))
    groups = tuple(draw(st.lists(st.sampled_from(GROUPS), max_size=3, unique=True)))
    own = tuple(draw(st.lists(st.sampled_from(ROLE_NAMES), min_size=1, max_size=3,
                              unique=True)))
    return Case(roles=roles,
                group_roles=draw(st.dictionaries(st.sampled_from(GROUPS), role_names,
                                                 max_size=3)),
                identity=Identity(device_id, groups=groups, roles=own))


@st.composite
def near_requests(draw: st.DrawFn, case: Case, wildcards: bool) -> str:
    """A request built from one of the case's rules, so that decisions are not almost all
    default denies: variables take one of the identity's values (valid or not) and
    wildcards are kept or replaced by literals."""
    rules = [r for role in case.roles for r in role.rules]
    if not rules or draw(st.booleans()):
        return draw(patterns(LITERALS) if wildcards else names)
    levels = []
    values = [case.identity.device_id, *case.identity.groups, *LITERALS]
    for level in draw(st.sampled_from(rules)).resource.split("/"):
        if level.startswith("${"):
            levels.append(draw(st.sampled_from(values)))
        elif level == "+" and not (wildcards and draw(st.booleans())):
            levels.append(draw(st.sampled_from(LITERALS)))
        elif level == "#" and not (wildcards and draw(st.booleans())):
            levels += draw(st.lists(st.sampled_from(LITERALS), max_size=2))
        else:
            levels.append(level)
    text = "/".join(levels)
    bad = ("+", "#") if not wildcards else ()
    assume(text != "" and not any(c in text for c in bad))
    if wildcards:
        assume(all(lv in ("+", "#") or ("+" not in lv and "#" not in lv) for lv in levels))
        assume("#" not in levels[:-1])
    return text


def _valid(value: str) -> bool:
    return bool(value) and not any(c in value for c in "+#/\x00")


def substitutions(resource: str, identity: Identity) -> list[str]:
    """The concrete filters a rule stands for: each variable replaced by each of the
    identity's valid values for it; none when a variable has no valid value."""
    options: list[list[str]] = []
    for level in resource.split("/"):
        if level == "${device.id}":
            options.append([identity.device_id])
        elif level == "${device.group}":
            options.append(list(identity.groups))
        else:
            options.append([level])
            continue
        options[-1] = [v for v in options[-1] if _valid(v)]
    return ["/".join(combo) for combo in itertools.product(*options)]


def rules_for(case: Case, action: str) -> list[Rule]:
    bound = list(case.identity.roles)
    for group in case.identity.groups:
        bound += case.group_roles.get(group, [])
    by_name = {r.name: r for r in case.roles}
    return [rule for name in bound if name in by_name for rule in by_name[name].rules
            if rule.action == action]


def reference_publish(case: Case, name: str) -> bool:
    rules = rules_for(case, "publish")
    def hit(effect: str) -> bool:
        return any(ref_matches(f, name) for r in rules if r.effect.value == effect
                   for f in substitutions(r.resource, case.identity))
    return not hit("deny") and hit("allow")


def reference_subscribe(case: Case, requested: str) -> bool:
    rules = rules_for(case, "subscribe")
    denies = [f for r in rules if r.effect.value == "deny"
              for f in substitutions(r.resource, case.identity)]
    allows = [f for r in rules if r.effect.value == "allow"
              for f in substitutions(r.resource, case.identity)]
    if any(ref_overlaps(f, requested) for f in denies):
        return False
    return any(ref_covers(f, requested) for f in allows)


def compile_case(case: Case) -> CompiledPolicy:
    # A fresh policy per example: the engine caches per (device, groups, action).
    return CompiledPolicy(case.roles, group_roles=case.group_roles)


@settings(max_examples=400, deadline=None)
@given(case=cases(("publish", "receive")), data=st.data())
def test_publish_decisions_agree_with_reference(case: Case, data: st.DataObject) -> None:
    policy = compile_case(case)
    for _ in range(4):
        name = data.draw(near_requests(case, wildcards=False))
        decision = policy.decide(case.identity, "publish", name)
        assert decision.allowed is reference_publish(case, name), (name, decision.explanation)
        if decision.rule is not None:
            assert decision.rule.action == "publish"
            assert decision.rule.effect.value == ("allow" if decision.allowed else "deny")


@settings(max_examples=300, deadline=None)
@given(case=cases(("subscribe", "publish")), data=st.data())
def test_subscribe_decisions_agree_with_reference(case: Case, data: st.DataObject) -> None:
    policy = compile_case(case)
    for _ in range(4):
        requested = data.draw(near_requests(case, wildcards=True))
        expected = reference_subscribe(case, requested)
        decision = policy.decide(case.identity, "subscribe", requested)
        assert decision.allowed is expected, (requested, decision.explanation)
        if decision.rule is not None:
            assert decision.rule.action == "subscribe"
            assert decision.rule.effect.value == ("allow" if decision.allowed else "deny")


@settings(max_examples=200, deadline=None)
@given(case=cases(("subscribe",)), data=st.data())
def test_subscribing_to_a_name_is_matching_that_name(case: Case, data: st.DataObject) -> None:
    """A subscription to a plain name is allowed exactly when an allow rule matches that
    name and no deny rule does."""
    policy = compile_case(case)
    for _ in range(4):
        name = data.draw(near_requests(case, wildcards=False))
        rules = rules_for(case, "subscribe")
        allowed = policy.decide(case.identity, "subscribe", name).allowed
        deny_hit = any(ref_matches(f, name) for r in rules if r.effect.value == "deny"
                       for f in substitutions(r.resource, case.identity))
        allow_hit = any(ref_matches(f, name) for r in rules if r.effect.value == "allow"
                        for f in substitutions(r.resource, case.identity))
        assert allowed is (allow_hit and not deny_hit), name
