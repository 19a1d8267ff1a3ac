"""Reads on the driver (store/reader.py): the same answers as through the engine, on SQLite
and PostgreSQL; no engine made for them; one SQLite connection shared by threads; driver
errors named like the unit of work's."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from iotsec.app.identity import devices
from iotsec.app.identity.device_reads import get_device
from iotsec.app.pki import cert_records, issuance
from iotsec.app.pki.profile_reads import device_selection
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.config import Settings
from iotsec.errors import HomeNotInitialisedError, StoreError
from iotsec.store.reader import _pyformat, connect_sqlite
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
        sqlite = settings.database_url is None
        direct = _reads(fresh)
        # On SQLite nothing above made the engine: the reads ran on the sqlite3 connection.
        assert (fresh.opened_engine is None) is sqlite
        assert fresh.engine is not None  # now they run on the engine's pool
        assert _reads(fresh) == direct
    finally:
        fresh.close()
    device = direct[0]
    assert device.groups == ("g1", "g2") and device.attributes == {"k": "v"}  # type: ignore[attr-defined]


def test_threads_take_turns_on_the_sqlite_connection(rt: Runtime, settings: Settings
                                                      ) -> None:
    # A thread that reads while another is inside its read transaction waits for it (one
    # sqlite3 connection cannot hold two), and then reads.
    if settings.database_url is not None:
        pytest.skip("the sqlite3 connection serves SQLite homes only")
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
