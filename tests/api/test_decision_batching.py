"""Decisions the HTTP edge cannot make from memory, asked at the same moment, read their
devices' registry entries together, and answer exactly as ``check`` does."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from iotsec.api import decisions as edge
from iotsec.app.access import decisions as access
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.runtime import Runtime
from iotsec.errors import InvalidDeviceIdError, NotFoundError
from iotsec.identity.registry import DeviceState


def test_requests_of_one_moment_are_read_in_one_batch(rt: Runtime,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    rt.settings.hot_cache_seconds = 60
    for i in range(12):
        add_device(rt, NewDevice(id=f"n{i}"))
    change_state(rt, "n3", DeviceState.DISABLED)
    batches: list[list[str]] = []
    original = access.prefetch

    def spy(rt_: Runtime, ids: Sequence[str]) -> None:
        batches.append(list(ids))
        original(rt_, ids)

    monkeypatch.setattr(access, "prefetch", spy)

    async def ask_all() -> list[object]:
        return await asyncio.gather(
            *[edge.decide(rt, f"n{i}", "publish", f"devices/n{i}/t", None) for i in range(12)],
            edge.decide(rt, "ghost", "publish", "devices/ghost/t", None),
            edge.decide(rt, "a/b", "publish", "devices/x/t", None),
            return_exceptions=True)

    answers = asyncio.run(ask_all())
    assert len(batches) == 1
    assert sorted(batches[0]) == sorted([f"n{i}" for i in range(12)] + ["ghost", "a/b"])
    expected = [access.check(rt, f"n{i}", "publish", f"devices/n{i}/t") for i in range(12)]
    assert answers[:12] == expected
    assert [a.allowed for a in expected] == [i != 3 for i in range(12)]
    # Refusals are check's own errors, not a denial.
    assert isinstance(answers[12], NotFoundError)
    assert isinstance(answers[13], InvalidDeviceIdError)
    # Afterwards every registered device is answered from memory.
    assert all(access.check_cached(rt, f"n{i}", "publish", f"devices/n{i}/t") is not None
               for i in range(12))


def test_a_failed_batch_read_falls_back_to_check(rt: Runtime,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    rt.settings.hot_cache_seconds = 60
    add_device(rt, NewDevice(id="f1"))

    def broken(rt_: Runtime, ids: Sequence[str]) -> None:
        raise RuntimeError("the store went away")

    monkeypatch.setattr(access, "prefetch", broken)
    answer = asyncio.run(edge.decide(rt, "f1", "publish", "devices/f1/t", None))
    assert answer == access.check(rt, "f1", "publish", "devices/f1/t")
    assert answer.allowed
