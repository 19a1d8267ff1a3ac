"""Requests of the group commit awaited on an event loop (IssuanceGroups.issue_async and
run_async): led by the group commit's own thread, answered after their group's commit,
alone when refused, withdrawn when their waiter is cancelled before a group took them, and
served on after a group failed. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import OperationalError

from iotsec.app.identity import devices
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.monitor.chain import verify
from iotsec.app.pki import cert_records, group_issuance
from iotsec.app.pki.group_issuance import IssuanceGroups, Unit
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError, DeviceStateError, NotFoundError, StoreError
from iotsec.identity.registry import DeviceState
from iotsec.store import models as m
from iotsec.store.direct import Direct
from iotsec.store.direct import Unit as StoreUnit
from tests.group_support import Gate
from tests.helpers import make_csr, make_key


def _events(rt: Runtime, kind: str) -> int:
    with rt.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(m.events)
                                .where(m.events.c.kind == kind)).scalar_one())


def _register(rt: Runtime, ids: list[str]) -> None:
    for device_id in ids:
        devices.add_device(rt, devices.NewDevice.parse(device_id, ["fleet"]))


def _issued(rt: Runtime) -> list[str]:
    return sorted(c.device_id or "" for c in cert_records.list_certificates(rt))


def _gather(*calls: Coroutine[Any, Any, Any]) -> list[Any]:
    async def run() -> list[Any]:
        return list(await asyncio.gather(*calls, return_exceptions=True))

    return asyncio.run(run())


async def _after_a_first(first: Coroutine[Any, Any, Any], groups: IssuanceGroups,
                         rest: list[Coroutine[Any, Any, Any]], held: threading.Event
                         ) -> list[Any]:
    """Run ``first`` until its group's commit is held (``held`` set by a Gate), then the
    others: they wait together for the next group. Each result or exception, in order."""
    tasks = [asyncio.ensure_future(first)]
    while not held.is_set():
        await asyncio.sleep(0.002)
    tasks += [asyncio.ensure_future(call) for call in rest]
    return list(await asyncio.gather(*tasks, return_exceptions=True))


def _two_groups(groups: IssuanceGroups, calls: list[Coroutine[Any, Any, Any]],
                then: Any = None) -> tuple[list[Any], Gate]:
    """The first call alone in a group (its commit held until the others wait), the
    others in the next group."""
    held = threading.Event()

    def commit(n: int) -> None:
        if then is not None:
            then(n)

    gate = Gate(groups, expected=len(calls) - 1, then=commit)

    def hold() -> None:
        if gate.commits == 0:
            held.set()
        gate()

    groups.before_commit = hold
    return asyncio.run(_after_a_first(calls[0], groups, calls[1:], held)), gate


def test_requests_awaited_on_a_loop_share_a_commit(rt: Runtime) -> None:
    ids = [f"a-{i}" for i in range(8)]
    _register(rt, ids)
    groups = IssuanceGroups(rt)
    csrs = {d: make_csr() for d in ids}
    results, gate = _two_groups(groups, [groups.issue_async(d, csrs[d], actor="ops")
                                         for d in ids])
    assert gate.commits == 2  # the first alone, the seven others in one transaction
    assert [r.device_id for r in results] == ids
    assert len({r.serial for r in results}) == len(ids)
    for record in results:
        assert cert_records.get_certificate(rt, record.serial).device_id == record.device_id
    assert _events(rt, "cert.issued") == len(ids)
    # No thread waited per request: one thread of the group commit led both groups.
    assert groups._runner is not None and groups._runner.name == "iotsec-group-commit"
    assert verify(rt).ok


def test_threads_and_a_loop_share_a_group(rt: Runtime) -> None:
    ids = ["t-1", "t-2", "l-1", "l-2", "l-3"]
    _register(rt, ids)
    groups = IssuanceGroups(rt)
    gate = Gate(groups, expected=4)
    held = threading.Event()

    def hold() -> None:
        held.set()
        gate()

    groups.before_commit = hold
    answers: dict[str, Any] = {}

    def in_thread(device_id: str) -> None:
        answers[device_id] = groups.issue(device_id, make_csr())

    # t-1 leads in its thread (its commit held by the gate) while the others wait.
    first = threading.Thread(target=in_thread, args=("t-1",))
    first.start()
    second = threading.Thread(target=in_thread, args=("t-2",))

    async def rest() -> list[Any]:
        while not held.is_set():  # t-1's group (itself alone) is being committed
            await asyncio.sleep(0.005)
        second.start()
        return list(await asyncio.gather(*(groups.issue_async(d, make_csr())
                                           for d in ["l-1", "l-2", "l-3"])))

    looped = asyncio.run(rest())
    first.join(30)
    second.join(30)
    assert gate.commits == 2
    assert [r.device_id for r in looped] == ["l-1", "l-2", "l-3"]
    assert answers["t-1"].device_id == "t-1" and answers["t-2"].device_id == "t-2"
    assert _issued(rt) == sorted(ids)
    assert verify(rt).ok


def test_a_refused_request_on_a_loop_is_answered_alone(rt: Runtime) -> None:
    ids = ["ok-1", "ok-2", "off", "twin"]
    _register(rt, ids)
    change_state(rt, "off", DeviceState.DISABLED)
    groups = IssuanceGroups(rt)
    shared = make_key()
    (ok_1, ok_2, off, nobody, twin), gate = _two_groups(groups, [
        groups.issue_async("ok-1", make_csr()),
        groups.issue_async("ok-2", make_csr(shared)),
        groups.issue_async("off", make_csr()),
        groups.issue_async("nobody", make_csr()),
        groups.issue_async("twin", make_csr(shared))])
    assert gate.commits == 2
    assert isinstance(off, DeviceStateError)
    assert isinstance(nobody, NotFoundError)
    assert isinstance(ok_1, cert_records.CertificateRecord)
    assert sum(isinstance(r, ConflictError) for r in (ok_2, twin)) == 1
    assert len(_issued(rt)) == 2
    assert devices.get_device(rt, "off").state is DeviceState.DISABLED
    assert verify(rt).ok


def test_a_unit_of_work_that_raises_is_rolled_back_alone(rt: Runtime) -> None:
    groups = IssuanceGroups(rt)
    groups.before_commit = Gate(groups, expected=2)
    def add(name: str, fail: bool) -> Any:
        statement = Direct(insert(m.groups).values(name=name, created_at=1_700_000_000))

        def work(conn: StoreUnit, _moment: datetime) -> Unit[str]:
            statement.execute(conn, {}).close()
            if fail:
                raise ValueError("a bug in this unit")
            return Unit(name)
        return work

    (lead, bad, good), gate = _two_groups(groups, [groups.run_async(add("g-lead", False)),
                                                   groups.run_async(add("g-bad", True)),
                                                   groups.run_async(add("g-good", False))])
    assert gate.commits == 2  # g-bad and g-good in one group
    assert (lead, good) == ("g-lead", "g-good")
    assert isinstance(bad, ValueError)
    with rt.engine.connect() as conn:
        names = set(conn.execute(select(m.groups.c.name)).scalars())
    assert {"g-lead", "g-good"} <= names and "g-bad" not in names


class _GaveWay(Exception):
    """PostgreSQL's deadlock as the driver raises it (its SQLSTATE)."""

    sqlstate = "40P01"


def test_a_unit_that_gave_way_runs_again_in_the_threads_next_group(rt: Runtime) -> None:
    groups = IssuanceGroups(rt)
    tries: list[str] = []

    def add(name: str, give_way: int) -> Any:
        statement = Direct(insert(m.groups).values(name=name, created_at=1_700_000_000))

        def work(conn: StoreUnit, _moment: datetime) -> Unit[str]:
            tries.append(name)
            statement.execute(conn, {}).close()
            if tries.count(name) <= give_way:
                raise OperationalError("UPDATE enrolment_secrets", None,
                                       _GaveWay("deadlock detected"))
            return Unit(name)
        return work

    (lead, again, good), gate = _two_groups(groups, [groups.run_async(add("g-lead", 0)),
                                                     groups.run_async(add("g-again", 1)),
                                                     groups.run_async(add("g-good", 0))])
    assert (lead, again, good) == ("g-lead", "g-again", "g-good")
    assert tries.count("g-again") == 2 and gate.commits == 3
    with rt.engine.connect() as conn:
        names = sorted(conn.execute(select(m.groups.c.name)
                                    .where(m.groups.c.name.like("g-%"))).scalars())
    assert names == ["g-again", "g-good", "g-lead"]


def test_a_group_whose_transaction_gave_way_runs_again_on_the_thread(rt: Runtime) -> None:
    """Issuances awaited on an event loop: the group's transaction gives way (PostgreSQL's
    deadlock at the chain's lock) twice; the group commit's thread runs its requests again,
    and each is answered with its one certificate."""
    ids = ["gw-a", "gw-b", "gw-c"]
    _register(rt, ids)
    groups = IssuanceGroups(rt)
    failures = [2]

    def give_way() -> None:
        if failures[0]:
            failures[0] -= 1
            raise OperationalError("SELECT pg_advisory_xact_lock", None,
                                   _GaveWay("deadlock detected"))

    groups.before_commit = give_way
    records = _gather(*(groups.issue_async(d, make_csr()) for d in ids))
    assert [r.device_id for r in records] == ids and failures == [0]
    assert sorted(c.device_id for c in cert_records.list_certificates(rt)) == ids
    assert verify(rt).ok


def _hold_commits(groups: IssuanceGroups) -> tuple[threading.Event, threading.Event]:
    """Hold each group's commit until ``release`` is set; ``held`` is set once one is."""
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        held.set()
        assert release.wait(10)

    groups.before_commit = hold
    return held, release


def test_a_cancelled_waiter_is_withdrawn_before_its_group(rt: Runtime) -> None:
    ids = ["first", "gone", "kept"]
    _register(rt, ids)
    groups = IssuanceGroups(rt)
    held, release = _hold_commits(groups)

    async def run() -> tuple[Any, Any]:
        first = asyncio.ensure_future(groups.issue_async("first", make_csr()))
        while not held.is_set():  # the first group's commit is held in the group's thread
            await asyncio.sleep(0.005)
        gone = asyncio.ensure_future(groups.issue_async("gone", make_csr()))
        kept = asyncio.ensure_future(groups.issue_async("kept", make_csr()))
        while len(groups._waiting) < 2:
            await asyncio.sleep(0.005)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert len(groups._waiting) == 1
        release.set()
        return await first, await kept

    first, kept = asyncio.run(run())
    assert (first.device_id, kept.device_id) == ("first", "kept")
    assert _issued(rt) == ["first", "kept"]  # nothing of the withdrawn request written
    assert devices.get_device(rt, "gone").state is DeviceState.PENDING
    assert verify(rt).ok


def test_a_waiter_cancelled_in_its_group_is_committed_and_the_others_answered(
        rt: Runtime) -> None:
    ids = ["left", "stayed"]
    _register(rt, ids)
    groups = IssuanceGroups(rt)
    held, release = _hold_commits(groups)

    async def run() -> Any:
        left = asyncio.ensure_future(groups.issue_async("left", make_csr()))
        stayed = asyncio.ensure_future(groups.issue_async("stayed", make_csr()))
        while not held.is_set():  # the group that took "left" is being committed
            await asyncio.sleep(0.005)
        left.cancel()
        with pytest.raises(asyncio.CancelledError):
            await left
        release.set()
        return await stayed

    stayed = asyncio.run(run())
    assert stayed.device_id == "stayed"
    # The cancelled request's group committed it: its certificate is in the store.
    assert _issued(rt) == ["left", "stayed"]
    groups.before_commit = None
    _register(rt, ["after"])
    assert _gather(groups.issue_async("after", make_csr()))[0].device_id == "after"


def test_a_failed_group_answers_its_requests_and_the_thread_serves_on(rt: Runtime) -> None:
    ids = [f"f-{i}" for i in range(5)]
    _register(rt, [*ids, "next"])
    groups = IssuanceGroups(rt)

    def crash(commit: int) -> None:
        if commit == 2:
            raise StoreError("the disk holding the database failed (I/O error)")

    results, _ = _two_groups(groups, [groups.issue_async(d, make_csr()) for d in ids],
                             then=crash)
    issued = [r for r in results if isinstance(r, cert_records.CertificateRecord)]
    failed = [r for r in results if isinstance(r, StoreError)]
    assert len(issued) == 1 and len(failed) == len(ids) - 1
    assert _issued(rt) == [issued[0].device_id]
    for device_id in ids:
        if device_id != issued[0].device_id:
            assert devices.get_device(rt, device_id).state is DeviceState.PENDING
    groups.before_commit = None
    assert _gather(groups.issue_async("next", make_csr()))[0].device_id == "next"
    rt.events.flush()
    assert verify(rt).ok


def test_a_failure_outside_the_units_fails_the_group_and_the_thread_serves_on(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    # The group's unit of work cannot begin (the store fails): every request of the group
    # gets that error, and the next group is served.
    _register(rt, ["x-1", "x-2", "x-3"])
    groups = IssuanceGroups(rt)
    real = group_issuance.driver_transaction
    failures = [StoreError("the store is not reachable")]

    def flaky(engine: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(engine)

    monkeypatch.setattr(group_issuance, "driver_transaction", flaky)
    (first,) = _gather(groups.issue_async("x-1", make_csr()))
    assert isinstance(first, StoreError)
    assert _issued(rt) == []
    assert [r.device_id for r in _gather(groups.issue_async("x-2", make_csr()),
                                         groups.issue_async("x-3", make_csr()))] == [
        "x-2", "x-3"]


def test_the_groups_thread_ends_when_idle_and_starts_again(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    _register(rt, ["i-1", "i-2"])
    monkeypatch.setattr(group_issuance, "IDLE_SECONDS", 0.05)
    groups = IssuanceGroups(rt)
    assert _gather(groups.issue_async("i-1", make_csr()))[0].device_id == "i-1"
    runner = groups._runner
    assert runner is not None
    runner.join(10)
    assert not runner.is_alive() and groups._runner is None
    assert _gather(groups.issue_async("i-2", make_csr()))[0].device_id == "i-2"
    assert groups._runner is not None and groups._runner is not runner
