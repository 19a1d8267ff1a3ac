"""Delta CRLs from the store (RFC 5280 5.2.4): the complete CRL names them (freshestCRL),
each completes a base (deltaCRLIndicator), both draw from one number sequence, and openssl
finds a certificate revoked after the base was published — on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import select, text

from iotsec.app.pki import crl, issuance
from iotsec.app.pki.crl_urls import (
    ca_certificate_url,
    complete_crl_url,
    delta_crl_url,
    legacy_partition_crl_url,
    partition_crl_url,
)
from iotsec.app.pki.revocation import revoke
from iotsec.app.restore import _reconcile_crls
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.config import Settings
from iotsec.pki.crl import RevocationReason
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from tests.conftest import FakeClock
from tests.crl.conftest import CRL_URL
from tests.crl.support import crl_pem, issue, verify
from tests.helpers import make_csr


def _serials(der: bytes) -> set[int]:
    return {e.serial_number for e in x509.load_der_x509_crl(der)}


def _numbers(der: bytes) -> tuple[int, int | None]:
    parsed = x509.load_der_x509_crl(der)
    number = parsed.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    try:
        base = parsed.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value
    except x509.ExtensionNotFound:
        return number, None
    return number, base.crl_number


def test_urls_follow_the_public_crl_url() -> None:
    settings = Settings(crl_url=CRL_URL + "/")
    # Every pointer names its CA by id: a retiring CA's certificates keep naming its CRLs.
    assert complete_crl_url(settings, 2) == CRL_URL + "?ca=2"
    assert delta_crl_url(settings, 2) == CRL_URL + "/delta?ca=2"
    assert delta_crl_url(settings, 1) == CRL_URL + "/delta?ca=1"
    assert partition_crl_url(settings, 7, 5) == CRL_URL + "/p/7?ca=5"
    assert legacy_partition_crl_url(settings, 7) == CRL_URL + "/p/7"
    assert complete_crl_url(Settings(crl_url="http://h/crl.php?x=1"), 3) == \
        "http://h/crl.php?x=1&ca=3"
    assert ca_certificate_url(Settings(public_url="http://h:8080"), 4) == \
        "http://h:8080/ca/4.der"
    assert ca_certificate_url(settings, 4) is None
    assert delta_crl_url(Settings(), 1) is None and partition_crl_url(Settings(), 0, 1) is None


def test_delta_lists_what_was_revoked_after_its_base_and_openssl_applies_it(
        rt: Runtime, clock: FakeClock, openssl: str, tmp_path: Path) -> None:
    rt.settings.crl_url = CRL_URL
    early, late, kept = issue(rt, "dev-early"), issue(rt, "dev-late"), issue(rt, "dev-kept")
    revoke(rt, early.serial, RevocationReason.keyCompromise)
    clock.advance(timedelta(minutes=1))
    base = crl.current_crl(rt)
    freshest = x509.load_der_x509_crl(base.der).extensions.get_extension_for_class(
        x509.FreshestCRL).value
    assert [n.value for p in freshest for n in p.full_name or ()] == [
        f"{CRL_URL}/delta?ca={rt.issuing_id()}"]
    first = crl.current_delta_crl(rt)
    assert first.base_number == base.number and first.number == base.number + 1
    assert _numbers(first.der) == (first.number, base.number) and _serials(first.der) == set()
    assert crl.current_delta_crl(rt) == first  # nothing changed: served as stored

    clock.advance(timedelta(minutes=1))
    revoke(rt, late.serial, RevocationReason.cessationOfOperation)
    delta = crl.current_delta_crl(rt)
    assert delta.number == first.number + 1 and delta.base_number == base.number
    assert _serials(delta.der) == {int(late.serial, 16)}
    parsed = x509.load_der_x509_crl(delta.der)
    assert parsed.is_signature_valid(rt.authority("issuing").certificate.public_key())
    assert parsed.issuer == x509.load_der_x509_crl(base.der).issuer
    assert parsed.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier) == \
        x509.load_der_x509_crl(base.der).extensions.get_extension_for_class(
            x509.AuthorityKeyIdentifier)

    base_pem, delta_pem = crl_pem(tmp_path / "base.pem", base.der), crl_pem(
        tmp_path / "delta.pem", delta.der)
    assert verify(openssl, rt, tmp_path, late.der, base_pem).strip().endswith(": OK")
    out = verify(openssl, rt, tmp_path, late.der, base_pem, delta_pem, deltas=True)
    assert "certificate revoked" in out, out
    out = verify(openssl, rt, tmp_path, early.der, base_pem, delta_pem, deltas=True)
    assert "certificate revoked" in out, out
    out = verify(openssl, rt, tmp_path, kept.der, base_pem, delta_pem, deltas=True)
    assert out.strip().endswith(": OK"), out


def test_complete_and_delta_crls_share_one_number_sequence(
        rt: Runtime, clock: FakeClock) -> None:
    rt.settings.crl_url = CRL_URL
    certs = [issue(rt, f"dev-{n}") for n in range(4)]
    signed: dict[int, set[bytes]] = {}
    for cert in certs:
        clock.advance(timedelta(seconds=10))
        revoke(rt, cert.serial)
        delta = crl.current_delta_crl(rt)  # re-signs the complete CRL first when the base moves
        complete = crl.current_crl(rt)
        after = crl.current_delta_crl(rt)  # follows the newer complete CRL, if there is one
        assert after.number > complete.number >= (after.base_number or 0)
        for published in (delta, complete, after):
            signed.setdefault(published.number, set()).add(published.der)
    assert all(len(ders) == 1 for ders in signed.values())
    assert sorted(signed) == list(range(1, max(signed) + 1))  # one sequence, no gaps
    last = crl.current_delta_crl(rt)
    complete = crl.current_crl(rt)
    assert last.number > complete.number >= (last.base_number or 0)
    # Every revocation since the base is on the delta, so the latest complete CRL and
    # every one since the base are completed by it.
    assert _serials(last.der) == {int(c.serial, 16) for c in certs}


def test_the_base_moves_on_when_due_or_when_the_delta_grows_too_large(
        rt: Runtime, clock: FakeClock) -> None:
    rt.settings.crl_delta_max_entries = 2
    certs = [issue(rt, f"dev-{n}") for n in range(3)]
    first = crl.current_delta_crl(rt)
    base = first.base_number
    clock.advance(timedelta(seconds=5))
    for cert in certs[:2]:
        revoke(rt, cert.serial)
    clock.advance(timedelta(seconds=5))
    two = crl.current_delta_crl(rt)
    assert two.base_number == base and len(_serials(two.der)) == 2
    revoke(rt, certs[2].serial)
    clock.advance(timedelta(seconds=5))
    moved = crl.current_delta_crl(rt)
    # Three would exceed the limit: a new complete CRL became the base.
    complete = crl.current_crl(rt)
    assert moved.base_number == complete.number > (base or 0)
    assert _serials(moved.der) == set()
    assert {int(c.serial, 16) for c in certs} <= _serials(complete.der)
    # On the refresh schedule, the base moves on too (and the complete CRL is re-signed).
    clock.advance(timedelta(hours=rt.settings.crl_refresh_hours))
    later = crl.current_delta_crl(rt)
    newer = crl.current_crl(rt)
    assert later.base_number == newer.number > complete.number
    assert later.number == newer.number + 1


def test_a_delta_is_re_signed_when_half_its_life_passed_or_a_grace_period_ends(
        rt: Runtime, clock: FakeClock) -> None:
    old = issue(rt, "dev-1")
    first = crl.current_delta_crl(rt)
    assert first.next_update - first.this_update == timedelta(hours=rt.settings.crl_delta_hours)
    clock.advance(timedelta(hours=rt.settings.crl_delta_hours / 2))
    second = crl.current_delta_crl(rt)
    assert second.number > first.number and second.base_number == first.base_number
    issuance.renew(rt, old.serial, make_csr(), grace=timedelta(hours=1))
    assert crl.current_delta_crl(rt) == second  # the superseded one is not due yet
    clock.advance(timedelta(hours=1, seconds=1))
    due = crl.current_delta_crl(rt)
    assert _serials(due.der) == {int(old.serial, 16)} and due.number > second.number


def test_root_ca_has_its_delta_too(rt: Runtime) -> None:
    rt.settings.crl_url = CRL_URL
    complete = crl.current_crl(rt, role="root")
    ext = x509.load_der_x509_crl(complete.der).extensions.get_extension_for_class(
        x509.FreshestCRL).value
    assert [n.value for p in ext for n in p.full_name or ()] == [
        f"{CRL_URL}/delta?ca={rt.authority_id('root')}"]
    delta = crl.current_delta_crl(rt, role="root")
    assert delta.base_number == complete.number
    parsed = x509.load_der_x509_crl(delta.der)
    assert parsed.is_signature_valid(rt.authority("root").certificate.public_key())
    # authority_id names the CA instead of the role.
    assert crl.current_delta_crl(rt, authority_id=rt.authority_id("root")) == delta
    assert crl.current_crl(rt, authority_id=rt.authority_id("root")) == complete


def test_without_a_public_url_the_complete_crl_names_no_delta(rt: Runtime) -> None:
    parsed = x509.load_der_x509_crl(crl.current_crl(rt).der)
    with pytest.raises(x509.ExtensionNotFound):
        parsed.extensions.get_extension_for_class(x509.FreshestCRL)
    assert crl.current_delta_crl(rt).base_number == crl.current_crl(rt).number


def test_the_delta_query_is_a_range_scan_of_an_index(rt: Runtime) -> None:
    """Building a delta never reads the whole certificates table: with many revocations
    stored, the planner answers the delta's query by a range of the (authority_id,
    revoked_at, ...) index."""
    authority_id = rt.issuing_id()
    rows = [{"serial": f"{n:040X}", "authority_id": authority_id, "device_id": None,
             "kind": "device", "profile": "device", "subject": f"d{n}", "not_before": 0,
             "not_after": 10**10, "sha256": f"{n:064x}", "der": b"x", "created_at": 0,
             "revoked_at": 1_000_000 + n, "revocation_reason": 0, "crl_entry": b"e",
             "replaced_by": None, "spki_sha256": None, "crl_partition": n % 4}
            for n in range(5000)]
    with transaction(rt.engine) as conn:
        conn.execute(m.certificates.insert(), rows)
    c = m.certificates.c
    query = select(c.crl_entry).where(c.authority_id == authority_id,
                                      c.revoked_at >= 1_004_990, c.revoked_at <= 1_005_000,
                                      c.not_after > 1_004_995)
    with reading(rt.engine) as conn:
        # This table only: on PostgreSQL a bare ANALYZE locks every table of the database,
        # other tests' schemas included, and can deadlock with their DDL.
        conn.execute(text("ANALYZE certificates"))
        compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
        if conn.dialect.name == "sqlite":
            plan = " ".join(str(r[-1]) for r in conn.execute(
                text(f"EXPLAIN QUERY PLAN {compiled}")))
            assert "USING COVERING INDEX ix_certificates_authority_id_revoked_at" in plan, plan
            assert "revoked_at>? AND revoked_at<?" in plan, plan
        else:
            plan = " ".join(str(r[0]) for r in conn.execute(text(f"EXPLAIN {compiled}")))
            assert "Index Only Scan using ix_certificates_authority_id_revoked_at" in plan, plan
            assert "revoked_at >= " in plan and "Seq Scan" not in plan, plan
        assert len(conn.execute(query).all()) == 10


def test_concurrent_servers_never_sign_two_crls_with_one_number(
        settings: Settings, rt: Runtime, clock: FakeClock) -> None:
    """Two runtimes (two servers' worth of engines and key loads) revoke and publish at the
    same time: every CRL number stands for exactly one CRL."""
    certs = [issue(rt, f"dev-{n}") for n in range(12)]
    published: list[crl.PublishedCrl] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def server(mine: list[str]) -> None:
        other = open_runtime(settings, clock=clock)
        try:
            for serial in mine:
                revoke(other, serial)
                got = [crl.current_delta_crl(other), crl.current_crl(other),
                       crl.current_delta_crl(other, force=True)]
                with lock:
                    published.extend(got)
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
    by_number: dict[int, set[bytes]] = {}
    for p in published:
        by_number.setdefault(p.number, set()).add(p.der)
        assert _numbers(p.der)[0] == p.number
    assert all(len(ders) == 1 for ders in by_number.values()), sorted(by_number)
    with reading(rt.engine) as conn:
        row = conn.execute(select(m.delta_crls).where(
            m.delta_crls.c.authority_id == rt.issuing_id())).one()
    assert row.number == max(by_number)
    assert _serials(crl.current_delta_crl(rt).der) | _serials(crl.current_crl(rt).der) == {
        int(c.serial, 16) for c in certs}


def test_a_restore_clears_the_delta_and_keeps_the_sequence(rt: Runtime) -> None:
    """What the restore does to the CRL rows (app/restore.py): the next delta starts a new
    base with a number above every one published."""
    delta = crl.current_delta_crl(rt)
    with transaction(rt.engine) as conn:
        _reconcile_crls(conn, {}, None)
    with reading(rt.engine) as conn:
        row = conn.execute(select(m.crls).where(
            m.crls.c.authority_id == rt.issuing_id())).one()
        reset = conn.execute(select(m.delta_crls)).one()
    assert (reset.number, reset.base, reset.der, reset.stale) == (None, None, None, True)
    assert row.number > delta.number
    after = crl.current_delta_crl(rt)
    assert after.number > row.number and after.base_number == row.number + 1


def test_the_complete_crl_fetched_first_is_the_base_of_the_next_delta(
        rt: Runtime, clock: FakeClock) -> None:
    """A relying party fetches the complete CRL before anyone asked for a delta: the
    delta after the next revocation completes that very CRL."""
    cert = issue(rt, "dev-1")
    fetched = crl.current_crl(rt)
    revoke(rt, cert.serial)
    delta = crl.current_delta_crl(rt)
    assert delta.base_number == fetched.number
    assert _serials(delta.der) == {int(cert.serial, 16)}
    # The complete CRL re-signed for the revocation does not move the base (not due).
    assert crl.current_crl(rt).number > fetched.number
    assert crl.current_delta_crl(rt).base_number == fetched.number
