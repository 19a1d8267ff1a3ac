"""The device's EST client against a scripted server over real TLS: what it sends (RFC 7030
paths, base64 PKCS#10, HTTP Basic), how it reads answers (bounded, typed, the certificate
for its own key) and what each refusal becomes; and :func:`enrol`'s polite waiting."""

from __future__ import annotations

import base64
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iotsec.device import EnrolmentPending, EstClient, enrol
from iotsec.errors import (
    ConflictError,
    EnrolmentAuthError,
    EnrolmentForbiddenError,
    EstError,
    InvalidInputError,
    NotFoundError,
    ThrottledError,
)
from iotsec.pki.est import certs_only, decode_base64_body, serverkeygen_body
from iotsec.pki.serial import format_serial
from iotsec.sdk.credentials import make_csr
from iotsec.sdk.est import MAX_EST_RESPONSE, parse_retry_after
from tests.enrol.stub_est import Answer, Pki, certs_answer, stub_est

SECRET = ("es_abcdefghijklmnop", "s3cr3t-value-never-shown")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def _csr() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, make_csr(key, common_name="sensor-1")


def _key_of_csr(body: bytes) -> bytes:
    csr = x509.load_der_x509_csr(decode_base64_body(body))
    return csr.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def test_cacerts_and_enrol_requests_are_rfc7030(pki: Pki) -> None:
    key, csr = _csr()
    mine = pki.issue(key.public_key(), "sensor-1")
    other = pki.issue(ec.generate_private_key(ec.SECP256R1()).public_key(), "other")
    with stub_est(pki, [certs_answer(pki.ca), certs_answer(other, mine)]) as stub:
        client = EstClient(stub.url, ca_file=pki.ca_file, label="line-7")
        assert client.cacerts() == [pki.ca]
        # The answer holds two certificates: the client takes the one for its key.
        assert client.simpleenroll(csr, basic=SECRET) == mine
    get, post = stub.seen
    assert (get.method, get.path) == ("GET", "/.well-known/est/line-7/cacerts")
    assert "authorization" not in get.headers
    assert (post.method, post.path) == ("POST", "/.well-known/est/line-7/simpleenroll")
    assert post.headers["content-type"] == "application/pkcs10"
    assert post.headers["content-transfer-encoding"] == "base64"
    assert decode_base64_body(post.body) == csr
    user, _, password = base64.b64decode(
        post.headers["authorization"].removeprefix("Basic ")).decode().partition(":")
    assert (user, password) == SECRET


@pytest.mark.parametrize(("answer", "error", "text"), [
    (Answer(401, b"enrolment refused\n"), EnrolmentAuthError, "did not accept"),
    (Answer(403, b"device taken\n"), EnrolmentForbiddenError, "device taken"),
    (Answer(429, b"slow down\n", (("Retry-After", "30"),)), ThrottledError, "throttles"),
    (Answer(404, b"no such label\n"), NotFoundError, "no simpleenroll"),
    (Answer(413, b"too large\n"), InvalidInputError, "refused the simpleenroll"),
    (Answer(503, b"busy\n", (("Retry-After", "5"),)), EstError, "503"),
    (Answer(200, b"x", (("Content-Type", "text/html"),)), EstError, "text/html"),
    (Answer(200, b"@@@ not base64",
            (("Content-Type", "application/pkcs7-mime"),)), EstError, "not a certs-only"),
    (Answer(200, b"A" * (MAX_EST_RESPONSE + 1),
            (("Content-Type", "application/pkcs7-mime"),)), EstError, "larger than"),
    (Answer(200, b"A" * (MAX_EST_RESPONSE + 8), (("Content-Type", "application/pkcs7-mime"),
                                                  ("Transfer-Encoding", "chunked"))),
     EstError, "larger than"),
])
def test_refusals_and_bad_answers_become_iotsec_errors(pki: Pki, answer: Answer,
                                                       error: type[Exception],
                                                       text: str) -> None:
    _, csr = _csr()
    with stub_est(pki, [answer]) as stub:
        client = EstClient(stub.url, ca_file=pki.ca_file)
        with pytest.raises(error, match=text) as caught:
            client.simpleenroll(csr, basic=SECRET)
    assert SECRET[1] not in str(caught.value)
    if answer.status in (429, 503):
        assert caught.value.retry_after == int(dict(answer.headers)["Retry-After"])  # type: ignore[attr-defined]


def test_an_answer_for_another_key_is_refused(pki: Pki) -> None:
    _, csr = _csr()
    stranger = pki.issue(ec.generate_private_key(ec.SECP256R1()).public_key(), "sensor-1")
    with stub_est(pki, [certs_answer(stranger)]) as stub, \
            pytest.raises(EstError, match="no certificate for the key sent"):
        EstClient(stub.url, ca_file=pki.ca_file).simpleenroll(csr, basic=SECRET)


def test_202_is_enrolment_pending_with_retry_after() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7") == 7
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True),
                             now=now) == 90
    assert parse_retry_after("0") == 1 and parse_retry_after("99999999") == 86_400
    assert parse_retry_after("soon") == 60 and parse_retry_after(None) == 60


def test_the_server_must_be_the_one_the_ca_file_names(pki: Pki, tmp_path: Path) -> None:
    stranger = Pki(tmp_path / "other")
    with stub_est(pki, [certs_answer(pki.ca)]) as stub:
        with pytest.raises(EstError, match="not trusted"):
            EstClient(stub.url, ca_file=stranger.ca_file).cacerts()
        # The certificate names 127.0.0.1, not localhost: the host name is checked.
        with pytest.raises(EstError, match="not trusted"):
            EstClient(f"https://localhost:{stub.port}", ca_file=pki.ca_file).cacerts()
        assert stub.seen == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:8444", "https://u:p@127.0.0.1:8444",
                                 "https://127.0.0.1:8444/other", "https://127.0.0.1:8444/?x=1",
                                 "https://127.0.0.1:99999", "127.0.0.1:8444"])
def test_bad_urls_and_labels_are_refused(pki: Pki, url: str) -> None:
    with pytest.raises(InvalidInputError):
        EstClient(url, ca_file=pki.ca_file)


def test_bad_label_and_missing_ca_file_are_refused(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not an EST label"):
        EstClient("https://127.0.0.1:8444", ca_file=pki.ca_file, label="../x")
    with pytest.raises(InvalidInputError, match="cannot read the CA file"):
        EstClient("https://127.0.0.1:8444", ca_file=tmp_path / "absent.pem")
    assert EstClient("https://127.0.0.1:8444/.well-known/est/", ca_file=pki.ca_file).url == \
        "https://127.0.0.1:8444/.well-known/est"


def test_serverkeygen_answer_is_split_and_checked(pki: Pki) -> None:
    _, csr = _csr()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = pki.issue(key.public_key(), "sensor-1")
    key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    content_type, body = serverkeygen_body(key_der, certs_only([cert]))
    with stub_est(pki, [Answer(200, body, (("Content-Type", content_type),))]) as stub:
        got = EstClient(stub.url, ca_file=pki.ca_file).serverkeygen(csr, basic=SECRET)
    assert got.certificate == cert and got.key_pkcs8_der == key_der
    assert got.key_pem().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stub.seen[0].path == "/.well-known/est/serverkeygen"


def test_enrol_waits_politely_then_writes_the_pair(pki: Pki, tmp_path: Path) -> None:
    issued: list[x509.Certificate] = []

    def answers_for(body: bytes) -> None:
        csr = x509.load_der_x509_csr(decode_base64_body(body))
        issued.append(pki.issue(csr.public_key(), "sensor-1"))

    pending = Answer(202, b"awaiting approval\n", (("Retry-After", "1"),))
    device = tmp_path / "device"
    with stub_est(pki, [pending]) as stub:
        # Waiting is bounded: a Retry-After beyond what is left is not slept through.
        started = time.monotonic()
        with pytest.raises(EnrolmentPending) as caught:
            enrol(stub.url, dir=device, ca_file=pki.ca_file, secret=SECRET, wait=0.5)
        assert caught.value.retry_after == 1 and time.monotonic() - started < 1
        assert not (device / "cert.pem").exists()
        first_key = _key_of_csr(stub.seen[-1].body)
        answers_for(stub.seen[-1].body)
        stub.answers[:] = [pending, pending, certs_answer(issued[0])]
        started = time.monotonic()
        got = enrol(stub.url, dir=device, ca_file=pki.ca_file, secret=SECRET, wait=10)
        elapsed = time.monotonic() - started
    assert 2 <= elapsed < 6, elapsed  # two Retry-After: 1 waits, then the answer
    # Every poll presents the same key: the one made before the first request.
    assert {_key_of_csr(s.body) for s in stub.seen} == {first_key}
    assert got.device_id == "sensor-1" and got.serial == format_serial(issued[0].serial_number)
    assert (device / "key.pem").stat().st_mode & 0o777 == 0o600
    assert device.stat().st_mode & 0o777 == 0o700
    assert not (device / "key.pending.pem").exists()
    with pytest.raises(ConflictError, match="already holds"):
        enrol(stub.url, dir=device, ca_file=pki.ca_file, secret=SECRET)


def test_enrol_stops_waiting_when_asked(pki: Pki, tmp_path: Path) -> None:
    stop = threading.Event()
    pending = Answer(202, b"", (("Retry-After", "30"),))
    with stub_est(pki, [pending]) as stub:
        threading.Timer(0.5, stop.set).start()
        started = time.monotonic()
        with pytest.raises(EnrolmentPending):
            enrol(stub.url, dir=tmp_path / "d", ca_file=pki.ca_file, secret=SECRET,
                  wait=600, stop=stop)
    assert time.monotonic() - started < 5


def test_enrol_needs_exactly_one_credential(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="either"):
        enrol("https://127.0.0.1:1", dir=tmp_path, ca_file=pki.ca_file)
    with pytest.raises(InvalidInputError, match="either"):
        enrol("https://127.0.0.1:1", dir=tmp_path, ca_file=pki.ca_file, secret=SECRET,
              claim=(tmp_path / "c", tmp_path / "k"))
