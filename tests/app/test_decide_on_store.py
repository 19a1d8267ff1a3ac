"""The decision ``iotsec authz check`` makes before Typer, once on a reader
(``app/access/decide.decide_on_store``, ADR 0050), and the serving process's decision from
what it keeps in memory (``decisions.check``) give the same answer, or the same refusal, to
any request, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from iotsec.access.policy import Role, Rule, default_device_role
from iotsec.access.quarantine import DEFAULT_TOPIC_PREFIX, default_quarantine_role
from iotsec.app.access import decisions, roles
from iotsec.app.access.decide import decide_on_store
from iotsec.app.detect.actions import quarantine
from iotsec.app.identity import devices
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.runtime import Runtime
from iotsec.errors import IotsecError
from iotsec.identity.registry import DeviceState

ROLES = (
    Role.build("reader", [Rule.parse("allow", "subscribe", "fleet/#"),
                          Rule.parse("deny", "subscribe", "fleet/secret/#"),
                          Rule.parse("allow", "receive", "fleet/#")]),
    Role.build("own", [Rule.parse("allow", "publish", "devices/${device.id}/#"),
                       Rule.parse("allow", "subscribe", "devices/${device.id}/cmd/+")]),
    Role.build("site", [Rule.parse("allow", "publish", "sites/${device.attr.site}/+/data"),
                        Rule.parse("deny", "publish", "sites/+/forbidden/#")]),
    Role.build("by-cert", [Rule.parse("allow", "publish", "certs/${cert.serial}/#")]),
    Role.build("fw", [Rule.parse("allow", "firmware:download", "firmware/${device.group}/#"),
                      Rule.parse("deny", "firmware:download",
                                 "firmware/${device.group}/beta/#")]),
)
#: Devices: their groups, attributes and own roles; and the state each ends in.
DEVICES: tuple[tuple[str, tuple[str, ...], dict[str, str], list[str] | None, str], ...] = (
    ("d-1", ("g1",), {"site": "a"}, ["own", "site"], "pending"),
    ("d-2", ("g1", "g2"), {"site": "b"}, ["own", "by-cert"], "active"),
    ("d-3", ("g2",), {}, None, "pending"),
    ("d-off", ("g1",), {"site": "a"}, ["own"], "disabled"),
    ("d-q", ("g1",), {"site": "a"}, ["own", "site"], "quarantined"),
    ("d-gone", ("g2",), {}, ["own"], "retired"),
)

#: Mostly the fleet's devices; some unregistered or invalid ids.
_ids = st.sampled_from([d[0] for d in DEVICES] * 4 + ["ghost", "not valid!", "D-1", ""])
_actions = st.sampled_from(["publish", "subscribe", "receive", "connect", "firmware:download",
                            "teleport"])
_levels = st.sampled_from(["fleet", "secret", "devices", "d-1", "d-2", "d-q", "cmd", "x",
                           "sites", "a", "b", "forbidden", "data", "certs", "0A1B", "0a1b",
                           "firmware", "g1", "g2", "beta", DEFAULT_TOPIC_PREFIX, "+", "#",
                           "$SYS", ""])
_serials = st.sampled_from([None, "0a1b", "0A1B", "0c", "zz", ""])
#: Every rule a decision may apply: the roles', the built-in quarantine role's and the
#: default device role's.
_BY_NAME = {role.name: role for role in (*ROLES, default_quarantine_role(),
                                          default_device_role())}
_RULES = [r for role in _BY_NAME.values() for r in role.rules]
_GROUP_ROLES = {"g1": "reader", "g2": "fw"}


def _held(device: tuple[str, tuple[str, ...], dict[str, str], list[str] | None, str]
          ) -> list[Rule]:
    """The rules of the roles ``device`` holds, itself or through its groups (a
    quarantined device: the quarantine role's)."""
    _id, groups, _attributes, own, state = device
    names = (["quarantine"] if state == "quarantined" else
             [*(own or ["device"]), *(_GROUP_ROLES[g] for g in groups)])
    return [r for name in names for r in _BY_NAME[name].rules]


@st.composite
def _questions(draw: st.DrawFn) -> tuple[str, str, str, str | None]:
    """A device id, an action, a topic and a certificate serial. Half of them are drawn
    freely; half take the action of one of the roles' rules and a topic made from its
    resource, each variable given the asking device's own value or another, each wildcard
    a level or a filter's own wildcard."""
    device_id = draw(_ids)
    serial = draw(_serials)
    if draw(st.booleans()):
        topic = "/".join(draw(st.lists(_levels, min_size=1, max_size=5)))
        return device_id, draw(_actions), topic, serial
    device = next((d for d in DEVICES if d[0] == device_id), None)
    own = {"${device.id}": device_id,
           "${device.attr.site}": device[2].get("site", "a") if device else "a",
           "${cert.serial}": (serial or "0A1B").upper(),
           "${device.group}": draw(st.sampled_from(device[1])) if device else "g1"}
    held = _held(device) if device and draw(st.integers(0, 3)) else _RULES
    rule = draw(st.sampled_from(held))
    levels: list[str] = []
    for level in rule.resource.split("/"):
        if level in own:
            # Mostly the device's own value, the one its rules are written for.
            levels.append(own[level] if draw(st.integers(0, 3)) else draw(_levels))
        elif level == "+":
            levels.append(draw(_levels))
        elif level == "#":
            levels.extend(draw(st.lists(_levels, max_size=2)))
        else:
            levels.append(level)
    return device_id, rule.action, "/".join(levels or [""]), serial


def _fleet(rt: Runtime) -> None:
    for role in ROLES:
        roles.add_role(rt, role)
    for group, role in _GROUP_ROLES.items():
        roles.add_group(rt, group, [role])
    for device_id, groups, attributes, own, state in DEVICES:
        devices.add_device(rt, devices.NewDevice.parse(device_id, groups, attributes,
                                                       roles=own))
        if state == "active":  # re-enabled after being disabled
            change_state(rt, device_id, DeviceState.DISABLED)
            change_state(rt, device_id, DeviceState.ACTIVE)
        elif state == "quarantined":
            quarantine(rt, device_id, "test")
        elif state != "pending":
            change_state(rt, device_id, DeviceState(state))


def _outcome(ask: Any) -> tuple[Any, ...]:
    try:
        d = ask()
    except IotsecError as exc:
        return ("refused", type(exc).__name__, str(exc))
    return (d.allowed, d.explanation, d.role, d.rule_index)


def test_one_decision_on_a_reader_is_the_serving_processes(rt: Runtime) -> None:
    _fleet(rt)
    assert {d.id: d.state.value for d in (devices.get_device(rt, i) for i, *_ in DEVICES)
            } == {d[0]: d[4] for d in DEVICES}
    seen: set[Any] = set()
    allowed_by: set[str] = set()

    @settings(max_examples=400, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(_questions())
    # One request each role allows, among them through a device's second group.
    @example(("d-1", "subscribe", "fleet/a", None))
    @example(("d-1", "publish", "devices/d-1/x", None))
    @example(("d-1", "publish", "sites/a/x/data", None))
    @example(("d-2", "publish", "certs/0A1B/x", "0a1b"))
    @example(("d-2", "firmware:download", "firmware/g2/v1", None))
    @example(("d-3", "publish", "devices/d-3/t", None))
    @example(("d-q", "publish", "quarantine/d-q/status", None))
    def same(question: tuple[str, str, str, str | None]) -> None:
        device_id, action, topic, serial = question
        served = _outcome(lambda: decisions.check(rt, device_id, action, topic, serial))
        with rt.reading() as reader:
            once = _outcome(lambda: decide_on_store(reader, device_id, action, topic, serial,
                                                    quarantine_topic=DEFAULT_TOPIC_PREFIX))
        assert once == served
        seen.add(served[0])
        if served[0] is True:
            allowed_by.add(served[2])

    same()
    # Both paths answered both ways and refused some, over the examples; every role
    # allowed something.
    assert {True, False, "refused"} <= seen
    assert {r.name for r in ROLES} | {"quarantine"} <= allowed_by, allowed_by

