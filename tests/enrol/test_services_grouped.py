"""EST enrolments that arrive together share one transaction (group commit), on SQLite and
PostgreSQL: each still gets its own certificate, device and events; a refused one, even
after it wrote (its device registered, its secret's use consumed), leaves nothing behind
and does not lose the others; a failure of the group's commit answers none of them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, func, insert, select
from sqlalchemy.exc import OperationalError

from iotsec.app.enrol import est, secrets
from iotsec.app.identity.devices import NewDevice, add_device, get_device
from iotsec.app.monitor.chain import verify
from iotsec.app.pki.cert_records import get_certificate, list_certificates
from iotsec.app.pki.group_issuance import MAX_RETRIES, IssuanceGroups, Unit, groups_of
from iotsec.app.pki.issuance import issue_from_csr
from iotsec.app.runtime import Runtime
from iotsec.errors import (
    ConflictError,
    EnrolmentAuthError,
    EnrolmentForbiddenError,
    NotFoundError,
    StoreError,
)
from iotsec.pki.est import read_certs_only
from iotsec.store import models as m
from tests.enrol.services_support import add_template, common_name, csr, events
from tests.group_support import Gate, concurrently
from tests.helpers import make_key

SOURCE = "192.0.2.20"


def _count(rt: Runtime, table: Any, *where: Any) -> int:
    with rt.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where))
                   .scalar_one())


def _spki(key_or_cert: Any) -> bytes:
    public = key_or_cert.public_key()
    return bytes(public.public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo))


def _template_secret(rt: Runtime, uses: int) -> est.BasicCredential:
    add_template(rt, "sensors", groups=["fleet"], id_from="csr-cn")
    info, secret = secrets.create_secret(rt, device_id=None, template="sensors", uses=uses,
                                         expires_in=timedelta(hours=1))
    return est.BasicCredential(info.id, secret)


def test_enrolments_in_one_commit_each_get_their_own_certificate_and_events(
        rt: Runtime) -> None:
    credential = _template_secret(rt, uses=20)
    names = [f"grp-{i}" for i in range(8)]
    keys = {n: make_key() for n in names}
    groups = groups_of(rt)
    gate = Gate(groups, expected=len(names) - 1)
    groups.before_commit = gate
    results = concurrently([
        lambda n=n: est.enrol(rt, credential, csr(keys[n], cn=n), label=None, source=SOURCE)
        for n in names])
    assert gate.commits == 2  # the first alone, the seven others in one transaction
    for name, outcome in zip(names, results, strict=True):
        assert isinstance(outcome, est.Issued), outcome
        (cert,) = read_certs_only(outcome.chain_der)
        assert common_name(cert) == name
        assert _spki(cert) == _spki(keys[name])
        cert.verify_directly_issued_by(rt.authority("issuing").certificate)
        assert get_device(rt, name).groups == ("fleet",)
    assert sorted(c.device_id for c in list_certificates(rt)) == sorted(names)
    assert secrets.get_secret(rt, credential.id).uses_left == 20 - len(names)
    assert sorted(e.actor or "" for e in events(rt, "est.enrolled")) == sorted(names)
    # Each signature's key.use is in the store with its certificate (no flush needed).
    assert _count(rt, m.events, m.events.c.kind == "key.use") >= len(names)
    assert verify(rt).ok


def test_a_refused_enrolment_undoes_its_writes_and_the_group_is_issued(rt: Runtime) -> None:
    credential = _template_secret(rt, uses=20)
    add_template(rt, "other", id_from="csr-cn")
    held = make_key()
    first = est.enrol(rt, credential, csr(held, cn="holder"), label=None, source=SOURCE)
    assert isinstance(first, est.Issued)
    uses_before = secrets.get_secret(rt, credential.id).uses_left
    groups = groups_of(rt)
    groups.before_commit = Gate(groups, expected=4)
    calls: list[Callable[[], Any]] = [
        lambda: est.enrol(rt, credential, csr(cn="lead"), label=None, source=SOURCE),
        lambda: est.enrol(rt, credential, csr(cn="ok-1"), label=None, source=SOURCE),
        # Registers its device and consumes a use, then is refused: the key is held.
        lambda: est.enrol(rt, credential, csr(held, cn="thief"), label=None, source=SOURCE),
        lambda: est.enrol(rt, est.BasicCredential(credential.id, "wrong" * 8), csr(cn="x"),
                          label=None, source=SOURCE),
        lambda: est.enrol(rt, credential, csr(cn="ok-2"), label=None, source=SOURCE),
    ]
    lead, ok_1, thief, wrong, ok_2 = concurrently(calls)
    assert isinstance(thief, EnrolmentForbiddenError)
    assert isinstance(wrong, EnrolmentAuthError)
    for outcome in (lead, ok_1, ok_2):
        assert isinstance(outcome, est.Issued), outcome
    with pytest.raises(NotFoundError):
        get_device(rt, "thief")
    assert secrets.get_secret(rt, credential.id).uses_left == uses_before - 3
    assert sorted(c.device_id for c in list_certificates(rt)) == sorted(
        ["holder", "lead", "ok-1", "ok-2"])
    assert verify(rt).ok


def test_a_conflict_in_the_database_fails_its_unit_alone(rt: Runtime) -> None:
    groups = IssuanceGroups(rt)
    now = 1_700_000_000

    def add_group(name: str, then: Callable[[], None] | None = None
                  ) -> Callable[[Connection, datetime], Unit[str]]:
        def work(conn: Connection, _moment: datetime) -> Unit[str]:
            conn.execute(insert(m.groups).values(name=name, created_at=now))
            if then is not None:
                then()
            return Unit(name)
        return work

    def boom() -> None:
        raise ValueError("a bug in this unit")

    groups.before_commit = Gate(groups, expected=4)
    results = concurrently([
        lambda: groups.run(add_group("g-lead")),
        lambda: groups.run(add_group("g-one")),
        lambda: groups.run(add_group("g-one")),  # a unique violation: a conflict, alone
        lambda: groups.run(add_group("g-bug", boom)),
        lambda: groups.run(add_group("g-two")),
    ])
    assert results[0] == "g-lead" and results[4] == "g-two"
    assert sorted(r for r in results[1:3] if isinstance(r, str)) == ["g-one"]
    assert sum(isinstance(r, ConflictError) for r in results[1:3]) == 1
    assert isinstance(results[3], ValueError)
    with rt.engine.connect() as conn:
        stored = set(conn.execute(select(m.groups.c.name)).scalars())
    assert {"g-lead", "g-one", "g-two"} <= stored and "g-bug" not in stored


class _GaveWay(Exception):
    """PostgreSQL's deadlock as the driver raises it (its SQLSTATE)."""

    sqlstate = "40P01"


def test_a_unit_that_gave_way_to_another_transaction_runs_again(rt: Runtime) -> None:
    """On PostgreSQL a group's locks are held until it commits, and two serving processes'
    groups may deadlock: the unit chosen to give way is rolled back to its savepoint and
    runs again in a later group (at most MAX_RETRIES times), not answered with an error."""
    groups = IssuanceGroups(rt)
    now = 1_700_000_000
    tries: dict[str, int] = {}

    def add_group(name: str, give_way: int) -> Callable[[Connection, datetime], Unit[str]]:
        def work(conn: Connection, _moment: datetime) -> Unit[str]:
            tries[name] = tries.get(name, 0) + 1
            conn.execute(insert(m.groups).values(name=name, created_at=now))
            if tries[name] <= give_way:  # written, then the deadlock: rolled back
                raise OperationalError("UPDATE enrolment_secrets", None,
                                       _GaveWay("deadlock detected"))
            return Unit(name)
        return work

    groups.before_commit = Gate(groups, expected=3)
    results = concurrently([
        lambda: groups.run(add_group("g-lead", 0)),
        lambda: groups.run(add_group("g-twice", 2)),
        lambda: groups.run(add_group("g-never", MAX_RETRIES + 5)),
        lambda: groups.run(add_group("g-one", 0)),
    ])
    assert results[0] == "g-lead" and results[1] == "g-twice" and results[3] == "g-one"
    assert tries["g-twice"] == 3
    # Past its retries, it is answered with the database's error.
    assert isinstance(results[2], StoreError) and tries["g-never"] == MAX_RETRIES + 1
    with rt.engine.connect() as conn:
        stored = sorted(conn.execute(select(m.groups.c.name)
                                     .where(m.groups.c.name.like("g-%"))).scalars())
    assert stored == ["g-lead", "g-one", "g-twice"]


def test_a_group_whose_transaction_gave_way_runs_again(rt: Runtime) -> None:
    """An issuance in a group has no savepoint, and the chain's lock and the commit come
    after every request: PostgreSQL's deadlock there fails the group's transaction. Nothing
    of it was written, so each request runs again in a later group (at most MAX_RETRIES
    times) instead of being answered with the error."""
    groups = IssuanceGroups(rt)
    names = [f"gw-{i}" for i in range(4)]
    for name in names:
        add_device(rt, NewDevice.parse(name))
    failures = {"left": 2}

    def give_way() -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("SELECT pg_advisory_xact_lock", None,
                                   _GaveWay("deadlock detected"))

    groups.before_commit = give_way
    results = concurrently([lambda n=n: groups.issue(n, csr(cn=n)) for n in names])
    assert [r.device_id for r in results] == names
    assert failures["left"] == 0
    assert sorted(c.device_id for c in list_certificates(rt)) == names
    assert verify(rt).ok
    # Past its retries, the request is answered with the database's error.
    failures["left"] = MAX_RETRIES + 5
    (last,) = concurrently([lambda: groups.issue("gw-0", csr(cn="gw-0"))])
    assert isinstance(last, StoreError)
    assert failures["left"] == 4  # tried MAX_RETRIES + 1 times
    assert len(list_certificates(rt)) == len(names)


def test_a_failed_group_commit_answers_no_enrolment_of_it(rt: Runtime) -> None:
    credential = _template_secret(rt, uses=20)
    names = [f"lost-{i}" for i in range(5)]
    groups = groups_of(rt)

    def crash(commit: int) -> None:
        if commit == 2:
            raise StoreError("the disk holding the database failed (I/O error)")

    groups.before_commit = Gate(groups, expected=len(names) - 1, then=crash)
    results = concurrently([
        lambda n=n: est.enrol(rt, credential, csr(cn=n), label=None, source=SOURCE)
        for n in names])
    issued = [r for r in results if isinstance(r, est.Issued)]
    assert len(issued) == 1
    assert all(isinstance(r, StoreError) for r in results if not isinstance(r, est.Issued))
    assert [c.device_id for c in list_certificates(rt)] == [issued[0].record.device_id]
    assert secrets.get_secret(rt, credential.id).uses_left == 19
    for name in names:
        if name != issued[0].record.device_id:
            with pytest.raises(NotFoundError):
                get_device(rt, name)
    x509.load_der_x509_certificate(issued[0].record.der)
    assert verify(rt).ok


def test_re_enrolments_in_one_commit_each_renew_their_own_device(rt: Runtime) -> None:
    names = [f"renew-{i}" for i in range(6)]
    chains: dict[str, est.ClientChain] = {}
    old: dict[str, str] = {}
    for name in names:
        add_device(rt, NewDevice.parse(name))
        record = issue_from_csr(rt, name, csr(make_key()))
        chains[name] = est.ClientChain((x509.load_der_x509_certificate(record.der),))
        old[name] = record.serial
    held = make_key()
    add_device(rt, NewDevice.parse("holder"))
    issue_from_csr(rt, "holder", csr(held))
    groups = groups_of(rt)
    gate = Gate(groups, expected=len(names))
    groups.before_commit = gate
    calls: list[Callable[[], Any]] = [
        lambda n=n: est.reenrol(rt, chains[n], csr(), label=None, source=SOURCE)
        for n in names]
    # The same device twice at once: one renews, the other finds it renewed.
    calls.append(lambda: est.reenrol(rt, chains[names[1]], csr(held), label=None,
                                     source=SOURCE))
    results = concurrently(calls)
    assert gate.commits == 2
    refused = [r for r in results if isinstance(r, EnrolmentForbiddenError)]
    renewed = [r for r in results if isinstance(r, est.Issued)]
    assert len(refused) == 1 and len(renewed) == len(names)
    for outcome in renewed:
        device = outcome.record.device_id
        assert device is not None and common_name(outcome.record.der) == device
        assert get_certificate(rt, old[device]).replaced_by == outcome.record.serial
    assert sorted(r.record.device_id or "" for r in renewed) == sorted(names)
    assert verify(rt).ok


def test_enrolment_groups_are_held_on_the_driver_and_other_work_is_not(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every statement of an enrolment runs on the driver, so its group is held on the
    # driver's own connection; a unit of work that may run any statement is not. A template
    # with more groups than one device's look-ups usually cover still registers on it.
    from iotsec.app.pki import group_issuance
    used: list[str] = []

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def unit_of_work(engine: Any) -> Any:
            used.append(name)
            return real(engine)
        return unit_of_work

    monkeypatch.setattr(group_issuance, "transaction",
                        counting("sqlalchemy", group_issuance.transaction))
    monkeypatch.setattr(group_issuance, "driver_transaction",
                        counting("driver", group_issuance.driver_transaction))
    fleet = [f"site-{i}" for i in range(6)]
    add_template(rt, "many", groups=fleet, id_from="csr-cn")
    add_template(rt, "gated", id_from="csr-cn", require_approval=True)
    many, secret = secrets.create_secret(rt, device_id=None, template="many", uses=2,
                                         expires_in=timedelta(hours=1))
    gated, gated_secret = secrets.create_secret(rt, device_id=None, template="gated", uses=1,
                                                expires_in=timedelta(hours=1))
    issued = est.enrol(rt, est.BasicCredential(many.id, secret), csr(cn="wide"), label=None,
                       source=SOURCE)
    assert isinstance(issued, est.Issued)
    assert sorted(get_device(rt, "wide").groups) == fleet
    key = make_key()
    waiting = est.enrol(rt, est.BasicCredential(gated.id, gated_secret), csr(key, cn="slow"),
                        label=None, source=SOURCE)
    assert isinstance(waiting, est.Pending)
    again = est.enrol(rt, est.BasicCredential(gated.id, gated_secret), csr(key, cn="slow"),
                      label=None, source=SOURCE)
    assert isinstance(again, est.Pending)
    est.approve(rt, "slow")
    done = est.enrol(rt, est.BasicCredential(gated.id, gated_secret), csr(key, cn="slow"),
                     label=None, source=SOURCE)
    assert isinstance(done, est.Issued)
    assert used == ["driver"] * 4
    assert groups_of(rt).run(lambda conn, moment: Unit(None)) is None
    assert used[-1] == "sqlalchemy"
    assert verify(rt).ok


def _sink_stops_at(rt: Runtime, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """The process's event sink fails on an event of ``kind``: as if the process stopped
    after the unit of work's commit, before the sink wrote what it was handed."""
    real = rt.events.record

    def record(event: Any) -> None:
        if event.kind == kind:
            raise RuntimeError("the process stopped")
        real(event)

    monkeypatch.setattr(rt.events, "record", record)


def test_an_enrolment_event_commits_with_its_certificate_and_never_without_it(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    # The event naming the source and the credential is in the group's transaction, after
    # the CA key's use: nothing is left for the process's event sink, and a group whose
    # commit fails leaves neither the certificate nor the event.
    credential = _template_secret(rt, uses=5)
    _sink_stops_at(rt, monkeypatch, "est.enrolled")
    issued = est.enrol(rt, credential, csr(cn="kept"), label=None, source=SOURCE)
    assert isinstance(issued, est.Issued)
    with rt.engine.connect() as conn:
        kinds = [r.kind for r in conn.execute(
            select(m.events.c.kind).order_by(m.events.c.seq.desc()).limit(2))]
        enrolled = conn.execute(select(m.events).where(
            m.events.c.kind == "est.enrolled")).one()
    assert kinds == ["est.enrolled", "key.use"]
    assert enrolled.actor == "kept" and enrolled.source == SOURCE
    assert enrolled.subject == issued.record.serial
    assert f"secret:{credential.id}" in enrolled.detail
    groups = groups_of(rt)

    def crash() -> None:
        raise StoreError("the disk holding the database failed (I/O error)")

    groups.before_commit = crash
    with pytest.raises(StoreError):
        est.enrol(rt, credential, csr(cn="lost"), label=None, source=SOURCE)
    groups.before_commit = None
    assert [e.actor for e in events(rt, "est.enrolled")] == ["kept"]
    assert [c.device_id for c in list_certificates(rt)] == ["kept"]
    assert verify(rt).ok


def test_a_re_enrolment_event_commits_with_its_renewal(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    add_device(rt, NewDevice.parse("again"))
    record = issue_from_csr(rt, "again", csr(make_key()))
    chain = est.ClientChain((x509.load_der_x509_certificate(record.der),))
    _sink_stops_at(rt, monkeypatch, "est.reenrolled")
    renewed = est.reenrol(rt, chain, csr(), label=None, source=SOURCE)
    with rt.engine.connect() as conn:
        last = list(conn.execute(select(m.events.c.kind, m.events.c.subject, m.events.c.detail)
                                 .order_by(m.events.c.seq.desc()).limit(3)))
    assert [r.kind for r in last] == ["est.reenrolled", "cert.renewed", "key.use"]
    assert last[0].subject == renewed.record.serial
    assert record.serial in last[0].detail
    assert verify(rt).ok
