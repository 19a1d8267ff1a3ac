"""The decision path's registry cache: another process's changes are seen within
hot_cache_seconds, this process's at once, and nothing is read when nothing changed."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from iotsec.app import access
from iotsec.app.devices import NewDevice, add_device
from iotsec.app.lifecycle import change_state
from iotsec.app.registry_cache import DeviceCache
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
    # ...after it, it has asked the store what changed and dropped d1 only.
    assert access.check_cached(rt, "d1", "publish", "devices/d1/t") is None
    assert access.check_cached(rt, "d2", "publish", "devices/d2/t") is not None
    assert not _allowed(rt, "d1")


def test_unknown_devices_are_not_cached(rt: Runtime) -> None:
    cache = DeviceCache(rt)
    with pytest.raises(NotFoundError):
        cache.get(rt, "ghost")
    assert len(cache) == 0
    add_device(rt, NewDevice(id="ghost"))
    assert cache.get(rt, "ghost").id == "ghost"


def test_no_caching_when_the_delay_is_zero(rt: Runtime) -> None:
    rt.settings.hot_cache_seconds = 0
    add_device(rt, NewDevice(id="d1"))
    assert _allowed(rt, "d1")
    assert access.check_cached(rt, "d1", "publish", "devices/d1/t") is None


def test_warm_up_reads_the_registry_and_compiles_the_policy(rt: Runtime) -> None:
    rt.settings.hot_cache_seconds = 60
    for i in range(25):
        add_device(rt, NewDevice(id=f"w{i}"))
    assert access.warm_up(rt) == 25
    assert access.compiled_policy(rt) is not None
    # Every decision is now answered from memory.
    assert all(access.check_cached(rt, f"w{i}", "publish", f"devices/w{i}/t") is not None
               for i in range(25))
