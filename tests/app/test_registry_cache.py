"""The decision path's registry cache: another process's changes are seen within
hot_cache_seconds, this process's at once, and nothing is read when nothing changed."""

from __future__ import annotations

import gc
import time
from datetime import timedelta

import pytest

from iotsec.access.policy import Role, Rule
from iotsec.app.access import decisions as access
from iotsec.app.access.roles import add_role, assign_device
from iotsec.app.identity import registry_cache
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.identity.registry_cache import DeviceCache
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.errors import NotFoundError
from iotsec.identity.registry import DeviceState
from tests.conftest import FakeClock


def _allowed(rt: Runtime, device: str) -> bool:
    return access.check(rt, device, "publish", f"devices/{device}/t").allowed


def test_own_changes_apply_at_once(rt: Runtime) -> None:
    rt.settings.hot_cache_seconds = 60
    add_device(rt, NewDevice(id="d1"))
    assert _allowed(rt, "d1")
    assert access.check_cached(rt, "d1", "publish", "devices/d1/t") is not None
    change_state(rt, "d1", DeviceState.DISABLED)
    assert access.check_cached(rt, "d1", "publish", "devices/d1/t") is None
    assert not _allowed(rt, "d1")


def test_another_process_change_is_seen_within_the_delay(rt: Runtime, clock: FakeClock
                                                         ) -> None:
    rt.settings.hot_cache_seconds = 0.2
    add_device(rt, NewDevice(id="d1"))
    add_device(rt, NewDevice(id="d2"))
    assert _allowed(rt, "d1") and _allowed(rt, "d2")
    # A look well after the registrations (recent writes are asked about again for a few
    # seconds, in case their transactions were still open), then both entries are cached.
    clock.advance(timedelta(seconds=30))
    time.sleep(0.25)
    assert _allowed(rt, "d1") and _allowed(rt, "d2")
    time.sleep(0.25)
    assert access.check_cached(rt, "d2", "publish", "devices/d2/t") is not None
    other = open_runtime(rt.settings, clock=clock)
    try:
        clock.advance(timedelta(seconds=3))
        change_state(other, "d1", DeviceState.DISABLED)
    finally:
        other.close()
    # Within the delay the serving process may still answer from memory...
    time.sleep(0.25)
    # ...after it, it has asked the store what changed and read d1 again (d2 untouched).
    before = access._devices(rt)
    assert before is not None
    d2_entry = before.peek(rt, "d2")
    refreshed = access.check_cached(rt, "d1", "publish", "devices/d1/t")
    assert refreshed is not None and not refreshed.allowed
    assert "disabled" in refreshed.explanation
    assert before.peek(rt, "d2") is d2_entry
    assert not _allowed(rt, "d1")

    # Another process binds d2 a role that denies: its entry, read from its row alone
    # (the names the database keeps there, ADR 0041), carries the role within the delay.
    other = open_runtime(rt.settings, clock=clock)
    try:
        clock.advance(timedelta(seconds=3))
        add_role(other, Role.build("muted", [Rule.parse("deny", "publish", "devices/#")]))
        assign_device(other, "d2", ["muted"])
    finally:
        other.close()
    time.sleep(0.25)
    assert not _allowed(rt, "d2")
    entry = before.peek(rt, "d2")
    assert entry is not None and entry.identity.roles == ("device", "muted")


def _other_process_disables(rt: Runtime, clock: FakeClock, ids: list[str]) -> None:
    other = open_runtime(rt.settings, clock=clock)
    try:
        for device_id in ids:
            change_state(other, device_id, DeviceState.DISABLED)
    finally:
        other.close()


def test_a_serving_process_looks_in_the_background(rt: Runtime, clock: FakeClock,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """After warm_up, looks run in their own thread: a request never makes one, and a
    change by another process (here to 40 devices at once) is read again while every
    decision goes on being answered from memory."""
    import threading

    rt.settings.hot_cache_seconds = 1.0  # looks every 1 s, the version every 0.5 s
    for i in range(60):
        add_device(rt, NewDevice(id=f"b{i}"))
    clock.advance(timedelta(seconds=30))
    access.warm_up(rt)
    # The requests arrive together: their entries are read in one batch.
    access.check_many(rt, [access.DecisionRequest(f"b{i}", "publish", f"devices/b{i}/t")
                           for i in range(60)])
    callers: list[str] = []
    original = DeviceCache.revalidate

    def spy(self: DeviceCache, rt_: Runtime, *, force: bool = False) -> None:
        callers.append(threading.current_thread().name)
        original(self, rt_, force=force)

    monkeypatch.setattr(DeviceCache, "revalidate", spy)
    version_readers: list[str] = []
    read_version = access._read_policy_version

    def version_spy(rt_: Runtime) -> int:
        version_readers.append(threading.current_thread().name)
        return read_version(rt_)

    monkeypatch.setattr(access, "_read_policy_version", version_spy)
    clock.advance(timedelta(seconds=30))
    _other_process_disables(rt, clock, [f"b{i}" for i in range(40)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answers = [access.check_cached(rt, f"b{i}", "publish", f"devices/b{i}/t")
                   for i in range(60)]
        assert all(a is not None for a in answers)  # never sent to the store
        if [a.allowed for a in answers if a is not None] == [False] * 40 + [True] * 20:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the background look did not read the changed devices again")
    assert callers and set(callers) == {"iotsec-registry"}
    # The policy version, too, is read by the background thread, not by the requests.
    assert version_readers and set(version_readers) == {"iotsec-registry"}
    refresher = next(t for t in threading.enumerate() if t.name == "iotsec-registry")
    rt.close()
    refresher.join(timeout=5)
    assert not refresher.is_alive()


def test_entries_read_well_after_a_write_are_not_read_again(rt: Runtime, clock: FakeClock,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """A look asks again about writes of the last few seconds; an entry read more than the
    margin after such a write already has it and is not read again."""
    from iotsec.app.identity import registry_cache as cache_module

    rt.settings.hot_cache_seconds = 60
    cache = DeviceCache(rt)
    add_device(rt, NewDevice(id="m1"))
    add_device(rt, NewDevice(id="m2"))
    reread: list[list[str]] = []
    original = cache_module.decision_entries

    def spy(rt_: Runtime, ids: list[str]) -> dict[str, object]:
        reread.append(list(ids))
        return original(rt_, ids)  # type: ignore[return-value]

    monkeypatch.setattr(cache_module, "decision_entries", spy)
    cache.get(rt, "m1")  # read in the second of the write: may predate its commit
    clock.advance(timedelta(seconds=10))
    cache.get(rt, "m2")  # read 10 s after the write: has it
    cache.revalidate(rt, force=True)
    assert reread == [["m1"]]
    cache.revalidate(rt, force=True)  # the writes are now older than the margin
    assert reread == [["m1"]]


def test_unknown_devices_are_not_cached(rt: Runtime) -> None:
    cache = DeviceCache(rt)
    with pytest.raises(NotFoundError):
        cache.get(rt, "ghost")
    assert len(cache) == 0
    add_device(rt, NewDevice(id="ghost"))
    assert cache.get(rt, "ghost").identity.device_id == "ghost"


def test_no_caching_when_the_delay_is_zero(rt: Runtime) -> None:
    rt.settings.hot_cache_seconds = 0
    add_device(rt, NewDevice(id="d1"))
    assert _allowed(rt, "d1")
    assert access.check_cached(rt, "d1", "publish", "devices/d1/t") is None


def test_warm_up_compiles_the_policy_and_reads_no_device(rt: Runtime) -> None:
    rt.settings.hot_cache_seconds = 60
    for i in range(25):
        add_device(rt, NewDevice(id=f"w{i}"))
    access.warm_up(rt)
    assert access.compiled_policy(rt) is not None
    cache = access._devices(rt)
    assert cache is not None and len(cache) == 0
    # A device is read when it is first asked about; afterwards it is answered from memory.
    assert access.check_cached(rt, "w0", "publish", "devices/w0/t") is None
    assert _allowed(rt, "w0")
    assert access.check_cached(rt, "w0", "publish", "devices/w0/t") is not None


def test_the_bound_drops_the_oldest_entries_and_never_serves_a_stale_one(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_cache, "MAX_ENTRIES", 32)
    rt.settings.hot_cache_seconds = 60
    for i in range(60):
        add_device(rt, NewDevice(id=f"c{i:02d}"))
    cache = access._devices(rt)
    assert cache is not None
    access.check_many(rt, [access.DecisionRequest(f"c{i:02d}", "publish", "x")
                           for i in range(30)])
    assert len(cache) == 30
    # Past the bound: the entries read first are dropped (the bound's sixteenth more), the
    # rest stay, so the fleet's recent devices are not all read again.
    access.check_many(rt, [access.DecisionRequest(f"c{i:02d}", "publish", "x")
                           for i in range(30, 40)])
    # 30 + 10 is 8 past the bound: 8 + 32 // 16 are dropped.
    assert len(cache) == 30
    assert all(cache.peek(rt, f"c{i:02d}") is None for i in range(10))
    assert all(cache.peek(rt, f"c{i:02d}") is not None for i in range(10, 40))
    # A device dropped, then changed, is read again as it is now; a cached one that
    # changes is dropped at once (this process's change) and read again too.
    change_state(rt, "c00", DeviceState.DISABLED)
    change_state(rt, "c20", DeviceState.DISABLED)
    for device_id in ("c00", "c20"):
        assert access.check_cached(rt, device_id, "publish", f"devices/{device_id}/t") is None
        assert not _allowed(rt, device_id)
    assert len(access._devices(rt) or ()) <= 32


def test_a_serving_process_lets_a_batch_of_decisions_die_young(rt: Runtime) -> None:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        access.warm_up(rt)
        assert gc.get_threshold() == (access.GC_YOUNG, 10, 10)
        # A larger threshold the process was given is kept.
        gc.set_threshold(4 * access.GC_YOUNG, 10, 10)
        access.warm_up(rt)
        assert gc.get_threshold() == (4 * access.GC_YOUNG, 10, 10)
    finally:
        gc.set_threshold(*saved)
