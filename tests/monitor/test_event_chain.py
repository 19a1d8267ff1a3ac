"""The event log as a hash chain with signed checkpoints, on SQLite and PostgreSQL: every
way of changing the store behind iotsec's back is found and named, and several processes
append to one chain."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta

import pytest
from sqlalchemy import delete, func, insert, select, text, update

from iotsec.app.events import Event, append_events
from iotsec.app.monitor.chain import AUDIT_KEY, checkpoint, verify
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.config import Settings
from iotsec.eventlog.chain import Fault, entry_hash
from iotsec.store import models as m
from iotsec.store.db import transaction
from tests.conftest import FakeClock

E = m.events.c


def _record(rt: Runtime, count: int, kind: str = "test.event") -> None:
    for i in range(count):
        rt.events.record(Event(at=rt.now(), kind=kind, outcome="success", actor=f"dev-{i}",
                               source="10.0.0.1", subject=f"s{i}", detail={"n": i}))
    rt.events.flush()


def _seqs(rt: Runtime) -> list[int]:
    with rt.engine.connect() as conn:
        return [r[0] for r in conn.execute(select(E.seq).order_by(E.id))]


def _faults(rt: Runtime) -> list[tuple[Fault, int | None, bool]]:
    return [(f.fault, f.seq, f.covered) for f in verify(rt).faults]


def test_events_are_chained_in_order_and_verify(rt: Runtime) -> None:
    before = len(_seqs(rt))
    _record(rt, 25)
    seqs = _seqs(rt)
    assert seqs == list(range(1, before + 26))
    report = verify(rt)
    assert report.ok and report.entries == before + 25 and report.head_seq == before + 25
    assert report.checkpointed_seq == 0


def test_events_recorded_together_are_one_append_in_order(rt: Runtime) -> None:
    before = len(_seqs(rt))
    rt.events.record_many([Event(at=rt.now(), kind="test.many", outcome="success",
                                 actor=f"d-{n}") for n in range(40)])
    rt.events.record_many([])
    with rt.engine.connect() as conn:
        actors = [r[0] for r in conn.execute(select(E.actor).where(E.kind == "test.many")
                                             .order_by(E.seq))]
    assert actors == [f"d-{n}" for n in range(40)]
    assert _seqs(rt) == list(range(1, before + 41))
    assert verify(rt).ok


def test_an_event_recorded_in_a_transaction_is_in_the_chain_with_it(rt: Runtime) -> None:
    _record(rt, 2)
    with pytest.raises(RuntimeError), transaction(rt.engine) as conn:
        rt.events.record_in(conn, Event(at=rt.now(), kind="test.rolled-back", outcome="x"))
        raise RuntimeError("the change failed")
    with transaction(rt.engine) as conn:
        rt.events.record_in(conn, Event(at=rt.now(), kind="test.kept", outcome="success"))
    with rt.engine.connect() as conn:
        kinds = [r[0] for r in conn.execute(select(E.kind).order_by(E.seq))]
    assert "test.rolled-back" not in kinds and kinds[-1] == "test.kept"
    assert verify(rt).ok


def test_a_checkpoint_is_signed_once_per_change(rt: Runtime) -> None:
    _record(rt, 5)
    first = checkpoint(rt)
    assert first.made
    rt.events.flush()  # the record of the audit key's use
    assert not checkpoint(rt).made  # only that record since: nothing new to sign
    _record(rt, 1)
    assert checkpoint(rt).made
    report = verify(rt)
    assert report.ok and report.checkpoints == 2 and report.checkpointed_seq > first.seq
    assert rt.keys.exists(AUDIT_KEY)


def test_an_edited_entry_is_named(rt: Runtime) -> None:
    _record(rt, 10)
    checkpoint(rt)
    target = _seqs(rt)[4]
    with transaction(rt.engine) as conn:
        conn.execute(update(m.events).where(E.seq == target).values(outcome="failure"))
    faults = _faults(rt)
    assert faults[0] == (Fault.EDITED, target, True)
    assert any(f[0] is Fault.CHECKPOINT_MISMATCH for f in faults) is False  # stored hash kept


def test_a_deleted_entry_is_named(rt: Runtime) -> None:
    _record(rt, 10)
    checkpoint(rt)
    target = _seqs(rt)[3]
    with transaction(rt.engine) as conn:
        conn.execute(delete(m.events).where(E.seq == target))
    assert _faults(rt)[0] == (Fault.MISSING, target, True)


def test_a_row_written_around_the_chain_is_found(rt: Runtime) -> None:
    _record(rt, 3)
    with transaction(rt.engine) as conn:
        conn.execute(insert(m.events).values(Event(at=rt.now(), kind="forged", outcome="ok")
                                             .row()))
    faults = _faults(rt)
    assert [f[0] for f in faults] == [Fault.UNCHAINED]


def test_reordered_entries_are_found(rt: Runtime) -> None:
    _record(rt, 6)
    a, b = _seqs(rt)[1:3]
    with transaction(rt.engine) as conn:
        conn.execute(update(m.events).where(E.seq == a).values(seq=-1))
        conn.execute(update(m.events).where(E.seq == b).values(seq=a))
        conn.execute(update(m.events).where(E.seq == -1).values(seq=b))
    faults = _faults(rt)
    assert faults[0][0] is Fault.EDITED and faults[0][1] == a


def test_a_rewritten_chain_does_not_match_the_signed_checkpoint(rt: Runtime) -> None:
    """Someone who can write the store edits an entry and recomputes every hash after it:
    the chain is consistent again, but not with what the audit key signed."""
    _record(rt, 8)
    point = checkpoint(rt)
    rt.events.flush()
    target = _seqs(rt)[2]
    with transaction(rt.engine) as conn:
        conn.execute(update(m.events).where(E.seq == target).values(detail='{"n": 999}'))
        rows = conn.execute(select(m.events).order_by(E.seq)).all()
        previous = "0" * 64
        for r in rows:
            digest = entry_hash(previous, r.seq, r.at, r.kind, r.outcome, r.actor, r.source,
                                r.subject, r.detail)
            conn.execute(update(m.events).where(E.id == r.id).values(hash=digest))
            previous = digest
    faults = _faults(rt)
    assert (Fault.CHECKPOINT_MISMATCH, point.seq, True) in faults
    assert all(f[0] is not Fault.EDITED for f in faults)


def test_a_truncated_chain_is_found(rt: Runtime) -> None:
    _record(rt, 6)
    point = checkpoint(rt)
    rt.events.flush()
    with transaction(rt.engine) as conn:
        conn.execute(delete(m.events).where(E.seq >= point.seq - 1))
    assert Fault.TRUNCATED in [f[0] for f in _faults(rt)]


def test_a_forged_checkpoint_signature_is_found(rt: Runtime) -> None:
    _record(rt, 3)
    point = checkpoint(rt)
    with transaction(rt.engine) as conn:
        conn.execute(update(m.event_checkpoints).where(m.event_checkpoints.c.seq == point.seq)
                     .values(signature=b"\x30\x06\x02\x01\x01\x02\x01\x01"))
    assert _faults(rt)[0] == (Fault.CHECKPOINT_SIGNATURE, point.seq, True)


def test_a_failed_append_leaves_no_gap(rt: Runtime) -> None:
    _record(rt, 2)
    with pytest.raises(RuntimeError), transaction(rt.engine) as conn:
        append_events(conn, [Event(at=rt.now(), kind="test.lost", outcome="x").row()])
        raise RuntimeError("rolled back")
    _record(rt, 2)
    seqs = _seqs(rt)
    assert seqs == list(range(1, len(seqs) + 1))


def _append_many(settings_doc: dict[str, object], count: int, tag: str) -> None:
    rt = open_runtime(Settings.model_validate(settings_doc))
    try:
        for i in range(count):
            rt.events.record(Event(at=rt.now(), kind="test.parallel", outcome="success",
                                   actor=tag, detail={"i": i}))
    finally:
        rt.close()


def test_two_processes_append_to_one_chain(rt: Runtime) -> None:
    doc = rt.settings.model_dump(mode="json", exclude_none=True)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(doc, 150, f"p{n}")) for n in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with rt.engine.connect() as conn:
        counts = dict(conn.execute(select(E.actor, func.count()).where(
            E.kind == "test.parallel").group_by(E.actor)).all())
    assert counts == {"p0": 150, "p1": 150}
    seqs = _seqs(rt)
    assert sorted(seqs) == list(range(1, len(seqs) + 1))
    assert verify(rt).ok


def test_events_before_the_chain_existed_are_chained_by_the_migration(rt: Runtime) -> None:
    from tests.helpers import alembic_to

    _record(rt, 4)
    alembic_to(rt, "downgrade", "0010")
    with transaction(rt.engine) as conn:
        for n in range(3):
            conn.execute(text("INSERT INTO events (at, kind, outcome, actor, source, subject, "
                              "detail) VALUES (:at, 'old.event', 'success', NULL, NULL, :s, "
                              "'{}')"), {"at": 1_700_000_000 + n, "s": f"old-{n}"})
    alembic_to(rt, "upgrade", "head")
    seqs = _seqs(rt)
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 7
    report = verify(rt)
    assert report.ok and report.entries == len(seqs)
    _record(rt, 1)  # and the chain goes on from there
    assert verify(rt).ok


def test_the_clock_does_not_matter_to_the_chain(rt: Runtime, clock: FakeClock) -> None:
    _record(rt, 2)
    clock.advance(timedelta(days=-400))
    _record(rt, 2)
    assert verify(rt).ok


def test_device_role_and_group_changes_are_events_of_their_transaction(rt: Runtime) -> None:
    from iotsec.access.policy import Role, Rule
    from iotsec.app.access import roles
    from iotsec.app.identity import devices
    from iotsec.app.identity.lifecycle import change_state
    from iotsec.identity.registry import DeviceState

    roles.add_role(rt, Role.build("sensor", [Rule.parse("allow", "publish", "t/#")], ""),
                   actor="ops")
    devices.add_device(rt, devices.NewDevice.parse("d-1", roles=["sensor"]), actor="ops")
    devices.import_devices(rt, [devices.NewDevice.parse(f"d-{n}") for n in range(2, 6)],
                           actor="ops")
    roles.assign_device(rt, "d-2", ["sensor"], actor="ops")
    roles.add_group(rt, "floor-1", ["sensor"], actor="ops")
    change_state(rt, "d-1", DeviceState.DISABLED, actor="ops")
    change_state(rt, "d-1", DeviceState.RETIRED, actor="ops")
    with pytest.raises(Exception, match="already registered"):
        devices.add_device(rt, devices.NewDevice.parse("d-1"), actor="ops")
    with rt.engine.connect() as conn:
        rows = conn.execute(select(E.kind, E.actor, E.subject, E.detail).where(
            E.actor == "ops").order_by(E.seq)).all()
    assert [(r.kind, r.subject) for r in rows] == [
        ("role.added", "sensor"), ("device.added", "d-1"), ("device.imported", None),
        ("device.roles", "d-2"), ("group.roles", "floor-1"), ("device.state", "d-1"),
        ("device.state", "d-1")]
    assert '"count": 4' in rows[2].detail and '"to": "retired"' in rows[-1].detail
    assert verify(rt).ok


def test_certificate_changes_are_events_of_their_transaction(rt: Runtime) -> None:
    from datetime import timedelta as td

    from iotsec.app.identity import devices
    from iotsec.app.pki import issuance, revocation
    from iotsec.pki.crl import RevocationReason
    from tests.helpers import make_csr

    devices.add_device(rt, devices.NewDevice.parse("c-1"))
    first = issuance.issue_from_csr(rt, "c-1", make_csr(), actor="ops")
    second = issuance.renew(rt, first.serial, make_csr(), grace=td(hours=1), actor="ops")
    revocation.revoke(rt, second.serial, RevocationReason.keyCompromise, actor="ops")
    third = issuance.issue_from_csr(rt, "c-1", make_csr(), actor="ops")
    # The superseded one (its grace period running) and the third.
    assert sorted(revocation.revoke_device(rt, "c-1", actor="ops")) == sorted(
        [first.serial, third.serial])
    with rt.engine.connect() as conn:
        rows = conn.execute(select(E.kind, E.subject, E.detail).where(
            E.kind.like("cert.%"), E.actor == "ops").order_by(E.seq)).all()
    kinds = [(r.kind, r.subject) for r in rows]
    assert kinds[:4] == [("cert.issued", first.serial), ("cert.renewed", second.serial),
                         ("cert.revoked", second.serial), ("cert.issued", third.serial)]
    assert sorted(kinds[4:]) == sorted([("cert.revoked", first.serial),
                                        ("cert.revoked", third.serial)])
    assert '"reason": "keyCompromise"' in rows[2].detail
    assert verify(rt).ok


def test_no_code_writes_events_around_the_chain() -> None:
    """Every writer of the event table goes through append_events (a row written around
    it is found by 'events verify' as unchained)."""
    import re
    from pathlib import Path

    import iotsec

    root = Path(iotsec.__file__).parent
    around = [str(p.relative_to(root)) for p in root.rglob("*.py")
              if p.name != "events.py" or p.parent.name != "app"
              if re.search(r"insert\((m|models)\.events\)", p.read_text())]
    assert around == []


def test_long_hostile_fields_fit_their_columns(rt: Runtime) -> None:
    """An attacker-chosen actor, source or subject, longer than its column and full of
    control characters, is escaped and cut to the column (PostgreSQL would refuse it, and
    the whole batch with it)."""
    hostile = "\x00\x1b[2J" * 200
    rt.events.record(Event(at=rt.now(), kind="auth", outcome="failure", actor=hostile,
                           source=hostile, subject=hostile))
    rt.events.flush()
    with rt.engine.connect() as conn:
        row = conn.execute(select(E.actor, E.source, E.subject).order_by(E.seq.desc())
                           .limit(1)).one()
    assert (len(row.actor), len(row.source), len(row.subject)) == (160, 64, 256)
    assert row.actor.isprintable() and row.actor.startswith("\\x00\\x1b[2J")
    assert verify(rt).ok


def test_a_long_chain_walked_in_stretches_at_once_finds_what_one_walk_finds(rt: Runtime
                                                                            ) -> None:
    """Each stretch goes on from the entry stored before it, so the faults found, their
    order and the chain's head are those of a single walk, at a stretch's edge too."""
    _record(rt, 60)
    checkpoint(rt)
    rt.events.flush()
    _record(rt, 20)
    whole = verify(rt, parallel_from=1)  # walked by several processes
    assert whole.ok and whole.entries == len(_seqs(rt)) and whole.checkpointed_seq > 0
    seqs = _seqs(rt)
    top = seqs[-1]
    # an edit in the middle, an entry deleted in the last stretch and the entry at an edge
    # between stretches (with two processes, positions top // 2 and top // 2 + 1 meet)
    with transaction(rt.engine) as conn:
        conn.execute(update(m.events).where(E.seq == seqs[10]).values(outcome="forged"))
        conn.execute(delete(m.events).where(E.seq == top - 3))
        conn.execute(delete(m.events).where(E.seq == top // 2 + 1))
    alone, at_once = verify(rt, parallel_from=top + 1), verify(rt, parallel_from=1)
    assert [(f.fault, f.seq, f.covered, f.message) for f in at_once.faults] == [
        (f.fault, f.seq, f.covered, f.message) for f in alone.faults]
    assert {f.seq for f in alone.faults} >= {seqs[10], top - 3, top // 2 + 1}
    assert (at_once.entries, at_once.head_seq, at_once.head_hash, at_once.checkpointed_seq) == (
        alone.entries, alone.head_seq, alone.head_hash, alone.checkpointed_seq)
