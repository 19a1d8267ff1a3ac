"""Decisions for many devices at once (``check_many``), and a device's own roles read with
its registry entry: batched reads, the same answers as ``check``, and role changes followed
within the freshness bound."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from iotsec.access.policy import Role, Rule
from iotsec.app.access import decisions as access
from iotsec.app.access.roles import add_group, add_role, assign_device
from iotsec.app.counters import COUNTERS
from iotsec.app.identity import device_reads, registry_cache
from iotsec.app.identity.device_reads import DecisionEntry, entry_of
from iotsec.app.identity.devices import (
    NewDevice,
    add_device,
    decision_entries,
    get_device,
    get_devices,
)
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.monitor.quarantine import quarantine_devices
from iotsec.app.monitor.selection import Selector
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.errors import InvalidDeviceIdError, InvalidInputError, NotFoundError
from iotsec.identity.registry import DeviceState
from iotsec.store.reader import Reader
from tests.conftest import FakeClock

EXTRA = Role.build("extra", [Rule.parse("allow", "publish", "extra/${device.id}")])
FLEET = Role.build("fleet", [Rule.parse("allow", "publish", "fleet/${device.id}"),
                             Rule.parse("deny", "publish", "devices/+/secret")])


def _ask(device_id: str, topic: str, action: str = "publish") -> access.DecisionRequest:
    return access.DecisionRequest(device_id, action, topic)


def test_a_device_entry_carries_its_own_roles(rt: Runtime) -> None:
    add_role(rt, EXTRA)
    add_device(rt, NewDevice.parse("r1"))
    add_device(rt, NewDevice.parse("r2", roles=["extra", "device"]))
    add_device(rt, NewDevice.parse("r3", roles=[]))
    assert get_device(rt, "r1").roles == ("device",)
    found = get_devices(rt, ["r1", "r2", "r3", "ghost"])
    assert sorted(found) == ["r1", "r2", "r3"]
    assert found["r2"].roles == ("device", "extra")
    assert found["r3"].roles == ()


def test_decision_entries_hold_what_the_registry_holds(rt: Runtime) -> None:
    add_role(rt, EXTRA)
    add_device(rt, NewDevice.parse("e1", groups=["g2", "g1"], attributes={"site": "north"}))
    add_device(rt, NewDevice.parse("e2", roles=["extra", "device"], attributes={"site": "north"}))
    add_device(rt, NewDevice.parse("e3", roles=[]))
    change_state(rt, "e2", DeviceState.ACTIVE)
    full = get_devices(rt, ["e1", "e2", "e3"])
    lean = decision_entries(rt, ["e3", "ghost", "e2", "e1"])
    assert sorted(lean) == ["e1", "e2", "e3"]
    for device_id, (identity, state) in lean.items():
        registered = full[device_id]
        assert (identity.device_id, state, identity.groups, dict(identity.attributes),
                identity.roles) == (registered.id, registered.state, registered.groups,
                                    dict(registered.attributes), registered.roles)
        # The identity the registry describes: no certificate, its id as the name.
        assert identity.cert_cn == device_id and identity.cert_serial is None
        assert lean[device_id] == entry_of(registered)
        # Entries share their parsed attribute sets: they are read-only.
        with pytest.raises(TypeError):
            identity.attributes["site"] = "south"  # type: ignore[index]
    e1, e2, e3 = (lean[d].identity for d in ("e1", "e2", "e3"))
    assert e1.groups == ("g1", "g2") and e2.roles == ("device", "extra") and e3.roles == ()
    assert e1.attributes == {"site": "north"} and e3.attributes == {}
    assert lean["e2"].state is DeviceState.ACTIVE


def test_check_many_answers_as_check_does(rt: Runtime) -> None:
    rt.settings.hot_cache_seconds = 60
    add_role(rt, FLEET)
    add_group(rt, "g", ["fleet"])
    add_device(rt, NewDevice.parse("a1", groups=["g"]))
    add_device(rt, NewDevice.parse("a2"))
    add_device(rt, NewDevice.parse("off", groups=["g"]))
    add_device(rt, NewDevice.parse("q1", groups=["g"]))
    change_state(rt, "a1", DeviceState.ACTIVE)
    change_state(rt, "off", DeviceState.DISABLED)
    quarantine_devices(rt, Selector.parse(["q1"]), actor="test")
    requests = [_ask(d, t) for d in ("a1", "a2", "off", "q1")
                for t in (f"devices/{d}/t", f"fleet/{d}", f"devices/{d}/secret")]
    requests.append(_ask("a1", "devices/a1/#", "subscribe"))
    batch = access.check_many(rt, requests)
    single = [access.check(rt, r.device_id, r.action, r.resource) for r in requests]
    assert batch == single
    allowed = {(r.device_id, r.resource) for r, d in zip(requests, batch, strict=True)
               if d.allowed}
    # Own role (device) and group role (fleet); the group's deny beats the own allow (a2,
    # outside the group, has no such deny); a disabled device gets nothing; a quarantined
    # one only its quarantine topic.
    assert allowed == {("a1", "devices/a1/t"), ("a1", "fleet/a1"), ("a2", "devices/a2/t"),
                       ("a2", "devices/a2/secret"), ("a1", "devices/a1/#")}
    assert "disabled" in batch[6].explanation
    assert "quarantined" in batch[9].explanation


def test_check_many_reads_uncached_entries_in_one_batch(rt: Runtime,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    rt.settings.hot_cache_seconds = 60
    for i in range(30):
        add_device(rt, NewDevice(id=f"b{i}"))
    reads: list[list[str]] = []
    original = registry_cache.entry_parts

    def spy(reader: Reader, ids: list[str], *rest: int) -> Iterator[dict[str, DecisionEntry]]:
        reads.append(list(ids))
        return original(reader, ids, *rest)

    monkeypatch.setattr(registry_cache, "entry_parts", spy)
    monkeypatch.setattr(registry_cache, "get_device", lambda *_: pytest.fail("one by one"))
    first = access.check_many(rt, [_ask(f"b{i}", f"devices/b{i}/t") for i in range(20)])
    assert all(d.allowed for d in first)
    assert reads == [[f"b{i}" for i in range(20)]]
    # Known entries are not read again; only the new ones are, together.
    access.check_many(rt, [_ask(f"b{i}", f"devices/b{i}/t") for i in (3, 25, 3, 26)])
    assert reads[1:] == [["b25", "b26"]]
    assert all(access.check_cached(rt, f"b{i}", "publish", f"devices/b{i}/t") is not None
               for i in [*range(20), 25, 26])


def test_check_many_refuses_bad_input_before_deciding(rt: Runtime) -> None:
    add_device(rt, NewDevice(id="k1"))
    with pytest.raises(NotFoundError, match="ghost"):
        access.check_many(rt, [_ask("k1", "devices/k1/t"), _ask("ghost", "devices/x")])
    with pytest.raises(InvalidDeviceIdError):
        access.check_many(rt, [_ask("k1", "devices/k1/t"), _ask("a/b", "devices/x")])
    with pytest.raises(InvalidInputError, match="at most"):
        access.check_many(rt, [_ask("k1", "devices/k1/t")] * (access.MAX_BATCH + 1))
    assert access.check_many(rt, []) == []


def test_own_role_change_applies_at_once(rt: Runtime) -> None:
    rt.settings.hot_cache_seconds = 60
    add_role(rt, EXTRA)
    add_device(rt, NewDevice(id="c1"))
    assert not access.check(rt, "c1", "publish", "extra/c1").allowed
    assign_device(rt, "c1", ["extra"])
    assert access.check(rt, "c1", "publish", "extra/c1").allowed


def test_role_and_group_changes_keep_the_registry_entries(rt: Runtime) -> None:
    """A role or group binding changes the policy, not any registry entry: the policy is
    compiled again at once, the entries read so far stay in memory."""
    rt.settings.hot_cache_seconds = 60
    add_device(rt, NewDevice.parse("e1", groups=["g"]))
    assert not access.check(rt, "e1", "publish", "fleet/e1").allowed
    cache = access._devices(rt)
    assert cache is not None and len(cache) == 1
    add_role(rt, FLEET)
    add_group(rt, "g", ["fleet"])
    decision = access.check_cached(rt, "e1", "publish", "fleet/e1")
    assert decision is None  # the policy moved: compiled again, off the cached path
    assert access.check(rt, "e1", "publish", "fleet/e1").allowed
    assert access._devices(rt) is cache and len(cache) == 1


def test_another_process_role_change_is_followed_within_the_delay(rt: Runtime,
                                                                  clock: FakeClock) -> None:
    rt.settings.hot_cache_seconds = 0.3
    add_role(rt, EXTRA)
    add_device(rt, NewDevice(id="p1"))
    access.warm_up(rt)
    clock.advance(timedelta(seconds=30))
    assert not access.check_many(rt, [_ask("p1", "extra/p1")])[0].allowed
    other = open_runtime(rt.settings, clock=clock)
    try:
        clock.advance(timedelta(seconds=3))
        assign_device(other, "p1", ["extra"])
    finally:
        other.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # From memory when it can; a moved policy version is compiled by ``check``.
        answer = (access.check_cached(rt, "p1", "publish", "extra/p1")
                  or access.check(rt, "p1", "publish", "extra/p1"))
        if answer.allowed:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the serving process did not follow the device's new role")


@pytest.mark.parametrize("hot_cache_seconds", [60, 0])
def test_entries_decided_as_they_arrive_answer_in_request_order(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch, hot_cache_seconds: float) -> None:
    # More devices than a part (entries arrive a part at a time, in the store's order, not
    # the requests'), some asked about twice, one disabled, one quarantined, some cached.
    monkeypatch.setattr(device_reads.entry_parts, "__defaults__", (7,))
    rt.settings.hot_cache_seconds = hot_cache_seconds
    add_role(rt, FLEET)
    add_group(rt, "g", ["fleet"])
    for i in range(40):
        add_device(rt, NewDevice.parse(f"p{i:02d}", groups=["g"] if i % 2 else []))
    change_state(rt, "p05", DeviceState.DISABLED)
    quarantine_devices(rt, Selector.parse(["p06"]), actor="test")
    access.check_many(rt, [_ask("p30", "devices/p30/t"), _ask("p31", "fleet/p31")])
    order = [f"p{i:02d}" for i in (39, 3, 17, 5, 6, 30, 3, 22, 0, 31, 12, 39, *range(8, 16))]
    requests = [_ask(d, t) for d in order for t in (f"devices/{d}/t", f"fleet/{d}")]
    batch = access.check_many(rt, requests)
    assert batch == [access.check(rt, r.device_id, r.action, r.resource) for r in requests]
    assert [d.resource for d in batch] == [r.resource for r in requests]
    assert not batch[6].allowed and "disabled" in batch[6].explanation
    assert "quarantined" in batch[8].explanation


def test_an_unregistered_device_is_reported_before_a_bad_topic(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_reads.entry_parts, "__defaults__", (2,))
    for i in range(6):
        add_device(rt, NewDevice(id=f"u{i}"))
    counted = dict(COUNTERS.snapshot()[0])
    # The bad topic is met first (its device's entry arrives first), the unregistered
    # device's absence only once every entry has arrived: the latter is reported.
    with pytest.raises(NotFoundError, match="ghost"):
        access.check_many(rt, [_ask("u0", "devices/+/t"),
                               *(_ask(f"u{i}", f"devices/u{i}/t") for i in range(1, 6)),
                               _ask("ghost", "devices/ghost/t")])
    with pytest.raises(InvalidInputError):
        access.check_many(rt, [*(_ask(f"u{i}", f"devices/u{i}/t") for i in range(1, 6)),
                               _ask("u0", "devices/+/t")])
    # Nothing was answered, so nothing was counted.
    assert dict(COUNTERS.snapshot()[0]) == counted
