"""Partition CRLs (IOTSEC_CRL_PARTITIONS): each new certificate's CDP names its partition,
whose CRL carries the matching issuingDistributionPoint and lists that partition only —
openssl accepts it for the partition's certificates — on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import select

from iotsec.app.pki import crl
from iotsec.app.pki.partition_crl import current_partition_crl
from iotsec.app.pki.revocation import revoke
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.config import Settings
from iotsec.errors import InvalidInputError, NotFoundError
from iotsec.store import models as m
from iotsec.store.db import reading
from tests.conftest import FakeClock
from tests.crl.conftest import CRL_URL
from tests.crl.support import crl_pem, issue, verify
from tests.pki.support import run_openssl


def _cdp(der: bytes) -> list[str]:
    points = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.CRLDistributionPoints).value
    return [n.value for p in points for n in p.full_name or ()]


def _partitions(rt: Runtime) -> dict[str, int | None]:
    c = m.certificates.c
    with reading(rt.engine) as conn:
        return {r.serial: r.crl_partition for r in conn.execute(
            select(c.serial, c.crl_partition).where(c.device_id.is_not(None)))}


def test_certificates_name_their_partition_and_its_crl_lists_only_it(
        rt: Runtime, openssl: str, tmp_path: Path) -> None:
    rt.settings.crl_url = CRL_URL
    before = issue(rt, "dev-before")  # issued while partitioning was off
    rt.settings.crl_partitions = 3
    certs = [issue(rt, f"dev-{n}") for n in range(9)]
    stored = _partitions(rt)
    ca = rt.issuing_id()
    assert stored[before.serial] is None and _cdp(before.der) == [f"{CRL_URL}?ca={ca}"]
    for cert in certs:
        k = int(cert.serial, 16) % 3
        assert stored[cert.serial] == k and _cdp(cert.der) == [f"{CRL_URL}/p/{k}?ca={ca}"]

    victim = certs[0]
    k = stored[victim.serial]
    assert k is not None
    first = current_partition_crl(rt, k)
    revoke(rt, victim.serial)
    revoke(rt, before.serial)
    published = current_partition_crl(rt, k)
    assert published.number == first.number + 1  # the revocation made it stale
    parsed = x509.load_der_x509_crl(published.der)
    assert {e.serial_number for e in parsed} == {int(victim.serial, 16)}
    idp = parsed.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    assert idp.critical and idp.value.only_contains_user_certs
    # Its CA's name of the partition, and the name without the CA id that certificates
    # issued before the pointers named their CA carry.
    assert [n.value for n in idp.value.full_name or ()] == [f"{CRL_URL}/p/{k}?ca={ca}",
                                                          f"{CRL_URL}/p/{k}"]
    assert current_partition_crl(rt, k) == published  # served as stored until it changes
    for other in {0, 1, 2} - {k}:
        assert len(x509.load_der_x509_crl(current_partition_crl(rt, other).der)) == 0
    # The complete CRL keeps every revocation, partitioned or not.
    complete = {e.serial_number for e in x509.load_der_x509_crl(crl.current_crl(rt).der)}
    assert complete == {int(victim.serial, 16), int(before.serial, 16)}

    pem = crl_pem(tmp_path / "p.pem", published.der)
    out = verify(openssl, rt, tmp_path, victim.der, pem)
    assert "certificate revoked" in out, out
    # Another certificate of the same partition (serials are random: issue until one is).
    same = next((c for c in certs[1:] if stored[c.serial] == k), None)
    for n in range(9, 100):
        if same is not None:
            break
        cert = issue(rt, f"dev-{n}")
        same = cert if int(cert.serial, 16) % 3 == k else None
    assert same is not None
    assert verify(openssl, rt, tmp_path, same.der, pem).strip().endswith(": OK")
    elsewhere = next(c for c in certs if stored[c.serial] != k)
    assert "different CRL scope" in verify(openssl, rt, tmp_path, elsewhere.der, pem)
    text = openssl_text(openssl, pem)
    assert "Issuing Distribution Point: critical" in text
    assert "Only User Certificates" in text


def openssl_text(openssl: str, pem: Path) -> str:
    return run_openssl(openssl, "crl", "-in", pem, "-noout", "-text").stdout


def test_partitions_refused_when_off_out_of_range_or_without_a_url(rt: Runtime) -> None:
    with pytest.raises(NotFoundError, match="partitioning is off"):
        current_partition_crl(rt, 0)
    rt.settings.crl_partitions = 4
    with pytest.raises(NotFoundError, match="no CRL partition 4"):
        current_partition_crl(rt, 4)
    with pytest.raises(InvalidInputError, match="public CRL URL"):
        current_partition_crl(rt, 1)
    # Without a URL there is nothing a CDP could name: certificates get no partition.
    cert = issue(rt, "dev-1")
    assert _partitions(rt)[cert.serial] is None


def test_two_servers_creating_and_signing_one_partition_agree(
        settings: Settings, rt: Runtime, clock: FakeClock) -> None:
    """Two runtimes ask for the same partition's first CRL at once (both may try to create
    its row), then revoke and re-sign: every number stands for one CRL."""
    rt.settings.crl_url = CRL_URL
    rt.settings.crl_partitions = 2
    certs = [issue(rt, f"dev-{n}") for n in range(10)]
    published: list[tuple[int, bytes]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def server(mine: list[str]) -> None:
        other = open_runtime(Settings.model_validate(
            {**settings.model_dump(), "crl_url": CRL_URL, "crl_partitions": 2}), clock=clock)
        try:
            start.wait()
            for serial in [None, *mine]:
                if serial is not None:
                    revoke(other, serial)
                for k in (0, 1):
                    got = current_partition_crl(other, k)
                    published.append((got.number, got.der))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            other.close()

    threads = [threading.Thread(target=server, args=([c.serial for c in certs[i::2]],))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for k in (0, 1):
        final = current_partition_crl(rt, k)
        expected = {int(c.serial, 16) for c in certs if int(c.serial, 16) % 2 == k}
        assert {e.serial_number for e in x509.load_der_x509_crl(final.der)} == expected
    by_scope: dict[tuple[str, int], set[bytes]] = {}
    for n, d in published:
        idp = x509.load_der_x509_crl(d).extensions.get_extension_for_class(
            x509.IssuingDistributionPoint).value.full_name[0].value
        by_scope.setdefault((idp, n), set()).add(d)
    assert all(len(ders) == 1 for ders in by_scope.values()), sorted(by_scope)
