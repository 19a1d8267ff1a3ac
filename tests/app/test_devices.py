"""Device registry use cases, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from iotsec.app.identity import devices
from iotsec.app.identity.lifecycle import change_state
from iotsec.errors import ConflictError, DeviceStateError, InvalidDeviceIdError, NotFoundError
from iotsec.identity.registry import DeviceState


def test_add_and_show(rt):
    added = devices.add_device(rt, devices.NewDevice.parse(
        "sensor-01", ["site-a", "meters"], ["fw=1.2", "model=x1"]))
    assert added.state is DeviceState.PENDING
    shown = devices.get_device(rt, "sensor-01")
    assert shown.groups == ("meters", "site-a")
    assert dict(shown.attributes) == {"fw": "1.2", "model": "x1"}
    assert shown.created_at == rt.now()


def test_duplicate_is_refused_and_changes_nothing(rt):
    devices.add_device(rt, devices.NewDevice.parse("d1", ["g"]))
    with pytest.raises(ConflictError, match="already registered"):
        devices.add_device(rt, devices.NewDevice.parse("d1", ["other"]))
    assert devices.get_device(rt, "d1").groups == ("g",)
    assert [d.id for d in devices.list_devices(rt, group="other")] == []


@pytest.mark.parametrize("bad", ["a/b", "a b", "x" * 300, "", "-lead", "a+b", "a#b", "é"])
def test_bad_ids_are_refused(rt, bad):
    with pytest.raises(InvalidDeviceIdError):
        devices.NewDevice.parse(bad)
    assert devices.list_devices(rt) == []


def test_unknown_device(rt):
    with pytest.raises(NotFoundError, match="not registered"):
        devices.get_device(rt, "ghost")


def test_list_filters_and_pages(rt):
    for i in range(5):
        devices.add_device(rt, devices.NewDevice.parse(f"d{i}", ["even" if i % 2 == 0 else "odd"]))
    assert [d.id for d in devices.list_devices(rt, group="even")] == ["d0", "d2", "d4"]
    first = devices.list_devices(rt, limit=2)
    rest = devices.list_devices(rt, limit=10, after=first[-1].id)
    assert [d.id for d in first + rest] == [f"d{i}" for i in range(5)]
    assert devices.list_devices(rt, state=DeviceState.ACTIVE) == []


def test_import_is_all_or_nothing(rt):
    devices.add_device(rt, devices.NewDevice.parse("taken"))
    batch = [devices.NewDevice.parse(f"n{i}", ["fleet"]) for i in range(30)]
    with pytest.raises(ConflictError, match="taken"):
        devices.import_devices(rt, [*batch, devices.NewDevice.parse("taken")], batch_size=7)
    assert [d.id for d in devices.list_devices(rt)] == ["taken"]
    seen = []
    assert devices.import_devices(rt, batch, batch_size=7, progress=seen.append) == 30
    assert sum(seen) == 30 and len(seen) == 5
    assert len(devices.list_devices(rt, group="fleet")) == 30


def test_import_refuses_duplicates_inside_the_file(rt):
    rows = [devices.NewDevice.parse("a"), devices.NewDevice.parse("a")]
    with pytest.raises(Exception, match="appears twice"):
        devices.import_devices(rt, rows)
    assert devices.list_devices(rt) == []


def test_lifecycle(rt):
    devices.add_device(rt, devices.NewDevice.parse("d"))
    assert change_state(rt, "d", DeviceState.DISABLED).state is DeviceState.DISABLED
    assert change_state(rt, "d", DeviceState.ACTIVE).state is DeviceState.ACTIVE
    assert change_state(rt, "d", DeviceState.RETIRED).state is DeviceState.RETIRED
    with pytest.raises(DeviceStateError, match="retired"):
        change_state(rt, "d", DeviceState.ACTIVE)
    assert devices.get_device(rt, "d").state is DeviceState.RETIRED
