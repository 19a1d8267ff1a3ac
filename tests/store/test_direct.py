"""Statements on the driver (store/direct.py) run in the unit of work's transaction, and
their errors are mapped like SQLAlchemy's. SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, func, insert, select

from iotsec.errors import ConflictError
from iotsec.store import models as m
from iotsec.store.db import transaction
from iotsec.store.direct import Direct

_ADD = Direct(insert(m.groups).values(name=bindparam("name"), created_at=bindparam("at")))
_NAMED = Direct(select(m.groups.c.name, m.groups.c.created_at)
                .where(m.groups.c.name == bindparam("name")))


def _count(rt, name: str) -> int:
    with rt.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(m.groups)
                                .where(m.groups.c.name == name)).scalar_one())


def test_rows_come_back_with_their_column_names(rt) -> None:
    with transaction(rt.engine) as conn:
        _ADD.execute(conn, {"name": "direct-1", "at": 1}).close()
        row = _NAMED.first(conn, {"name": "direct-1"})
        assert _NAMED.first(conn, {"name": "absent"}) is None
    assert row is not None and (row.name, row.created_at) == ("direct-1", 1)
    assert _count(rt, "direct-1") == 1


def test_a_unique_violation_is_a_conflict_and_the_transaction_rolls_back(rt) -> None:
    with transaction(rt.engine) as conn:
        _ADD.execute(conn, {"name": "direct-2", "at": 1}).close()
    with pytest.raises(ConflictError), transaction(rt.engine) as conn:
        _ADD.execute(conn, {"name": "direct-3", "at": 1}).close()
        _ADD.execute(conn, {"name": "direct-2", "at": 2}).close()
    assert _count(rt, "direct-3") == 0
    assert _count(rt, "direct-2") == 1


def test_many_rows_in_one_call(rt) -> None:
    with transaction(rt.engine) as conn:
        _ADD.execute_many(conn, [{"name": f"direct-m{i}", "at": i}
                                 for i in range(5)])
    assert sum(_count(rt, f"direct-m{i}") for i in range(5)) == 5
