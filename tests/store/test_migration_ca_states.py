"""Migration 0014 (CA states, the offline-root requests), down and up again on SQLite and
PostgreSQL: a store made before it keeps its CAs, the active ones become ``active`` and an
inactive one ``retiring`` (still trusted: nothing an upgrade does may lock devices out)."""

from __future__ import annotations

from sqlalchemy import inspect, select, text

from iotsec.app.pki import authorities as ca
from iotsec.app.runtime import Runtime
from iotsec.store import migrate
from iotsec.store import models as m
from tests.helpers import alembic_to


def test_states_are_derived_from_active_on_upgrade(rt: Runtime) -> None:
    ca.rotate(rt)  # three CAs: root, a retiring and an active issuing CA
    alembic_to(rt, "downgrade", "0010")
    with rt.engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("authorities")}
        assert not {"state", "state_changed_at", "key_offline"} & columns
        assert not inspect(conn).has_table("ca_requests")
        before = dict(conn.execute(text("SELECT id, active FROM authorities")).all())
    assert sorted(before.values()) == [False, True, True]
    alembic_to(rt, "upgrade", "head")
    assert migrate.is_current(rt.engine)
    with rt.engine.connect() as conn:
        rows = conn.execute(select(m.authorities.c.id, m.authorities.c.state,
                                   m.authorities.c.key_offline)).all()
    assert {r.id: r.state for r in rows} == {
        i: "active" if active else "retiring" for i, active in before.items()}
    assert not any(r.key_offline for r in rows)
    rt.authorities_changed()
    assert rt.authority("issuing").certificate == ca.chain_certificates(rt)[0]
