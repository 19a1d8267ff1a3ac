"""The ACL sent with an EMQX authentication decides exactly as the engine does.

EMQX evaluates it first-match (see ``emqx_model``); what it does not decide goes on to
the HTTP authorizer, which is the engine itself. So for every topic: the ACL's answer,
or else the engine's, must be the engine's answer.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from iotsec.access.engine import CompiledPolicy
from iotsec.access.policy import Identity, Role, Rule, default_device_role
from iotsec.broker.emqx import DENY_ALL, MAX_EXPANSION, compile_acl
from tests.emqx.emqx_model import check_rule, evaluate

ME = Identity(device_id="d1", groups=("g1", "g2"), attributes={"site": "s1"})
WORDS = ["a", "d1", "d2", "g1", "s1", "$SYS", ""]
VARS = ["${device.id}", "${device.group}", "${device.attr.site}"]


def _filter_levels(draw: st.DrawFn, words: list[str], wild: bool) -> list[str]:
    n = draw(st.integers(1, 4))
    levels = [draw(st.sampled_from(words + (["+"] if wild else []))) for _ in range(n)]
    if wild and draw(st.booleans()):
        levels.append("#")
    if levels == [""]:
        levels = ["a"]
    return levels


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    levels = _filter_levels(draw, WORDS + VARS, wild=True)
    return Rule.parse(draw(st.sampled_from(["allow", "allow", "deny"])),
                      draw(st.sampled_from(["publish", "subscribe", "receive", "connect"])),
                      "/".join(levels))


@st.composite
def roles(draw: st.DrawFn) -> list[Role]:
    return [Role.build(f"r{i}", draw(st.lists(rules(), max_size=5)))
            for i in range(draw(st.integers(1, 3)))]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str]:
    action = draw(st.sampled_from(["publish", "subscribe"]))
    levels = _filter_levels(draw, WORDS, wild=action == "subscribe")
    return action, "/".join(levels)


def _policy(held: list[Role]) -> CompiledPolicy:
    return CompiledPolicy(held)


def _assert_equivalent(held: list[Role], action: str, topic: str) -> None:
    policy = _policy(held)
    acl = compile_acl(ME, held)
    for rule in acl.as_json():
        check_rule(rule)
    me = dataclasses.replace(ME, roles=tuple(r.name for r in held))
    expected = policy.decide(me, action, topic).allowed
    answered = evaluate(acl.as_json(), action, topic)
    if answered is None:
        # Passed on to the HTTP authorizer, which answers with the engine.
        assert action not in acl.complete or topic.startswith("$"), (action, topic)
        answered = expected
    assert answered is expected, (action, topic, acl.as_json(), expected)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(roles(), st.lists(requests(), min_size=1, max_size=8))
# The two ways EMQX's subscribe matching is looser than the engine's:
@example([Role.build("r", [Rule.parse("allow", "subscribe", "a/#"),
                           Rule.parse("deny", "subscribe", "a/d2/#")])],
         [("subscribe", "a/+/x"), ("subscribe", "a/d1")])
@example([Role.build("r", [Rule.parse("allow", "subscribe", "a/+")])],
         [("subscribe", "a/#"), ("subscribe", "a/b")])
@example([Role.build("r", [Rule.parse("allow", "subscribe", "+/#")])],
         [("subscribe", "#"), ("subscribe", "$SYS/x")])
def test_acl_decides_as_the_engine(held: list[Role], asked: list[tuple[str, str]]) -> None:
    for action, topic in asked:
        _assert_equivalent(held, action, topic)


@settings(max_examples=500, deadline=None)
@given(requests())
def test_default_role_acl_is_complete_and_exact(asked: tuple[str, str]) -> None:
    held = [default_device_role()]
    acl = compile_acl(ME, held)
    assert acl.complete == {"publish", "subscribe"}
    _assert_equivalent(held, *asked)


def test_default_role_acl_shape() -> None:
    acl = compile_acl(Identity(device_id="dev-7"), [default_device_role()]).as_json()
    assert acl == [
        {"permission": "allow", "action": "publish", "topic": "devices/dev-7/#"},
        {"permission": "allow", "action": "subscribe",
         "topics": ["devices/dev-7/#", "commands/dev-7/#"]},
        {"permission": "deny", "action": "all", "topic": DENY_ALL},
    ]


def test_denies_come_first_and_deny_all_last() -> None:
    role = Role.build("r", [Rule.parse("allow", "publish", "devices/${device.id}/#"),
                            Rule.parse("deny", "publish", "devices/${device.id}/secret")])
    acl = compile_acl(ME, [role]).as_json()
    assert acl[0] == {"permission": "deny", "action": "publish", "topic": "devices/d1/secret"}
    assert acl[-1] == {"permission": "deny", "action": "all", "topic": "#"}
    assert evaluate(acl, "publish", "devices/d1/secret") is False
    assert evaluate(acl, "publish", "devices/d1/t") is True


def test_loose_allow_defers_subscriptions_to_the_engine() -> None:
    # EMQX would let 'sensors/#' through under 'sensors/+'; iotsec must not.
    role = Role.build("r", [Rule.parse("allow", "subscribe", "sensors/+"),
                            Rule.parse("allow", "publish", "sensors/${device.id}")])
    acl = compile_acl(ME, [role])
    assert acl.complete == {"publish"}
    assert evaluate(acl.as_json(), "subscribe", "sensors/#") is None
    assert acl.as_json()[-1] == {"permission": "deny", "action": "publish", "topic": "#"}


def test_overlapping_deny_defers_subscriptions() -> None:
    role = Role.build("r", [Rule.parse("allow", "subscribe", "devices/#"),
                            Rule.parse("deny", "subscribe", "devices/d2/#")])
    acl = compile_acl(ME, [role])
    assert "subscribe" not in acl.complete
    # EMQX's deny does not catch this wildcard, and no allow may then grant it.
    assert evaluate(acl.as_json(), "subscribe", "devices/+/t") is None


def test_variables_without_a_valid_value_match_nothing() -> None:
    who = Identity(device_id="d1", attributes={"site": "a/b"})
    role = Role.build("r", [Rule.parse("allow", "publish", "sites/${device.attr.site}/#")])
    acl = compile_acl(who, [role]).as_json()
    assert acl == [{"permission": "deny", "action": "all", "topic": "#"}]


def test_values_that_emqx_would_read_as_placeholders_are_not_sent() -> None:
    who = Identity(device_id="d1", attributes={"site": "${username}"})
    role = Role.build("r", [Rule.parse("allow", "publish", "sites/${device.attr.site}/x")])
    acl = compile_acl(who, [role])
    assert "publish" not in acl.complete
    assert all("${" not in str(r) for r in acl.as_json())


def test_too_many_expansions_defer_to_the_engine() -> None:
    groups = tuple(f"g{i}" for i in range(MAX_EXPANSION + 1))
    who = Identity(device_id="d1", groups=groups)
    role = Role.build("r", [Rule.parse("allow", "publish", "g/${device.group}/#")])
    assert compile_acl(who, [role]).complete == {"subscribe"}
