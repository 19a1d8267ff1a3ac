"""``GET /crl`` from a serving process's memory: for at most ``IOTSEC_HOT_CACHE_SECONDS``
after the store was read, and never after a revocation this process recorded."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from fastapi.testclient import TestClient
from sqlalchemy import update

from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.pki import crl as crl_service
from iotsec.app.pki.issuance import issue_from_csr, renew
from iotsec.app.pki.revocation import revoke
from iotsec.app.runtime import Runtime
from iotsec.pki.crl import RevocationReason
from iotsec.store import models as m
from iotsec.store.db import transaction
from tests.conftest import FakeClock
from tests.helpers import make_csr


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each time the served CRL is read from the store."""
    seen: list[str] = []
    real = crl_service.current_crl

    def counted(rt: Runtime, *, role: str = "issuing",
                force: bool = False) -> crl_service.PublishedCrl:
        seen.append(role)
        return real(rt, role=role, force=force)

    monkeypatch.setattr(crl_service, "current_crl", counted)
    return seen


def _entries(client: TestClient) -> list[int]:
    resp = client.get("/crl")
    assert resp.status_code == 200
    return [e.serial_number for e in x509.load_der_x509_crl(resp.content)]


def test_the_crl_is_answered_from_memory_until_it_may_be_behind(
        anon: TestClient, rt: Runtime, clock: FakeClock, reads: list[str]) -> None:
    add_device(rt, NewDevice.parse("dev-1"))
    cert = issue_from_csr(rt, "dev-1", make_csr())
    first = anon.get("/crl").content
    assert anon.get("/crl").content == first and anon.get("/crl?ca=root").status_code == 200
    assert reads == ["issuing", "root"]  # once per CA
    # A revocation in this process: the next answer holds it at once.
    revoke(rt, cert.serial, RevocationReason.keyCompromise)
    assert _entries(anon) == [int(cert.serial, 16)]
    assert reads == ["issuing", "root", "issuing"]
    # Another process re-signs the CRL (simulated in the store): this one answers the CRL it
    # holds for at most hot_cache_seconds, then reads the store again.
    with transaction(rt.engine) as conn:
        conn.execute(update(m.crls).values(stale=True))
    assert anon.get("/crl").content == anon.get("/crl").content
    assert len(reads) == 3
    clock.advance(timedelta(seconds=rt.settings.hot_cache_seconds))
    anon.get("/crl")
    assert len(reads) == 4


def test_a_superseded_certificate_falls_due_on_the_served_crl(
        anon: TestClient, rt: Runtime, clock: FakeClock) -> None:
    add_device(rt, NewDevice.parse("dev-1"))
    old = issue_from_csr(rt, "dev-1", make_csr())
    renew(rt, old.serial, make_csr(), grace=timedelta(hours=1))
    assert _entries(anon) == []
    clock.advance(timedelta(hours=1, seconds=1))
    assert _entries(anon) == [int(old.serial, 16)]


def test_no_memory_when_the_hot_cache_is_off(anon: TestClient, rt: Runtime,
                                             reads: list[str]) -> None:
    rt.settings.hot_cache_seconds = 0
    for _ in range(3):
        anon.get("/crl")
    assert reads == ["issuing"] * 3
