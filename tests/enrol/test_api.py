"""The EST application in-process (iotsec.api.est): every operation, its formats and
each status code RFC 7030 gives, over ASGI with the TLS layer's client chain in the scope."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import threading
from datetime import timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from starlette.concurrency import run_in_threadpool

from iotsec.api.est import EST_THREADS
from iotsec.app.enrol import est as est_service
from iotsec.app.enrol.claims import add_claim_ca
from iotsec.app.enrol.secrets import create_secret
from iotsec.app.enrol.templates import add_template
from iotsec.app.identity.devices import NewDevice, add_device, get_device
from iotsec.app.pki.cert_records import get_certificate
from iotsec.app.pki.group_issuance import groups_of
from iotsec.app.pki.issuance import issue_from_csr
from iotsec.app.runtime import Runtime
from iotsec.errors import KeyCustodyError, StoreError
from iotsec.identity.enrolment import Template
from iotsec.identity.registry import DeviceState
from iotsec.pki.est import MAX_EST_BODY, decode_base64_body, read_certs_only
from iotsec.pki.serial import format_serial
from tests.conftest import FakeClock
from tests.enrol.asgi_est import (
    EstApp,
    Manufacturer,
    assert_text_error,
    basic,
    csr,
    issued_certificate,
    pem,
)
from tests.helpers import make_key


@pytest.fixture
def database_url() -> None:
    """SQLite only: these tests are about HTTP; the flows are tested on both stores by the
    service tests."""
    return None


@pytest.fixture
def est(rt: Runtime) -> EstApp:
    """The EST app over ``rt``, with the failure throttle lifted so that a test may make
    many refused calls (tests/enrol/test_api_attacks.py checks the throttle itself)."""
    rt.settings.auth_failure_limit = 1_000_000
    return EstApp(rt)


def device_secret(rt: Runtime, device_id: str = "dev-1", *, uses: int = 1) -> tuple[str, str]:
    add_device(rt, NewDevice.parse(device_id))
    info, secret = create_secret(rt, device_id=device_id, template=None, uses=uses)
    return info.id, secret


def template_secret(rt: Runtime, name: str = "sensors", *, uses: int = 1,
                    **options: object) -> tuple[str, str]:
    add_template(rt, Template.parse(name, groups=["sensors"], **options))  # type: ignore[arg-type]
    info, secret = create_secret(rt, device_id=None, template=name, uses=uses)
    return info.id, secret


def cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


# --- cacerts, csrattrs ---------------------------------------------------------------------


def test_cacerts_is_the_issuing_chain_in_base64_certs_only(est: EstApp, rt: Runtime) -> None:
    resp = est.get("cacerts")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/pkcs7-mime"
    assert resp.headers["content-transfer-encoding"] == "base64"
    assert resp.headers["strict-transport-security"] == "max-age=63072000"
    assert resp.headers["x-content-type-options"] == "nosniff"
    certs = read_certs_only(decode_base64_body(resp.content))
    expected = {rt.authority("issuing").certificate, rt.authority("root").certificate}
    assert set(certs) == expected


def test_csrattrs_and_labels(est: EstApp, rt: Runtime) -> None:
    resp = est.get("csrattrs")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/csrattrs"
    plain = decode_base64_body(resp.content)
    add_template(rt, Template.parse("by-serial", id_from="serial-number"))
    labelled = decode_base64_body(est.get("csrattrs", label="by-serial").content)
    serial_number_oid = bytes.fromhex("0603550405")
    assert serial_number_oid not in plain and serial_number_oid in labelled
    assert est.get("cacerts", label="by-serial").status_code == 200
    assert "no provisioning template" in assert_text_error(
        est.get("cacerts", label="nobody"), 404)
    assert_text_error(est.get("csrattrs", label="nobody"), 404)


def test_unknown_operations_labels_and_methods(est: EstApp) -> None:
    assert_text_error(est.get("fullcmc"), 404)
    assert_text_error(est.request("GET", "/.well-known/est/a/b/cacerts"), 404)
    assert_text_error(est.request("GET", "/.well-known/est/-bad/cacerts"), 404)
    assert_text_error(est.request("GET", "/v1/devices"), 404)
    for method, op, allowed in (("POST", "cacerts", "GET"), ("PUT", "csrattrs", "GET"),
                                ("GET", "simpleenroll", "POST"), ("DELETE", "serverkeygen", "POST"),
                                ("HEAD", "simplereenroll", "POST")):
        resp = est.request(method, f"/.well-known/est/{op}")
        assert resp.status_code == 405, (method, op)
        assert resp.headers["allow"] == allowed
        if method != "HEAD":
            assert_text_error(resp, 405)


# --- simpleenroll --------------------------------------------------------------------------


def test_simpleenroll_with_a_device_secret(est: EstApp, rt: Runtime) -> None:
    secret = device_secret(rt, "dev-1")
    key = make_key()
    cert = issued_certificate(est.post("simpleenroll", csr(key, cn="someone-else"),
                                       secret=secret))
    assert cn(cert) == "dev-1"  # the registry names the device, never the CSR
    assert cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == \
        key.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    assert get_device(rt, "dev-1").state is DeviceState.ACTIVE
    # Used up: the same request again is a refused credential.
    assert "authentication required" in assert_text_error(
        est.post("simpleenroll", csr(), secret=secret), 401)


def test_simpleenroll_credentials_refused_with_401(est: EstApp, rt: Runtime) -> None:
    secret_id, secret = device_secret(rt, "dev-1", uses=5)
    good = csr()
    wrong_secret = secret[:-1] + ("B" if secret.endswith("A") else "A")
    cases = {
        "no credential": {},
        "wrong secret": {"Authorization": basic(secret_id, wrong_secret)},
        "unknown id": {"Authorization": basic("es_" + "a" * 16, secret)},
        "bearer": {"Authorization": "Bearer " + secret},
        "no token": {"Authorization": "Basic"},
        "not base64": {"Authorization": "Basic !!!!"},
        "no colon": {"Authorization": "Basic " + "bm9jb2xvbg=="},
        "empty user": {"Authorization": basic("", secret)},
        "control character": {"Authorization": basic(secret_id, secret + "\x00")},
        "huge": {"Authorization": "Basic " + "QUFB" * 400},
        "latin-1": {"Authorization": "Basic " + "6Tpl"},
    }
    for name, headers in cases.items():
        resp = est.post("simpleenroll", good, headers=headers)
        text = assert_text_error(resp, 401)
        assert secret not in resp.text and secret_id not in resp.text, name
        assert "authentication required" in text, name
    # The scheme is case-insensitive, and the secret was never consumed by the refusals.
    issued_certificate(est.post("simpleenroll", good, headers={
        "Authorization": basic(secret_id, secret).replace("Basic", "bAsIc")}))


def test_simpleenroll_bodies_and_content_types(est: EstApp, rt: Runtime) -> None:
    secret = device_secret(rt, "dev-1", uses=3)
    good = csr()
    for content_type in ("application/json", "text/plain", "application/pkcs7-mime", ""):
        resp = est.post("simpleenroll", good, secret=secret,
                        headers={"Content-Type": content_type})
        assert "application/pkcs10" in assert_text_error(resp, 415)
    resp = est.post("simpleenroll", good, secret=secret, headers={"Content-Type": "x"})
    assert_text_error(resp, 415)
    assert "not base64" in assert_text_error(
        est.post("simpleenroll", secret=secret, body=b"not base64 at all!"), 400)
    assert assert_text_error(est.post("simpleenroll", secret=secret, body=b""), 400)
    assert "PKCS#10" in assert_text_error(
        est.post("simpleenroll", secret=secret, body=b"QUJDRA=="), 400)
    assert "65536 bytes" in assert_text_error(
        est.post("simpleenroll", secret=secret, body=b"A" * (MAX_EST_BODY + 4)), 413)
    # Parameters and case of the media type are fine, so is a PEM-less raw base64 line.
    resp = est.post("simpleenroll", good, secret=secret,
                    headers={"Content-Type": "Application/PKCS10; charset=binary"})
    issued_certificate(resp)


def test_an_oversize_body_is_refused_while_it_streams(est: EstApp, rt: Runtime) -> None:
    secret = device_secret(rt, "dev-1")
    sent = 0

    async def chunks():  # type: ignore[no-untyped-def]
        nonlocal sent
        for _ in range(1000):
            sent += 8192
            yield b"A" * 8192

    resp = est.request("POST", "/.well-known/est/simpleenroll", content=chunks(),
                       headers={"Content-Type": "application/pkcs10",
                                "Authorization": basic(*secret)})
    assert_text_error(resp, 413)
    assert sent < 1000 * 8192  # the rest of the stream was never asked for


def test_simpleenroll_under_a_template_creates_the_device(est: EstApp, rt: Runtime) -> None:
    secret = template_secret(rt, "sensors", uses=2)
    cert = issued_certificate(est.post("simpleenroll", csr(cn="sensor-7"), secret=secret,
                                       label="sensors"))
    assert cn(cert) == "sensor-7"
    assert get_device(rt, "sensor-7").groups == ("sensors",)
    # The label names the template the secret is for; another label is refused (403).
    add_template(rt, Template.parse("other"))
    assert_text_error(est.post("simpleenroll", csr(cn="sensor-8"), secret=secret,
                               label="other"), 403)
    # An existing device is never taken by a template enrolment.
    add_device(rt, NewDevice.parse("taken"))
    assert_text_error(est.post("simpleenroll", csr(cn="taken"), secret=secret), 403)
    assert_text_error(est.post("simpleenroll", csr(cn="a/b"), secret=secret), 400)


def test_approval_answers_202_until_approved(est: EstApp, rt: Runtime) -> None:
    secret = template_secret(rt, "gated", require_approval=True)
    key = make_key()
    request = csr(key, cn="gate-1")
    for _ in range(2):
        resp = est.post("simpleenroll", request, secret=secret)
        assert resp.status_code == 202, resp.text
        assert resp.headers["retry-after"] == str(rt.settings.est_retry_after)
        assert resp.headers["content-type"] == "text/plain; charset=utf-8"
        assert "gate-1" in resp.text
    assert get_device(rt, "gate-1").state is DeviceState.AWAITING_APPROVAL
    # Another key with the same credential is not the waiting request.
    assert_text_error(est.post("simpleenroll", csr(cn="gate-1"), secret=secret), 403)
    est_service.approve(rt, "gate-1")
    assert cn(issued_certificate(est.post("simpleenroll", request, secret=secret))) == "gate-1"
    assert get_device(rt, "gate-1").state is DeviceState.ACTIVE


def test_a_key_held_by_another_device_is_refused(est: EstApp, rt: Runtime) -> None:
    key = make_key()
    add_device(rt, NewDevice.parse("holder"))
    issue_from_csr(rt, "holder", csr(key))
    secret = device_secret(rt, "dev-1")
    text = assert_text_error(est.post("simpleenroll", csr(key), secret=secret), 403)
    assert "holder" not in text  # another device's name is not the client's to learn


# --- claims --------------------------------------------------------------------------------


def test_simpleenroll_by_claim_once(est: EstApp, rt: Runtime) -> None:
    add_template(rt, Template.parse("factory", id_from="serial-number"))
    maker = Manufacturer.create()
    add_claim_ca(rt, "acme", maker.pem, "factory")
    _, claim = maker.claim("HW-0001")
    chain = [pem(claim)]
    cert = issued_certificate(est.post("simpleenroll", csr(cn="ignored"), chain=chain))
    assert cn(cert) == "HW-0001"
    assert_text_error(est.post("simpleenroll", csr(), chain=chain), 403)  # used once
    # A certificate of a CA nobody registered.
    _, stranger = Manufacturer.create("Other CA").claim("HW-0002")
    assert_text_error(est.post("simpleenroll", csr(), chain=[pem(stranger)]), 401)


# --- simplereenroll ------------------------------------------------------------------------


def _device_certificate(rt: Runtime, device_id: str) -> str:
    add_device(rt, NewDevice.parse(device_id))
    return issue_from_csr(rt, device_id, csr()).pem


def test_simplereenroll_with_the_tls_client_certificate(est: EstApp, rt: Runtime) -> None:
    current = _device_certificate(rt, "dev-1")
    new = issued_certificate(est.post("simplereenroll", csr(cn="evil"), chain=[current]))
    assert cn(new) == "dev-1"
    old = get_certificate(rt, format_serial(
        x509.load_pem_x509_certificate(current.encode()).serial_number))
    assert old.replaced_by == format_serial(new.serial_number)
    # Renewed once: the old certificate renews no more.
    assert_text_error(est.post("simplereenroll", csr(), chain=[current]), 403)
    assert_text_error(est.post("simplereenroll", csr(), chain=[pem(new)],
                               label="nobody"), 404)


def test_simplereenroll_needs_the_tls_certificate(est: EstApp, rt: Runtime) -> None:
    secret = device_secret(rt, "dev-1")
    assert_text_error(est.post("simplereenroll", csr()), 401)
    assert_text_error(est.post("simplereenroll", csr(), secret=secret), 401)
    # A certificate iotsec did not issue (a claim certificate) does not re-enrol.
    add_template(rt, Template.parse("factory", id_from="serial-number"))
    maker = Manufacturer.create()
    add_claim_ca(rt, "acme", maker.pem, "factory")
    _, claim = maker.claim("HW-0001")
    assert_text_error(est.post("simplereenroll", csr(), chain=[pem(claim)]), 403)


# --- serverkeygen --------------------------------------------------------------------------


def _parts(resp: httpx.Response) -> list[email.message.EmailMessage]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("multipart/mixed; boundary=")
    message = email.message_from_bytes(
        b"Content-Type: " + resp.headers["content-type"].encode() + b"\r\n\r\n" + resp.content,
        policy=email.policy.default)
    return list(message.iter_parts())  # type: ignore[attr-defined]


def test_serverkeygen_with_a_secret_and_with_the_tls_certificate(est: EstApp,
                                                                 rt: Runtime) -> None:
    secret = device_secret(rt, "dev-1")
    client_key = make_key()
    parts = _parts(est.post("serverkeygen", csr(client_key), secret=secret))
    assert [p.get_content_type() for p in parts] == ["application/pkcs8",
                                                     "application/pkcs7-mime"]
    key = serialization.load_der_private_key(parts[0].get_content(), password=None)
    (cert,) = read_certs_only(parts[1].get_content())
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        key.public_key().public_bytes(serialization.Encoding.DER, spki)
    assert cert.public_key().public_bytes(serialization.Encoding.DER, spki) != \
        client_key.public_key().public_bytes(serialization.Encoding.DER, spki)
    assert cn(cert) == "dev-1"
    # Again over mutual TLS with the certificate just made: a renewal with a new key.
    again = _parts(est.post("serverkeygen", csr(), chain=[pem(cert)]))
    (renewed,) = read_certs_only(again[1].get_content())
    assert cn(renewed) == "dev-1" and renewed.serial_number != cert.serial_number


def test_serverkeygen_pending_answers_202(est: EstApp, rt: Runtime) -> None:
    secret = template_secret(rt, "gated", require_approval=True)
    resp = est.post("serverkeygen", csr(cn="gate-2"), secret=secret)
    assert resp.status_code == 202 and int(resp.headers["retry-after"]) >= 1


# --- never a 500 ---------------------------------------------------------------------------


def test_failures_inside_are_503_never_500(est: EstApp, rt: Runtime,
                                           monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    secret = device_secret(rt, "dev-1")

    async def broken(*_: object, **__: object) -> None:
        raise RuntimeError("the disk caught fire")

    def custody(*_: object, **__: object) -> None:
        raise KeyCustodyError("the token is gone")

    monkeypatch.setattr(est_service, "enrol_async", broken)
    monkeypatch.setattr(est_service, "cacerts", custody)
    text = assert_text_error(est.post("simpleenroll", csr(), secret=secret), 503)
    assert "fire" not in text
    assert "token" not in assert_text_error(est.get("cacerts"), 503)
    assert "the disk caught fire" in caplog.text and "the token is gone" in caplog.text


def test_a_failure_of_the_group_is_503_and_the_next_enrolment_is_served(
        est: EstApp, rt: Runtime) -> None:
    # The group commit's thread fails a group before its commit: its request is answered
    # 503 (nothing written), and the thread goes on to serve the next one.
    secret = device_secret(rt, "dev-1")
    groups = groups_of(rt)
    crashes = [StoreError("the disk holding the database failed (I/O error)")]

    def crash() -> None:
        if crashes:
            raise crashes.pop()

    groups.before_commit = crash
    assert_text_error(est.post("simpleenroll", csr(), secret=secret), 503)
    assert get_device(rt, "dev-1").state is DeviceState.PENDING
    answer = est.post("simpleenroll", csr(), secret=secret)
    assert answer.status_code == 200
    assert cn(issued_certificate(answer)) == "dev-1"


def _hold_commits(rt: Runtime) -> tuple[threading.Event, list[int]]:
    """Hold each group's commit (in the group commit's thread) until the event is set;
    the list counts the commits."""
    release = threading.Event()
    commits: list[int] = []

    def held() -> None:
        assert release.wait(10)
        commits.append(1)

    groups_of(rt).before_commit = held
    return release, commits


def test_the_event_loop_stays_free_while_an_enrolment_waits_for_its_commit(
        est: EstApp, rt: Runtime) -> None:
    release, commits = _hold_commits(rt)
    secret = device_secret(rt, "dev-1")

    async def both() -> tuple[httpx.Response, httpx.Response]:
        async with est.client() as client:
            enrolling = asyncio.create_task(client.post(
                "/.well-known/est/simpleenroll", content=base64.encodebytes(csr()),
                headers={"Content-Type": "application/pkcs10",
                         "Authorization": basic(*secret)}))
            await asyncio.sleep(0.2)
            cacerts = await asyncio.wait_for(client.get("/.well-known/est/cacerts"), 5)
            assert not enrolling.done()  # answered only after its commit
            release.set()
            return cacerts, await enrolling

    cacerts, enrolled = asyncio.run(both())
    assert cacerts.status_code == 200
    assert cn(issued_certificate(enrolled)) == "dev-1"
    assert commits == [1]


def test_the_event_loop_stays_free_while_a_claim_enrolment_works(
        est: EstApp, rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    # An enrolment by claim certificate (which reads the store and may ask a hook before
    # its unit of work) runs in one of the EST threads.
    add_template(rt, Template.parse("factory", id_from="serial-number"))
    maker = Manufacturer.create()
    add_claim_ca(rt, "acme", maker.pem, "factory")
    _, claim = maker.claim("HW-0001")
    release = threading.Event()
    real = est_service.enrol

    def slow(*args: object, **kwargs: object) -> object:
        assert release.wait(10)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(est_service, "enrol", slow)

    async def both() -> tuple[httpx.Response, httpx.Response]:
        async with est.client(chain=[pem(claim)]) as client:
            enrolling = asyncio.create_task(client.post(
                "/.well-known/est/simpleenroll", content=base64.encodebytes(csr()),
                headers={"Content-Type": "application/pkcs10"}))
            await asyncio.sleep(0.2)
            cacerts = await asyncio.wait_for(client.get("/.well-known/est/cacerts"), 5)
            release.set()
            return cacerts, await enrolling

    cacerts, enrolled = asyncio.run(both())
    assert cacerts.status_code == 200
    assert cn(issued_certificate(enrolled)) == "HW-0001"


def test_a_storm_of_enrolments_holds_no_thread_while_it_waits(est: EstApp, rt: Runtime
                                                              ) -> None:
    """Enrolments with a secret wait for their group's commit on the event loop: a storm
    of them holds neither the EST threads (cacerts is answered from one meanwhile) nor the
    thread pool the API's routes (the CRL, decisions) answer from, and is answered after
    the commits, in two groups at most (the first group's commit is held until the storm
    waits; the others then form one group)."""
    release, commits = _hold_commits(rt)
    secrets_ = [device_secret(rt, f"dev-{n}") for n in range(EST_THREADS + 3)]

    async def storm() -> list[httpx.Response]:
        async with est.client() as client:
            posts = [asyncio.create_task(client.post(
                "/.well-known/est/simpleenroll", content=base64.encodebytes(csr()),
                headers={"Content-Type": "application/pkcs10",
                         "Authorization": basic(*secret)})) for secret in secrets_]
            await asyncio.sleep(0.3)
            assert await asyncio.wait_for(run_in_threadpool(lambda: 42), 2) == 42
            cacerts = await asyncio.wait_for(client.get("/.well-known/est/cacerts"), 5)
            assert cacerts.status_code == 200
            assert not any(post.done() for post in posts)
            release.set()
            return list(await asyncio.gather(*posts))

    answers = asyncio.run(storm())
    assert [a.status_code for a in answers] == [200] * len(secrets_)
    assert sorted(cn(issued_certificate(a)) for a in answers) == sorted(
        f"dev-{n}" for n in range(len(secrets_)))
    assert 1 <= len(commits) <= 2


def test_est_operations_in_threads_keep_to_their_own(est: EstApp, rt: Runtime,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """EST operations that run in threads run in EST_THREADS threads of their own: a storm
    of them queues there and leaves the thread pool the API's routes answer from free."""
    release = threading.Event()
    running: list[int] = []
    most = 0
    lock = threading.Lock()
    real = est_service.cacerts

    def slow(*args: object, **kwargs: object) -> bytes:
        nonlocal most
        with lock:
            running.append(1)
            most = max(most, len(running))
        try:
            assert release.wait(10)
            return real(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                running.pop()

    monkeypatch.setattr(est_service, "cacerts", slow)

    async def storm() -> list[httpx.Response]:
        async with est.client() as client:
            gets = [asyncio.create_task(client.get("/.well-known/est/cacerts"))
                    for _ in range(EST_THREADS + 3)]
            await asyncio.sleep(0.3)
            # The default thread pool (what the API's routes run in) still answers.
            assert await asyncio.wait_for(run_in_threadpool(lambda: 42), 2) == 42
            release.set()
            return list(await asyncio.gather(*gets))

    answers = asyncio.run(storm())
    assert [a.status_code for a in answers] == [200] * (EST_THREADS + 3)
    assert most == EST_THREADS


def test_secrets_expire(est: EstApp, rt: Runtime, clock: FakeClock) -> None:
    add_device(rt, NewDevice.parse("dev-1"))
    info, secret = create_secret(rt, device_id="dev-1", template=None,
                                 expires_in=timedelta(minutes=5))
    clock.advance(timedelta(minutes=6))
    assert_text_error(est.post("simpleenroll", csr(), secret=(info.id, secret)), 401)
