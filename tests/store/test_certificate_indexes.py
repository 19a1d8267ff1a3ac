"""Migration 0030: the CRL indexes hold the revoked certificates only, so that an issuance
writes neither; the reads that used them (CRLs, metrics, the count per CA) still read an
index, never the whole certificates table, and count as before."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from iotsec.app.console.certificates import recently_revoked
from iotsec.app.monitor import metrics
from iotsec.app.pki import authorities, crl, partition_crl
from iotsec.app.runtime import Runtime
from iotsec.store import migrate
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import ts
from tests.helpers import alembic_to

_CRL_INDEXES = ("ix_certificates_authority_id_revoked_at_not_after_crl_entry",
                "ix_certificates_partition_crl")
DAY = 86400


def _rows(authority_id: int, now: int, count: int) -> list[dict[str, Any]]:
    """Certificates in every state: valid, expiring at each distance, expired, revoked
    (in effect or later, a superseded one's grace), revoked and expired."""
    rows = []
    for n in range(count):
        not_after = now + (n % 11 - 3) * 40 * DAY + n % 7  # from 120 days ago to 280 ahead
        revoked_at = (None, None, None, now - DAY, now + DAY, now)[n % 6]
        rows.append({
            "serial": f"{n:040X}", "authority_id": authority_id, "device_id": None,
            "kind": "device", "profile": "device", "subject": f"d{n}",
            "not_before": now - 400 * DAY, "not_after": not_after, "sha256": f"{n:064x}",
            "der": b"x" * 400, "created_at": now - 400 * DAY, "revoked_at": revoked_at,
            "revocation_reason": None if revoked_at is None else 0,
            "crl_entry": None if revoked_at is None else b"e",
            "replaced_by": None, "spki_sha256": None, "crl_partition": n % 4})
    return rows


def _expected(rows: list[dict[str, Any]], now: int) -> tuple[dict[str, int], dict[int, int]]:
    """The metrics' definition, one certificate at a time."""
    states: dict[str, int] = {}
    expiring = dict.fromkeys(metrics.EXPIRY_DAYS, 0)
    for row in rows:
        revoked = row["revoked_at"] is not None and row["revoked_at"] <= now
        state = "revoked" if revoked else "expired" if row["not_after"] <= now else "valid"
        states[state] = states.get(state, 0) + 1
        for days in metrics.EXPIRY_DAYS:
            if state == "valid" and row["not_after"] <= now + days * DAY:
                expiring[days] += 1
    return states, expiring


@pytest.fixture
def stored(rt: Runtime) -> list[dict[str, Any]]:
    rows = _rows(rt.issuing_id(), ts(rt.now()), 3000)
    with transaction(rt.engine) as conn:
        conn.execute(m.certificates.insert(), rows)
        # This table only: on PostgreSQL a bare ANALYZE takes locks on every table of the
        # database, other tests' schemas included, and can deadlock with their DDL.
        conn.execute(text("ANALYZE certificates"))
    return rows


def _index_sql(rt: Runtime) -> dict[str, str]:
    with reading(rt.engine) as conn:
        if conn.dialect.name == "sqlite":
            found = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                      "AND tbl_name = 'certificates'"))
        else:
            found = conn.execute(text("SELECT indexname, indexdef FROM pg_indexes "
                                      "WHERE tablename = 'certificates' "
                                      "AND schemaname = current_schema()"))
        return {str(name): str(sql or "") for name, sql in found}


def test_the_crl_indexes_hold_the_revoked_certificates_only(
        rt: Runtime, stored: list[dict[str, Any]]) -> None:
    indexes = _index_sql(rt)
    for name in _CRL_INDEXES:
        assert "revoked_at IS NOT NULL" in indexes[name], indexes[name]
    assert "ix_certificates_not_after_authority_id" in indexes
    assert "ix_certificates_not_after" not in indexes
    revoked = sum(1 for r in stored if r["revoked_at"] is not None)
    c = m.certificates.c
    with reading(rt.engine) as conn:
        if conn.dialect.name == "sqlite":
            for name in _CRL_INDEXES:
                entries = conn.execute(text(
                    "SELECT count(*) FROM certificates INDEXED BY " + name  # noqa: S608
                    + " WHERE authority_id = :a AND revoked_at IS NOT NULL"),
                    {"a": rt.issuing_id()}).scalar_one()
                assert entries == revoked
        assert conn.execute(select(func.count()).where(
            c.revoked_at.is_not(None))).scalar_one() == revoked


def test_the_metrics_count_certificates_as_defined(rt: Runtime,
                                                     stored: list[dict[str, Any]]) -> None:
    now = ts(rt.now())
    with reading(rt.engine) as conn:
        got = metrics._certificate_counts(conn, now)
    assert got == _expected(stored, now)
    assert set(got[0]) == {"valid", "expired", "revoked"}


def test_the_counts_are_right_on_an_empty_store(rt: Runtime) -> None:
    with reading(rt.engine) as conn:
        assert metrics._certificate_counts(conn, ts(rt.now())) == (
            {}, dict.fromkeys(metrics.EXPIRY_DAYS, 0))


@pytest.fixture
def traced(rt: Runtime) -> Iterator[list[str]]:
    """Every statement the store's SQLite connections run from now on, values expanded."""
    if rt.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's plans; PostgreSQL's are checked on the CRL query")
    statements: list[str] = []

    def tracing(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.set_trace_callback(statements.append)

    event.listen(rt.engine, "connect", tracing)
    rt.engine.dispose()
    yield statements
    event.remove(rt.engine, "connect", tracing)


def test_the_reads_of_certificates_never_scan_the_table(
        rt: Runtime, stored: list[dict[str, Any]], traced: list[str]) -> None:
    """The complete, delta and partition CRLs, the metrics, the certificates per CA and the
    console's recent revocations, run for real: every statement they send that reads the
    certificates table reads it through an index."""
    rt.settings.crl_url = "http://crl.example.net/crl"
    rt.settings.crl_partitions = 4
    crl.current_crl(rt, force=True)
    crl.current_delta_crl(rt, force=True)
    partition_crl.current_partition_crl(rt, 1, force=True)
    metrics._store_facts(rt)
    counted = {a.id: a.issued for a in authorities.list_authorities(rt)}
    assert counted[rt.issuing_id()] == len(stored)
    assert authorities.get_authority(rt, rt.issuing_id()).issued == len(stored)
    assert recently_revoked(rt, limit=5)
    reads = [s for s in traced if s.lstrip().upper().startswith("SELECT")
             and "FROM certificates" in s]
    assert len(reads) >= 8, traced
    path = str(rt.engine.url.database)
    conn = sqlite3.connect(path)
    try:
        for statement in reads:
            plan = " | ".join(str(r[-1]) for r in conn.execute(
                f"EXPLAIN QUERY PLAN {statement}"))
            scans = [step for step in plan.split(" | ") if step.startswith("SCAN certificates")]
            assert all("INDEX" in step for step in scans), (statement, plan)
    finally:
        conn.close()


def test_postgresql_builds_the_crl_from_the_partial_index(
        rt: Runtime, stored: list[dict[str, Any]]) -> None:
    c = m.certificates.c
    now = ts(rt.now())
    query = select(c.crl_entry).where(c.authority_id == rt.issuing_id(), c.revoked_at <= now,
                                      c.not_after > now)
    with reading(rt.engine) as conn:
        if conn.dialect.name != "postgresql":
            pytest.skip("SQLite's plans are checked with the real reads above")
        compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
        plan = " ".join(str(r[0]) for r in conn.execute(text(f"EXPLAIN {compiled}")))
        assert f"Scan on {_CRL_INDEXES[0]}" in plan or f"Scan using {_CRL_INDEXES[0]}" in plan, plan
        assert "Seq Scan" not in plan, plan
        expected = sum(1 for r in stored if r["revoked_at"] is not None
                       and r["revoked_at"] <= now < r["not_after"])
        assert len(conn.execute(query).all()) == expected


def test_the_migration_goes_down_and_up(rt: Runtime, stored: list[dict[str, Any]]) -> None:
    alembic_to(rt, "downgrade", "0029")
    indexes = _index_sql(rt)
    for name in _CRL_INDEXES:
        assert "WHERE" not in indexes[name].upper(), indexes[name]
    assert "ix_certificates_not_after" in indexes
    alembic_to(rt, "upgrade", "head")
    assert migrate.is_current(rt.engine)
    now = ts(rt.now())
    with reading(rt.engine) as conn:
        assert metrics._certificate_counts(conn, now) == _expected(stored, now)
