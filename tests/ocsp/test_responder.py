"""The responder service and ``/ocsp`` on the API: statuses from the store, the CAs it
answers for, the pre-signed answers and when they are signed again, the responder
certificate's rotation (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import time
from datetime import timedelta
from urllib.parse import quote

from cryptography import x509
from cryptography.x509 import ocsp
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.pki.cert_records import CertificateRecord
from iotsec.app.pki.issuance import issue_from_csr, renew
from iotsec.app.pki.ocsp import _CACHE, answer, answer_from_memory
from iotsec.app.pki.revocation import revoke
from iotsec.app.runtime import Runtime
from iotsec.pki import x509 as enc
from iotsec.pki.crl import RevocationReason
from iotsec.pki.ocsp import MAX_REQUEST_BYTES, CertId
from iotsec.pki.ocsp_client import build_request, new_nonce, verify_response
from iotsec.pki.ocsp_responder import RENEW_BEFORE
from iotsec.store import models as m
from iotsec.store.db import transaction
from iotsec.timeutil import ts
from tests.conftest import FakeClock
from tests.helpers import make_csr


def _issue(rt: Runtime, device: str = "dev-1") -> CertificateRecord:
    add_device(rt, NewDevice.parse(device))
    return issue_from_csr(rt, device, make_csr())


def _cert_id(rt: Runtime, serial: int, role: str = "issuing", hash_name: str = "sha1"
             ) -> CertId:
    ca = rt.authority(role).certificate
    return CertId.for_certificate(ca.subject.public_bytes(), enc.spki_der(ca.public_key()),
                                  serial, hash_name)


def _ask(rt: Runtime, serial: int, *, role: str = "issuing", nonce: bool = False,
         hash_name: str = "sha1") -> tuple[ocsp.OCSPResponse, bytes]:
    value = new_nonce() if nonce else None
    cert_id = _cert_id(rt, serial, role, hash_name)
    der = answer(rt, build_request(cert_id, value)).der
    # Every answer verifies as the client checks it.
    verify_response(der, ca=rt.authority(role).certificate, cert_id=cert_id, nonce=value,
                    now=rt.now())
    return ocsp.load_der_ocsp_response(der), der


def test_good_then_revoked_with_time_and_reason(rt: Runtime) -> None:
    cert = _issue(rt)
    serial = int(cert.serial, 16)
    good, _ = _ask(rt, serial)
    assert good.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert good.next_update_utc - good.this_update_utc == timedelta(hours=24)
    revoked = revoke(rt, cert.serial, RevocationReason.keyCompromise)
    after, _ = _ask(rt, serial, hash_name="sha256")
    assert after.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert after.revocation_reason is x509.ReasonFlags.key_compromise
    assert after.revocation_time_utc == revoked.revoked_at


def test_unknown_serial_unknown_issuer_and_the_root(rt: Runtime) -> None:
    unknown, _ = _ask(rt, 0x1234567)
    assert unknown.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    # The root answers for the issuing CA it signed, and does not know a device's serial.
    cert = _issue(rt)
    issuing = rt.authority("issuing").certificate.serial_number
    assert _ask(rt, issuing, role="root")[0].certificate_status is ocsp.OCSPCertStatus.GOOD
    assert _ask(rt, int(cert.serial, 16), role="root")[0].certificate_status is \
        ocsp.OCSPCertStatus.UNKNOWN
    foreign = CertId.for_certificate(b"\x30\x00", enc.spki_der(
        rt.authority("issuing").certificate.public_key()), 5)
    status = ocsp.load_der_ocsp_response(answer(rt, build_request(foreign, None)).der)
    assert status.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    bad = ocsp.load_der_ocsp_response(answer(rt, b"\x30\x00").der)
    assert bad.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_a_superseded_certificate_is_good_until_its_revocation(rt: Runtime,
                                                               clock: FakeClock) -> None:
    old = _issue(rt)
    renew(rt, old.serial, make_csr(), grace=timedelta(hours=2))
    first, _ = _ask(rt, int(old.serial, 16))
    assert first.certificate_status is ocsp.OCSPCertStatus.GOOD
    # Its answer is not to be kept past the moment its revocation takes effect.
    assert first.next_update_utc == first.this_update_utc + timedelta(hours=2)
    clock.advance(timedelta(hours=2, seconds=1))
    later, _ = _ask(rt, int(old.serial, 16))
    assert later.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert later.revocation_reason is x509.ReasonFlags.superseded


def test_presigned_answers_and_revocations_elsewhere(rt: Runtime) -> None:
    rt.settings.hot_cache_seconds = 0.5
    cert = _issue(rt)
    body = build_request(_cert_id(rt, int(cert.serial, 16)), None)
    assert answer_from_memory(rt, body) is None
    first = answer(rt, body)
    assert first.next_update is not None
    assert answer_from_memory(rt, body) is first
    assert answer(rt, body).der == first.der  # signed once
    # Not asked for during a whole check period: checked alone when asked again, and the
    # same signed answer reused while its status has not changed.
    time.sleep(0.55)
    answer(rt, build_request(_cert_id(rt, 0x777), None))  # another request starts a period
    time.sleep(0.55)
    assert answer_from_memory(rt, body) is None
    assert answer(rt, body).der == first.der
    assert answer_from_memory(rt, body) is not None
    # With a nonce, every answer is signed afresh and never kept.
    nonced = build_request(_cert_id(rt, int(cert.serial, 16)), new_nonce())
    assert answer(rt, nonced).der != answer(rt, nonced).der
    assert answer_from_memory(rt, nonced) is None
    # Another process revokes (written to the store behind this process's back): this one
    # keeps answering from memory for at most hot_cache_seconds, then checks the store.
    with transaction(rt.engine) as conn:
        conn.execute(update(m.certificates).where(m.certificates.c.serial == cert.serial)
                     .values(revoked_at=ts(rt.now()), revocation_reason=1))
    deadline = time.monotonic() + 0.5
    while answer_from_memory(rt, body) is not None:
        assert time.monotonic() < deadline + 0.05
        time.sleep(0.02)
    fresh = answer(rt, body)
    assert ocsp.load_der_ocsp_response(fresh.der).certificate_status is \
        ocsp.OCSPCertStatus.REVOKED
    headers = dict(fresh.headers(rt.now()))
    assert headers[b"cache-control"].startswith(b"max-age=8640")
    assert {b"etag", b"last-modified", b"expires"} <= headers.keys()


def test_the_responder_certificate_rotates_and_the_ca_can_sign(rt: Runtime,
                                                               clock: FakeClock) -> None:
    cert = _issue(rt)
    serial = int(cert.serial, 16)
    first, _ = _ask(rt, serial, nonce=True)
    (responder,) = first.certificates
    assert responder.issuer == rt.authority("issuing").certificate.subject
    clock.advance(responder.not_valid_after_utc - RENEW_BEFORE - rt.now() + timedelta(seconds=1))
    second, _ = _ask(rt, serial, nonce=True)
    (replaced,) = second.certificates
    assert replaced.serial_number != responder.serial_number
    assert replaced.not_valid_after_utc > responder.not_valid_after_utc
    # The replaced responder key is gone from the key directory; the new one is there.
    (kept,) = rt.settings.keys_dir.glob("ocsp-*.key.pem")
    assert (rt.settings.ocsp_dir / f"responder-{rt.issuing_id()}.label").read_text().strip() \
        == kept.name.removesuffix(".key.pem")
    rt.settings.ocsp_signer = "ca"
    by_ca, der = _ask(rt, serial, nonce=True)
    assert by_ca.certificates == []
    assert by_ca.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(
        rt.authority("issuing").certificate.public_key()).digest
    assert verify_response(der, ca=rt.authority("issuing").certificate,
                           cert_id=_cert_id(rt, serial), nonce=None,
                           now=rt.now()).signed_by == "ca"


def test_ocsp_over_the_api(anon: TestClient, rt: Runtime) -> None:
    cert = _issue(rt)
    body = build_request(_cert_id(rt, int(cert.serial, 16)), None)
    posted = anon.post("/ocsp", content=body,
                       headers={"content-type": "application/ocsp-request"})
    assert posted.status_code == 200
    assert posted.headers["content-type"] == "application/ocsp-response"
    assert posted.headers["cache-control"].startswith("max-age=")
    encoded = quote(base64.b64encode(body).decode("ascii"), safe="")
    got = anon.get(f"/ocsp/{encoded}")
    assert got.status_code == 200 and got.content == posted.content
    assert ocsp.load_der_ocsp_response(got.content).certificate_status is \
        ocsp.OCSPCertStatus.GOOD
    # Bad input: an OCSP error status with 200, or a 4xx for what is not OCSP; never a 500.
    for response, status in (
            (anon.post("/ocsp", content=b"junk",
                       headers={"content-type": "application/ocsp-request"}),
             ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
            (anon.post("/ocsp", content=b"\x30" * (MAX_REQUEST_BYTES + 1),
                       headers={"content-type": "application/ocsp-request"}),
             ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
            # Over the API's own body limit too: still OCSP's answer, not a 413.
            (anon.post("/ocsp", content=b"\x30" * (300 * 1024),
                       headers={"content-type": "application/ocsp-request"}),
             ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
            (anon.get("/ocsp/%%%not-base64"), ocsp.OCSPResponseStatus.MALFORMED_REQUEST)):
        assert response.status_code == 200
        assert ocsp.load_der_ocsp_response(response.content).response_status is status
        assert response.headers["cache-control"] == "no-store"
    assert anon.post("/ocsp", content=body,
                     headers={"content-type": "application/json"}).status_code == 415
    assert anon.put("/ocsp", content=body).status_code == 405


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_fuzz_any_body_gets_an_ocsp_response(rt: Runtime, data: bytes) -> None:
    """Whatever a client sends, the responder answers an OCSPResponse (never raises)."""
    parsed = ocsp.load_der_ocsp_response(answer(rt, data).der)
    assert parsed.response_status in (ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
                                      ocsp.OCSPResponseStatus.UNAUTHORIZED,
                                      ocsp.OCSPResponseStatus.SUCCESSFUL)


def test_a_ca_near_its_end_keeps_one_responder(rt: Runtime, clock: FakeClock) -> None:
    issuing = rt.authority("issuing")
    clock.advance(issuing.not_after - timedelta(days=1) - rt.now())
    cert = _issue(rt, "dev-late")
    first, _ = _ask(rt, int(cert.serial, 16), nonce=True)
    second, _ = _ask(rt, int(cert.serial, 16), nonce=True)
    (one,), (two,) = first.certificates, second.certificates
    assert one.serial_number == two.serial_number
    assert one.not_valid_after_utc == issuing.not_after
    assert second.next_update_utc <= issuing.not_after


def test_a_recheck_makes_answers_servable_from_memory_again(rt: Runtime,
                                                            clock: FakeClock) -> None:
    rt.settings.hot_cache_seconds = 0.3
    clock.advance(timedelta(microseconds=250_000))  # a clock between two whole seconds
    cert = _issue(rt)
    body = build_request(_cert_id(rt, int(cert.serial, 16)), None)
    first = answer(rt, body)
    assert answer_from_memory(rt, body) is first
    time.sleep(0.35)
    assert answer_from_memory(rt, body) is None  # the check period is over
    assert answer(rt, body) is first  # checked again, unchanged: the same answer
    assert answer_from_memory(rt, body) is first  # and from memory again at once
    cache = rt.get(_CACHE)
    assert cache is not None
    epoch = cache.epoch
    answer(rt, build_request(_cert_id(rt, 0x4242), None))
    assert cache.epoch == epoch  # no new check while the period runs
