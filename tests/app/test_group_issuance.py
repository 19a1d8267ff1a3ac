"""One certificate per call: its key.use event commits with it, and concurrent calls share a
transaction (group commit) without sharing their refusals. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from sqlalchemy import func, select

from iotsec.app.identity import devices
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.monitor.chain import verify
from iotsec.app.pki import cert_records, issuance
from iotsec.app.pki.group_issuance import IssuanceGroups
from iotsec.errors import (
    ConflictError,
    DeviceStateError,
    MalformedInputError,
    NotFoundError,
    StoreError,
)
from iotsec.identity.registry import DeviceState
from iotsec.store import models as m
from tests.group_support import Gate, concurrently
from tests.helpers import make_csr, make_key


def _events(rt, kind: str) -> int:
    with rt.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(m.events)
                                .where(m.events.c.kind == kind)).scalar_one())


def _register(rt, ids: list[str]) -> None:
    for device_id in ids:
        devices.add_device(rt, devices.NewDevice.parse(device_id, ["fleet"]))


def test_issue_from_csr_commits_its_key_use_event_with_the_certificate(rt) -> None:
    _register(rt, ["one"])
    before = _events(rt, "key.use")
    record = issuance.issue_from_csr(rt, "one", make_csr())
    # No flush of the sink: the event is in the store because the issuance committed it.
    assert _events(rt, "key.use") == before + 1
    assert _events(rt, "cert.issued") == 1
    assert cert_records.get_certificate(rt, record.serial).device_id == "one"
    assert devices.get_device(rt, "one").state is DeviceState.ACTIVE
    assert verify(rt).ok


def test_a_refused_issuance_records_no_signature_and_activates_nothing(rt) -> None:
    _register(rt, ["one", "two"])
    key = make_key()
    issuance.issue_from_csr(rt, "one", make_csr(key))
    before = _events(rt, "key.use")
    with pytest.raises(ConflictError):
        issuance.issue_from_csr(rt, "two", make_csr(key))
    assert _events(rt, "key.use") == before
    assert devices.get_device(rt, "two").state is DeviceState.PENDING


def test_a_single_issuance_that_fails_before_its_commit_leaves_nothing(rt) -> None:
    # One request's unit of work is held on the driver's own connection: a failure before
    # its commit rolls all of it back, and the connection serves the next issuance.
    _register(rt, ["lost"])

    def crash() -> None:
        raise StoreError("the disk holding the database failed (I/O error)")

    with pytest.raises(StoreError):
        issuance.issue_batch(rt, [("lost", make_csr())], before_commit=crash)
    assert cert_records.list_certificates(rt) == []
    assert _events(rt, "cert.issued") == 0
    assert devices.get_device(rt, "lost").state is DeviceState.PENDING
    record = issuance.issue_from_csr(rt, "lost", make_csr())
    assert [c.serial for c in cert_records.list_certificates(rt)] == [record.serial]
    assert devices.get_device(rt, "lost").state is DeviceState.ACTIVE
    assert verify(rt).ok


def test_concurrent_requests_share_a_commit_and_each_gets_its_own_certificate(rt) -> None:
    ids = [f"g-{i}" for i in range(9)]
    _register(rt, ids)
    groups = IssuanceGroups(rt)
    gate = Gate(groups, expected=len(ids) - 1)
    groups.before_commit = gate
    csrs = {d: make_csr() for d in ids}
    results = concurrently([lambda d=d: groups.issue(d, csrs[d]) for d in ids])
    assert gate.commits == 2  # the first alone, the eight others in one transaction
    assert sorted(r.device_id for r in results) == ids
    assert len({r.serial for r in results}) == len(ids)
    for record in results:
        cert = x509.load_der_x509_certificate(record.der)
        assert cert.public_key().public_bytes(
            *_spki()) == x509.load_pem_x509_csr(csrs[record.device_id]).public_key(
            ).public_bytes(*_spki())
        assert cert_records.get_certificate(rt, record.serial).device_id == record.device_id
    assert _events(rt, "cert.issued") == len(ids)
    assert verify(rt).ok


def _spki() -> tuple[Any, Any]:
    from cryptography.hazmat.primitives import serialization
    return (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_a_refused_request_is_answered_alone_and_its_group_is_issued(rt) -> None:
    ids = ["ok-1", "ok-2", "ok-3", "off", "twin"]
    _register(rt, ids)
    change_state(rt, "off", DeviceState.DISABLED)
    groups = IssuanceGroups(rt)
    shared = make_key()
    calls: list[Callable[[], Any]] = [
        lambda: groups.issue("ok-1", make_csr()),
        lambda: groups.issue("ok-2", make_csr(shared)),
        lambda: groups.issue("ok-3", make_csr()),
        lambda: groups.issue("off", make_csr()),  # disabled
        lambda: groups.issue("nobody", make_csr()),  # not registered
        # The twin's key is ok-2's: whichever of the two is issued first gets it.
        lambda: groups.issue("twin", make_csr(shared)),
    ]
    groups.before_commit = Gate(groups, expected=len(calls) - 1)
    results = concurrently(calls)
    by_device = dict(zip(["ok-1", "ok-2", "ok-3", "off", "nobody", "twin"], results,
                         strict=True))
    assert isinstance(by_device["off"], DeviceStateError)
    assert isinstance(by_device["nobody"], NotFoundError)
    pair = [by_device["ok-2"], by_device["twin"]]
    assert sum(isinstance(r, ConflictError) for r in pair) == 1
    issued = [r for r in results if isinstance(r, cert_records.CertificateRecord)]
    assert len(issued) == 3
    for record in issued:
        assert cert_records.get_certificate(rt, record.serial).device_id == record.device_id
    assert devices.get_device(rt, "off").state is DeviceState.DISABLED
    assert _events(rt, "cert.issued") == 3
    assert verify(rt).ok


def test_a_bad_csr_is_refused_before_it_joins_a_group(rt) -> None:
    _register(rt, ["solo"])
    groups = IssuanceGroups(rt)
    with pytest.raises(MalformedInputError):
        groups.issue("solo", b"not a certificate request")
    assert groups.issue("solo", make_csr()).device_id == "solo"


def test_a_failure_before_the_commit_answers_no_request_of_its_group(rt) -> None:
    ids = [f"c-{i}" for i in range(6)]
    _register(rt, ids)
    groups = IssuanceGroups(rt)

    def crash(commit: int) -> None:
        if commit == 2:
            raise StoreError("the disk holding the database failed (I/O error)")

    groups.before_commit = Gate(groups, expected=len(ids) - 1, then=crash)
    results = concurrently([lambda d=d: groups.issue(d, make_csr()) for d in ids])
    issued = [r for r in results if isinstance(r, cert_records.CertificateRecord)]
    failed = [r for r in results if isinstance(r, StoreError)]
    assert len(issued) == 1 and len(failed) == len(ids) - 1
    assert [c.serial for c in cert_records.list_certificates(rt)] == [issued[0].serial]
    assert _events(rt, "cert.issued") == 1
    # The signatures of the lost group were made: their key.use events are recorded.
    rt.events.flush()
    assert _events(rt, "key.use") >= len(ids)
    assert verify(rt).ok
    for device_id in ids:
        if device_id != issued[0].device_id:
            assert devices.get_device(rt, device_id).state is DeviceState.PENDING


def test_a_renewal_commits_its_key_use_event_with_the_new_certificate(rt) -> None:
    _register(rt, ["renewed"])
    old = issuance.issue_from_csr(rt, "renewed", make_csr())
    before = _events(rt, "key.use")
    new = issuance.renew(rt, old.serial, make_csr())
    assert _events(rt, "key.use") == before + 1
    assert _events(rt, "cert.renewed") == 1
    assert cert_records.get_certificate(rt, new.serial).device_id == "renewed"
    assert verify(rt).ok
