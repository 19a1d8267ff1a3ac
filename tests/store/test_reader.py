"""Reads on the driver (store/reader.py): the same answers as through the engine, on SQLite
and PostgreSQL; no engine made for them; one SQLite connection shared by threads; driver
errors named like the unit of work's."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from iotsec.access.policy import Role, Rule
from iotsec.app.access import decisions as access
from iotsec.app.access.roles import add_group, add_role
from iotsec.app.identity import device_reads as identity_reads
from iotsec.app.identity import devices
from iotsec.app.identity.device_reads import get_device
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.pki import cert_records, issuance
from iotsec.app.pki.profile_reads import device_selection
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.config import Settings
from iotsec.errors import HomeNotInitialisedError, StoreError
from iotsec.identity.registry import DeviceState
from iotsec.store.db import make_engine
from iotsec.store.reader import _pyformat, connect_sqlite, postgres_arguments
from tests.helpers import make_csr


def _reads(rt: Runtime) -> tuple[object, ...]:
    return (get_device(rt, "d1"), device_selection(rt, "d1"),
            cert_records.list_certificates(rt),
            cert_records.list_certificates(rt, device_id="d1"),
            cert_records.get_certificate(rt, cert_records.list_certificates(rt)[0].serial),
            rt.authority_id("issuing"))


def test_reads_answer_alike_without_and_with_the_engine(rt: Runtime, settings: Settings
                                                         ) -> None:
    devices.add_device(rt, devices.NewDevice.parse("d1", ["g2", "g1"], ["k=v"]))
    issuance.issue_from_csr(rt, "d1", make_csr())
    fresh = open_runtime(settings)
    try:
        direct = _reads(fresh)
        # Nothing above made the engine: the reads ran on the driver's own connection
        # (sqlite3 for SQLite, psycopg for PostgreSQL).
        assert fresh.opened_engine is None and fresh.direct is not None
        assert fresh.direct.postgres is (settings.database_url is not None)
        assert fresh.engine is not None  # now they run on the engine's pool
        assert _reads(fresh) == direct
    finally:
        fresh.close()
    device = direct[0]
    assert device.groups == ("g1", "g2") and device.attributes == {"k": "v"}  # type: ignore[attr-defined]


def test_threads_take_turns_on_the_driver_connection(rt: Runtime, settings: Settings
                                                      ) -> None:
    # A thread that reads while another is inside its read transaction waits for it (one
    # connection cannot hold two), and then reads.
    devices.add_device(rt, devices.NewDevice.parse("d1"))
    fresh = open_runtime(settings)
    try:
        _take_turns(fresh)
    finally:
        fresh.close()


def _take_turns(rt: Runtime) -> None:
    assert rt.opened_engine is None
    inside, release = threading.Event(), threading.Event()
    found: list[object] = []

    def hold() -> None:
        with rt.reading() as reader:
            reader.first("SELECT id FROM devices")
            inside.set()
            release.wait(10)

    def read() -> None:
        try:
            found.append(get_device(rt, "d1").id)
        except BaseException as exc:  # reported below
            found.append(exc)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(10)
    reader_thread = threading.Thread(target=read)
    reader_thread.start()
    reader_thread.join(0.3)
    assert found == []  # still waiting for its turn
    release.set()
    holder.join()
    reader_thread.join()
    assert found == ["d1"]


def test_a_file_that_is_no_database_is_named_so(tmp_path: Path) -> None:
    bad = tmp_path / "iotsec.db"
    bad.write_bytes(b"not a database at all, " * 200)
    with pytest.raises(StoreError, match="not an SQLite database"):
        connect_sqlite(bad).execute("SELECT 1 FROM sqlite_master")


def test_a_store_that_was_never_migrated_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "iotsec.db").touch(mode=0o600)
    with pytest.raises(HomeNotInitialisedError, match="not initialised or not migrated"):
        open_runtime(Settings(home=home))


def test_parameters_are_rewritten_for_psycopg() -> None:
    assert _pyformat("a = :x AND b::text LIKE '50%' AND c = :y_2") == \
        "a = %(x)s AND b::text LIKE '50%%' AND c = %(y_2)s"


def _decisions(rt: Runtime) -> tuple[object, ...]:
    asks = [access.DecisionRequest("d1", "publish", "fleet/g1/d1"),
            access.DecisionRequest("d1", "publish", "fleet/g1/admin"),
            access.DecisionRequest("d2", "publish", "devices/d2/t"),
            access.DecisionRequest("d3", "publish", "devices/d3/t")]
    return (access.check(rt, "d1", "publish", "devices/d1/t"),
            access.check(rt, "d1", "subscribe", "fleet/#", cert_serial="0a"),
            access.check_many(rt, asks), access.current_policy(rt).role_names,
            identity_reads.decision_entries(rt, ["d3", "ghost", "d1", "d2"]))


def test_decisions_read_alike_without_and_with_the_engine(rt: Runtime, settings: Settings
                                                           ) -> None:
    # The decision's reads (policy version, roles, group bindings, registry entries) run on
    # the driver in a process without an engine, and on the pool once it has one.
    add_role(rt, Role.build("fleet", [Rule.parse("allow", "publish", "fleet/${device.group}/#"),
                                      Rule.parse("deny", "publish", "fleet/+/admin")]))
    add_group(rt, "g1", ["fleet"])
    devices.add_device(rt, devices.NewDevice.parse("d1", ["g1"], ["site=north"]))
    devices.add_device(rt, devices.NewDevice.parse("d2", roles=[]))
    devices.add_device(rt, devices.NewDevice.parse("d3"))
    change_state(rt, "d3", DeviceState.DISABLED)
    fresh = open_runtime(settings)
    try:
        direct = _decisions(fresh)
        assert fresh.opened_engine is None
        assert fresh.engine is not None
        with_engine = open_runtime(settings)
        try:
            assert with_engine.engine is not None
            assert _decisions(with_engine) == direct
        finally:
            with_engine.close()
    finally:
        fresh.close()
    one, serial, many, roles, entries = direct
    assert one.allowed and not serial.allowed  # type: ignore[attr-defined]
    assert [d.allowed for d in many] == [True, False, False, False]  # type: ignore[attr-defined]
    assert "disabled" in many[3].explanation  # type: ignore[index]
    assert set(roles) >= {"device", "fleet"}  # type: ignore[arg-type]
    assert sorted(entries) == ["d1", "d2", "d3"]  # type: ignore[arg-type]
    d1 = entries["d1"].identity  # type: ignore[index]
    assert (d1.groups, dict(d1.attributes), d1.roles) == (("g1",), {"site": "north"},
                                                          ("device",))
    assert entries["d2"].identity.roles == ()  # type: ignore[index]


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://u%40x:p%3Aw%2F@db.example.com/d%2Fb?sslmode=require"
    "&application_name=iotsec",
    "postgresql+psycopg://[::1]:5433/db?options=-csearch_path%3Dt_1",
    "postgresql+psycopg:///db",
    "postgresql+psycopg://h:0/d",
    "postgresql+psycopg://",
])
def test_postgres_urls_are_read_as_sqlalchemy_reads_them(url: str) -> None:
    # The direct connection gets exactly the arguments SQLAlchemy's psycopg dialect gives.
    engine = make_engine(url)
    try:
        _args, expected = engine.dialect.create_connect_args(engine.url)
    finally:
        engine.dispose()
    expected.pop("context", None)  # SQLAlchemy's own type adapters
    assert postgres_arguments(url) == expected


@pytest.mark.parametrize("url", [
    "sqlite:////tmp/x.db", "postgresql://u@h/d", "postgresql+psycopg2://u@h/d",
    "postgresql+psycopg://u@h/d?host=a&host=b", "postgresql+psycopg://u@h/d?host=/run/pg",
    "postgresql+psycopg://u@h:x/d", "postgresql+psycopg://u@h/d?a=1&a=2", "not a url",
])
def test_other_urls_are_left_to_the_engine(url: str) -> None:
    assert postgres_arguments(url) is None


def test_an_unreachable_postgresql_is_a_store_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with pytest.raises(StoreError, match="could not be read"):
        open_runtime(Settings(home=home, database_url="postgresql+psycopg://nobody@127.0.0.1:1/"
                              "none?connect_timeout=2"))


@pytest.mark.parametrize("engine", [False, True])
def test_rows_in_chunks_and_a_caller_that_stops_early(rt: Runtime, settings: Settings,
                                                      engine: bool) -> None:
    # Every row, ``size`` at a time (on PostgreSQL as the server sends them); a caller
    # that stops after the first chunk ends the statement: the same transaction and the
    # connection read on as before, with nothing left of the abandoned statement.
    sql = ("SELECT id FROM devices WHERE id IN ('a0', 'a1', 'a2', 'a3', 'a4', 'a5', 'a6') "
           "ORDER BY id")
    for i in range(7):
        devices.add_device(rt, devices.NewDevice(id=f"a{i}"))
    fresh = open_runtime(settings)
    try:
        if engine:
            assert fresh.engine is not None
        with fresh.reading() as reader:
            chunks = list(reader.tuple_chunks(sql, {}, 3))
            assert [[row[0] for row in chunk] for chunk in chunks] == [
                ["a0", "a1", "a2"], ["a3", "a4", "a5"], ["a6"]]
            stopped = reader.tuple_chunks(sql, {}, 2)
            assert [row[0] for row in next(stopped)] == ["a0", "a1"]
            stopped.close()
            assert [row[0] for row in reader.tuples(sql)] == [f"a{i}" for i in range(7)]
        with fresh.reading() as reader:
            assert len(reader.tuples(sql)) == 7
    finally:
        fresh.close()
