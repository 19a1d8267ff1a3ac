"""Streamed bulk import (``iotsec.app.identity.bulk_import``), on SQLite and PostgreSQL:
validation naming the line, duplicates in the file and against the store, all or nothing,
bounded batches, roles and the one summary event on the chain."""

from __future__ import annotations

import io
import itertools
import json
import secrets
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, make_url, select
from sqlalchemy.exc import DBAPIError

from iotsec.access.policy import Role, Rule
from iotsec.app.access.roles import add_role
from iotsec.app.events import list_events
from iotsec.app.identity import bulk_import, devices
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.config import Settings
from iotsec.errors import ConflictError, InvalidInputError, StoreError
from iotsec.store import models as m
from iotsec.store.bulk import references_checked
from iotsec.store.db import reading, transaction


def _csv(rows: list[str], header: str = "id,groups,attributes") -> io.StringIO:
    return io.StringIO("\n".join([header, *rows]) + "\n")


def _counts(rt: Runtime) -> dict[str, int]:
    with reading(rt.engine) as conn:
        return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for t in (m.devices, m.device_groups, m.device_roles, m.groups)}


def _imported_events(rt: Runtime) -> list[dict[str, object]]:
    return [dict(e.detail or {}) for e in list_events(rt.engine, kind="device.imported")]


def test_a_csv_is_imported_with_groups_attributes_roles_and_one_event(rt):
    rows = [f"d-{i:03d},fleet;batch-{i % 3},model=t{i % 2};site=north" for i in range(25)]
    assert bulk_import.import_csv(rt, _csv(rows), batch_size=4, actor="cli") == 25
    shown = devices.get_device(rt, "d-007")
    assert shown.groups == ("batch-1", "fleet")
    assert dict(shown.attributes) == {"model": "t1", "site": "north"}
    assert len(devices.list_devices(rt, group="batch-1")) == 8
    with reading(rt.engine) as conn:
        roles = set(conn.execute(select(m.device_roles.c.role_name).where(
            m.device_roles.c.device_id == "d-024")).scalars())
    assert roles == {"device"}  # the least-privilege default role
    assert _imported_events(rt) == [{"count": 25, "first": "d-000", "last": "d-024"}]
    counts = _counts(rt)
    assert counts["devices"] == counts["device_roles"] == 25
    assert counts["device_groups"] == 50
    with reading(rt.engine) as conn:
        # Each device's names are its links (on SQLite the links are made from the names).
        names = dict(conn.execute(select(m.devices.c.id, m.devices.c.group_names)).all())
        links: dict[str, list[str]] = {}
        for device_id, group in conn.execute(select(m.device_groups.c.device_id,
                                                    m.device_groups.c.group_name)):
            links.setdefault(device_id, []).append(group)
        if rt.engine.dialect.name == "sqlite":
            # The import ran with the connection's own checks off: every reference holds.
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
    assert {d: " ".join(sorted(g)) for d, g in links.items()} == names


@pytest.mark.parametrize(("row", "expected"), [
    ("bad/id,g,", "line 4"),
    ("ok-9,bad group,", "line 4"),
    ("ok-9,,novalue", "line 4"),
    ("ok-9,," + "x" * 70_000, "line 4"),
])
def test_a_bad_row_names_its_line_and_imports_nothing(rt, row, expected):
    before = _counts(rt)
    with pytest.raises(InvalidInputError, match=expected):
        bulk_import.import_csv(rt, _csv(["ok-1,g,", "ok-2,g,", row, "ok-3,g,"]), batch_size=1)
    assert _counts(rt) == before
    assert _imported_events(rt) == []


def test_a_duplicate_in_a_later_batch_names_its_line_and_imports_nothing(rt):
    rows = [f"d-{i},g," for i in range(10)] + ["d-3,g,"]
    with pytest.raises(InvalidInputError, match=r"line 12: device 'd-3' appears twice"):
        bulk_import.import_csv(rt, _csv(rows), batch_size=4)
    assert devices.list_devices(rt) == []


def test_a_duplicate_within_one_batch_names_both_lines(rt):
    with pytest.raises(InvalidInputError, match=r"line 4: .*'a' appears twice.*line 2"):
        bulk_import.import_csv(rt, _csv(["a,,", "b,,", "a,,"]))
    assert devices.list_devices(rt) == []


def test_an_id_already_registered_names_its_line_and_imports_nothing(rt):
    devices.add_device(rt, devices.NewDevice.parse("taken", ["old"]))
    before = _counts(rt)
    rows = [f"n-{i},fresh," for i in range(9)] + ["taken,,"]
    with pytest.raises(ConflictError, match=r"line 11: device 'taken' is already registered"):
        bulk_import.import_csv(rt, _csv(rows), batch_size=3)
    assert _counts(rt) == before
    assert devices.get_device(rt, "taken").groups == ("old",)
    assert devices.list_devices(rt, group="fresh") == []


def test_the_file_is_read_one_batch_ahead_at_most(rt):
    """Memory stays bounded: the import consumes its input one batch at a time, writing
    each batch before it reads the next."""
    pulled = 0
    written: list[int] = []

    def rows() -> Iterator[bulk_import.ImportRow]:
        nonlocal pulled
        for i in range(1, 1001):
            pulled += 1
            yield (i, f"s-{i:04d}", (), "{}", None)

    def progress(n: int) -> None:
        written.append(n)
        # Everything pulled so far is written: no row is held beyond the current batch.
        assert pulled == sum(written)

    assert bulk_import.import_rows(rt, rows(), batch_size=64, progress=progress) == 1000
    assert written == [64] * 15 + [40]
    assert _counts(rt)["devices"] == 1000


def test_explicit_roles_are_bound_and_an_unknown_role_refuses_the_import(rt):
    add_role(rt, Role.build("meter", [Rule.parse("allow", "publish", "m/${device.id}")]))
    new = [devices.NewDevice.parse(f"r-{i}", roles=["meter"]) for i in range(5)]
    assert devices.import_devices(rt, new, batch_size=2) == 5
    with reading(rt.engine) as conn:
        assert set(conn.execute(select(m.device_roles.c.role_name)).scalars()) == {"meter"}
    before = _counts(rt)
    with pytest.raises(Exception, match="role 'ghost' does not exist"):
        devices.import_devices(rt, [devices.NewDevice.parse("r-9", roles=["ghost"])])
    assert _counts(rt) == before


def test_a_header_without_id_and_text_that_is_not_utf8(rt):
    with pytest.raises(InvalidInputError, match="'id' column"):
        bulk_import.import_csv(rt, _csv(["x,"], header="name,groups"))
    raw = io.TextIOWrapper(io.BytesIO("id\nok\ncaf\u00e9\n".encode("latin-1")),
                           encoding="utf-8", newline="")
    with pytest.raises(InvalidInputError, match="UTF-8"):
        bulk_import.import_csv(rt, raw)
    assert devices.list_devices(rt) == []


def test_blank_lines_and_missing_columns(rt):
    text = io.StringIO("id\n\nx-1\n\nx-2\n")
    assert bulk_import.import_csv(rt, text) == 2
    assert devices.get_device(rt, "x-2").groups == ()


class _CountingLines(io.StringIO):
    """A CSV stream that counts the lines the import has read from it."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.read_lines = 0

    def __next__(self) -> str:
        line = super().__next__()
        self.read_lines += 1
        return line


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "iotsec-import-reader"]


def test_a_csv_is_read_ahead_by_a_bounded_number_of_batches(rt):
    """The file is read and validated by a thread of its own (on PostgreSQL) while the
    batch before is written, at most a few batches ahead: memory stays bounded whatever
    the file size."""
    stream = _CountingLines("id,groups,attributes\n"
                            + "".join(f"r-{i:04d},g,\n" for i in range(1000)))
    written: list[int] = []
    most_ahead = 0
    alive: list[bool] = []

    def progress(n: int) -> None:
        nonlocal most_ahead
        written.append(n)
        most_ahead = max(most_ahead, stream.read_lines - 1 - sum(written))
        alive.append(bool(_readers()))

    assert bulk_import.import_csv(rt, stream, batch_size=50, progress=progress) == 1000
    assert written == [50] * 20 and stream.read_lines == 1001
    # The reader runs on PostgreSQL only (on SQLite the file is read in turn); it is
    # still reading when the first batch is written, being a few batches ahead at most.
    assert alive[0] == (rt.engine.dialect.name == "postgresql")
    assert any(alive) == alive[0]
    # Queued batches, the one being built and the one the writer holds, no more.
    assert most_ahead <= (bulk_import._AHEAD + 2) * 50
    assert _counts(rt)["devices"] == 1000
    assert _readers() == []


def test_a_refused_import_stops_its_reader_and_writes_nothing(rt):
    devices.add_device(rt, devices.NewDevice.parse("taken"))
    before = _counts(rt)
    # The conflict is in the second batch; the reader is still reading far ahead of it.
    rows = [f"q-{i},g," for i in range(5)] + ["taken,,"] + [f"z-{i},g," for i in range(5000)]
    with pytest.raises(ConflictError, match=r"line 7: device 'taken' is already registered"):
        bulk_import.import_csv(rt, _csv(rows), batch_size=5)
    assert _counts(rt) == before
    assert _readers() == []
    # A bad line far into the file is reported after the batches before it, in order.
    rows = [f"p-{i},g," for i in range(40)] + ["bad id,,"]
    with pytest.raises(InvalidInputError, match="line 42"):
        bulk_import.import_csv(rt, _csv(rows), batch_size=7)
    assert _counts(rt) == before
    assert _readers() == []


def _policy_version(rt: Runtime) -> int:
    with reading(rt.engine) as conn:
        return int(conn.execute(select(m.policy_version.c.version)).scalar_one())


def _another_connection_may_delete(rt: Runtime, statement: str) -> bool:
    """Whether ``statement`` (a deletion) runs on another connection within 300 ms, or
    waits on a lock the import holds; undone either way."""
    with rt.engine.connect() as other:
        other.exec_driver_sql("SET lock_timeout = '300ms'")
        try:
            other.exec_driver_sql(statement)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock not available
                raise
            return False
        finally:
            other.rollback()
    return True


def test_the_groups_and_roles_an_import_links_to_cannot_be_deleted_until_it_ends(rt):
    """The links' foreign keys are checked once per key (the store's per-row checks are
    skipped where the role may): the group and the role that the links name are locked for
    the import's whole transaction, as the store's own check would lock them."""
    if rt.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: another connection cannot delete")
    devices.add_device(rt, devices.NewDevice.parse("old", ["fleet"]))
    with rt.engine.begin() as conn:  # nothing committed names the role: only a lock holds it
        conn.execute(m.device_roles.delete())
    tried: list[tuple[bool, bool]] = []

    def progress(_n: int) -> None:
        if not tried:
            tried.append((
                _another_connection_may_delete(rt, "DELETE FROM groups WHERE name = 'fleet'"),
                _another_connection_may_delete(rt, "DELETE FROM roles WHERE name = 'device'")))

    rows = [f"n-{i},fleet," for i in range(6)]
    version = _policy_version(rt)
    assert bulk_import.import_csv(rt, _csv(rows), batch_size=2, progress=progress) == 6
    assert tried == [(False, False)]
    # The bindings' own trigger may not have fired: the bump is what serving processes see.
    assert _policy_version(rt) > version
    with reading(rt.engine) as conn:
        orphans = conn.execute(
            select(func.count()).select_from(m.device_groups)
            .where(m.device_groups.c.group_name.not_in(select(m.groups.c.name)))).scalar_one()
    assert orphans == 0
    assert len(devices.list_devices(rt, group="fleet")) == 7


def test_references_checked_skips_the_per_row_checks_only_inside_and_only_on_postgresql(rt):
    with rt.engine.begin() as conn:
        with references_checked(conn) as skipped:
            inside = conn.exec_driver_sql("SHOW session_replication_role").scalar_one() \
                if conn.dialect.name == "postgresql" else None
        after = conn.exec_driver_sql("SHOW session_replication_role").scalar_one() \
            if conn.dialect.name == "postgresql" else None
    if rt.engine.dialect.name == "postgresql":
        # The test server's user is a superuser: it may.
        assert (skipped, inside, after) == (True, "replica", "origin")
    else:
        assert skipped is False


@pytest.fixture
def unprivileged(settings, initialised, clock) -> Iterator[Runtime]:
    """A runtime over the same PostgreSQL schema through a role that may read and write
    its tables but may not set ``session_replication_role``."""
    if settings.database_url is None:
        pytest.skip("PostgreSQL only: SQLite has no roles")
    role = f"imp_{secrets.token_hex(4)}"
    schema = settings.database_url.rsplit("search_path%3D", 1)[1]
    admin = create_engine(settings.database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for sql in (f'CREATE ROLE "{role}" LOGIN',
                    f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
                    f'GRANT ALL ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"',
                    f'GRANT ALL ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"'):
            conn.exec_driver_sql(sql)
    url = make_url(settings.database_url).set(username=role).render_as_string(
        hide_password=False)
    runtime = open_runtime(Settings(home=settings.home, database_url=url), clock=clock)
    try:
        yield runtime
    finally:
        runtime.close()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
        admin.dispose()


def test_a_role_that_may_not_skip_the_checks_imports_with_the_stores_own(unprivileged):
    rt = unprivileged
    with rt.engine.begin() as conn, references_checked(conn) as skipped:
        pass
    assert skipped is False
    rows = [f"u-{i},fleet;b-{i % 2},site=x" for i in range(9)]
    assert bulk_import.import_csv(rt, _csv(rows), batch_size=4) == 9
    counts = _counts(rt)
    assert (counts["devices"], counts["device_groups"], counts["device_roles"]) == (9, 18, 9)
    assert _imported_events(rt) == [{"count": 9, "first": "u-0", "last": "u-8"}]


def _foreign_keys(driver: object) -> int:
    return int(driver.execute("PRAGMA foreign_keys").fetchone()[0])  # type: ignore[attr-defined]


def test_a_vouched_unit_of_work_skips_sqlites_reference_checks_inside_it_only(rt):
    """``transaction(..., references_vouched=True)``: on SQLite the connection's foreign-key
    enforcement is off for that unit of work and on again when it ends, committed or not;
    on PostgreSQL nothing changes."""
    orphan = m.device_groups.insert().values(device_id="nobody", group_name="nothing")
    if rt.engine.dialect.name != "sqlite":
        with pytest.raises(ConflictError), transaction(rt.engine, references_vouched=True) as conn:
            conn.execute(orphan)
        return
    with transaction(rt.engine, references_vouched=True) as conn:
        driver = conn.connection.driver_connection
        assert _foreign_keys(driver) == 0
    assert _foreign_keys(driver) == 1
    with pytest.raises(InvalidInputError), transaction(rt.engine, references_vouched=True) as conn:
        driver = conn.connection.driver_connection
        conn.execute(orphan)  # taken: nothing checks it inside
        raise InvalidInputError("refused")
    assert _foreign_keys(driver) == 1
    assert _counts(rt)["device_groups"] == 0  # rolled back with the unit
    with pytest.raises(ConflictError), transaction(rt.engine) as conn:
        conn.execute(orphan)  # every other unit of work checks


def test_links_that_do_not_match_the_rows_names_refuse_the_import(rt, monkeypatch):
    """On SQLite the links are made in the store from the device rows' names and counted:
    a count other than what the batch names refuses the import, and nothing is kept."""
    if rt.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only: PostgreSQL copies the links the batch names")
    made = bulk_import.links_from_names
    monkeypatch.setattr(bulk_import, "links_from_names",
                        lambda conn, **kw: made(conn, **kw) - (kw["link"] is m.device_roles))
    before = _counts(rt)
    with pytest.raises(StoreError, match="made 4 group links and 1 role bindings where its "
                                         "rows name 4 and 2"):
        bulk_import.import_csv(rt, _csv(["a-1,fleet;x,", "a-2,fleet;y,"]), batch_size=5)
    assert _counts(rt) == before


def _links(rt: Runtime) -> dict[str, tuple[list[str], list[str]]]:
    """Each device's group and role links, sorted."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    with reading(rt.engine) as conn:
        for table, column, at in ((m.device_groups, "group_name", 0),
                                  (m.device_roles, "role_name", 1)):
            for device_id, name in conn.execute(select(table.c.device_id, table.c[column])):
                out.setdefault(device_id, ([], []))[at].append(name)
    return {d: (sorted(g), sorted(r)) for d, (g, r) in out.items()}


def test_batches_of_single_names_and_of_several_link_every_name(rt, monkeypatch):
    """Batches whose rows hold at most one name of a kind have their links made from the
    names taken whole (on SQLite), the others through the split; either way every device
    gets exactly the links its row names, in one import."""
    add_role(rt, Role.build("meter", [Rule.parse("allow", "publish", "m/${device.id}")]))
    made = bulk_import.links_from_names
    single: list[tuple[str, bool]] = []

    def spy(conn, **kw):
        single.append((kw["names"], kw["single"]))
        return made(conn, **kw)

    monkeypatch.setattr(bulk_import, "links_from_names", spy)
    groups = [["fleet"], [], ["fleet"], ["fleet", "batch-1"], ["x"], ["y"]]
    roles = [None, ["meter"], None, None, ["meter", "device"], None]
    rows = [devices.NewDevice.parse(f"s-{i}", groups[i], {}, roles=roles[i]) for i in range(6)]
    assert devices.import_devices(rt, rows, batch_size=2) == 6
    assert _links(rt) == {
        "s-0": (["fleet"], ["device"]), "s-1": ([], ["meter"]),
        "s-2": (["fleet"], ["device"]), "s-3": (["batch-1", "fleet"], ["device"]),
        "s-4": (["x"], ["device", "meter"]), "s-5": (["y"], ["device"])}
    if rt.engine.dialect.name == "sqlite":
        assert single == [("group_names", True), ("role_names", True),
                          ("group_names", False), ("role_names", True),
                          ("group_names", True), ("role_names", False)]
        with reading(rt.engine) as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []


def test_large_batches_store_each_rows_columns_with_default_and_explicit_roles(rt):
    """Batches large enough for the store's staged path (ADR 0049), with the values every
    row shares given once: each device row holds its own id, attributes and names, the
    state, times and role names that the rows share, and links equal to its names; a batch
    with rows of different roles stores each row's own."""
    if not any(r["name"] == "meter" for r in _role_names(rt)):
        add_role(rt, Role.build("meter", [Rule.parse("allow", "publish", "m/${device.id}")]))
    count = 700
    lists = [[], ["fleet"], ["batch-2", "fleet"]]
    new = [devices.NewDevice.parse(f"big-{i:04d}", lists[i % 3], {"n": str(i)},
                                   roles=None if i < 350 or i % 4 else ["meter", "device"])
           for i in range(count)]
    assert devices.import_devices(rt, new, batch_size=350) == count
    links = _links(rt)
    with reading(rt.engine) as conn:
        stored = {r.id: r for r in conn.execute(select(m.devices).where(
            m.devices.c.id.like("big-%")))}
    assert len(stored) == count
    assert {(r.state, r.created_at == r.updated_at) for r in stored.values()} == {
        ("pending", True)}
    assert len({r.created_at for r in stored.values()}) == 1
    for i in range(count):
        row = stored[f"big-{i:04d}"]
        roles = ["device"] if i < 350 or i % 4 else ["device", "meter"]
        assert json.loads(row.attributes) == {"n": str(i)}
        assert (row.group_names, row.role_names) == (" ".join(lists[i % 3]), " ".join(roles))
        assert links[row.id] == (lists[i % 3], roles)


_GROUP_LISTS = st.lists(st.sampled_from(["a", "b", "c"]), max_size=3, unique=True)
_ROLE_LISTS = st.one_of(st.none(), st.lists(st.sampled_from(["meter", "device"]), min_size=1,
                                            max_size=2, unique=True))
_RUN = itertools.count()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(_GROUP_LISTS, _ROLE_LISTS), min_size=1, max_size=12),
       batch_size=st.integers(min_value=1, max_value=5))
def test_every_device_gets_exactly_the_links_its_row_names(rt, rows, batch_size):
    """Whatever mix of single and several names the batches hold, each device imported is
    linked to exactly its row's groups and roles (the default role for a row that names
    none), and nothing else."""
    if not any(r["name"] == "meter" for r in _role_names(rt)):
        add_role(rt, Role.build("meter", [Rule.parse("allow", "publish", "m/${device.id}")]))
    run = next(_RUN)
    new = [devices.NewDevice.parse(f"p{run}-{i}", groups, {}, roles=roles)
           for i, (groups, roles) in enumerate(rows)]
    assert devices.import_devices(rt, new, batch_size=batch_size) == len(rows)
    links = _links(rt)
    for i, (groups, roles) in enumerate(rows):
        assert links.get(f"p{run}-{i}", ([], [])) == (sorted(groups), sorted(roles or ["device"]))


def _role_names(rt: Runtime) -> list[dict[str, object]]:
    with reading(rt.engine) as conn:
        return [{"name": n} for n in conn.execute(select(m.roles.c.name)).scalars()]
