"""Attacks on the EST application in-process: client certificates forged in headers, the
failed-attempt throttle, and fuzzed requests (never a 5xx, always a one-line answer)."""

from __future__ import annotations

import asyncio
import base64
import urllib.parse
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from iotsec.app.enrol.claims import add_claim_ca
from iotsec.app.enrol.secrets import create_secret
from iotsec.app.enrol.templates import add_template
from iotsec.app.identity.devices import NewDevice, add_device, get_device
from iotsec.app.pki.cert_records import list_certificates
from iotsec.app.pki.issuance import issue_from_csr
from iotsec.app.runtime import Runtime
from iotsec.errors import NotFoundError
from iotsec.identity.enrolment import Template
from tests.enrol.asgi_est import (
    EstApp,
    Manufacturer,
    WithTls,
    assert_text_error,
    basic,
    csr,
    pem,
)


@pytest.fixture
def database_url() -> None:
    """SQLite only (HTTP behaviour; the services are tested on both stores)."""
    return None


def _forged_headers(cert_pem: str) -> list[dict[str, str]]:
    """The ways proxies pass a client certificate on: nginx, Apache, Envoy, RFC 9440."""
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(
        serialization.Encoding.DER)
    quoted = urllib.parse.quote(cert_pem)
    colon = ":" + base64.b64encode(der).decode() + ":"
    return [
        {"X-SSL-Client-Cert": quoted},
        {"X-Client-Cert": quoted},
        {"X-Forwarded-Client-Cert": f'Hash=00;Cert="{quoted}";Subject="CN=dev-1"'},
        {"Client-Cert": colon, "Client-Cert-Chain": colon},
        {"SSL-Client-Cert": quoted, "X-SSL-Client-Verify": "SUCCESS",
         "X-SSL-Client-S-DN": "CN=dev-1"},
        {"X-SSL-Client-Cert": quoted, "X-Client-Cert": quoted,
         "X-Forwarded-Client-Cert": f'Cert="{quoted}"', "X-Forwarded-For": "127.0.0.1"},
    ]


def test_a_client_certificate_in_a_header_is_ignored(rt: Runtime) -> None:
    rt.settings.auth_failure_limit = 1_000_000
    est = EstApp(rt)
    add_device(rt, NewDevice.parse("dev-1"))
    current = issue_from_csr(rt, "dev-1", csr()).pem
    add_template(rt, Template.parse("factory", id_from="serial-number"))
    maker = Manufacturer.create()
    add_claim_ca(rt, "acme", maker.pem, "factory")
    _, claim = maker.claim("HW-0001")
    before = list_certificates(rt, device_id="dev-1")
    for headers in _forged_headers(current):
        for op in ("simplereenroll", "simpleenroll", "serverkeygen"):
            assert_text_error(est.post(op, csr(), headers=headers), 401)
    for headers in _forged_headers(pem(claim)):
        assert_text_error(est.post("simpleenroll", csr(), headers=headers), 401)
    assert list_certificates(rt, device_id="dev-1") == before
    # The same certificate from the TLS layer is what re-enrols.
    assert est.post("simplereenroll", csr(), chain=[current]).status_code == 200


def test_failed_attempts_are_throttled_per_source(rt: Runtime) -> None:
    rt.settings.auth_failure_limit = 3
    est = EstApp(rt)
    add_device(rt, NewDevice.parse("dev-1"))
    info, secret = create_secret(rt, device_id="dev-1", template=None, uses=10)
    wrong = (info.id, "x" * 43)
    for _ in range(3):
        assert_text_error(est.post("simpleenroll", csr(), secret=wrong, source="198.51.100.1"),
                          401)
    blocked = est.post("simpleenroll", csr(), secret=(info.id, secret), source="198.51.100.1")
    assert_text_error(blocked, 429)
    assert 1 <= int(blocked.headers["retry-after"]) <= 61
    for op in ("simplereenroll", "serverkeygen"):
        assert_text_error(est.post(op, csr(), source="198.51.100.1"), 429)
    # Malformed Basic headers count too.
    for _ in range(3):
        assert_text_error(est.post("simpleenroll", csr(), source="198.51.100.2",
                                   headers={"Authorization": "Basic !"}), 401)
    assert_text_error(est.post("simpleenroll", csr(), source="198.51.100.2",
                               headers={"Authorization": "Basic !"}), 429)
    # A request without any credential is HTTP's challenge, not a failure.
    for _ in range(5):
        assert_text_error(est.post("simpleenroll", csr(), source="198.51.100.3"), 401)
    # Another address is not affected.
    assert est.post("simpleenroll", csr(), secret=(info.id, secret),
                    source="198.51.100.3").status_code == 200
    # GETs carry no credential and are never throttled.
    assert est.get("cacerts", source="198.51.100.1").status_code == 200


_PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120)


@hsettings(max_examples=80, deadline=None, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(op=st.sampled_from(["simpleenroll", "simplereenroll", "serverkeygen", "cacerts",
                           "csrattrs", "fullcmc"]),
       method=st.sampled_from(["GET", "POST", "PUT"]),
       label=st.one_of(st.none(), st.sampled_from(["sensors", "nobody", "-x", "a.b"])),
       body=st.one_of(st.binary(max_size=1024),
                      st.binary(max_size=700).map(base64.encodebytes)),
       content_type=st.one_of(st.sampled_from(["application/pkcs10", "text/plain", ""]),
                              _PRINTABLE),
       authorization=st.one_of(st.none(), _PRINTABLE, st.sampled_from(["valid", "Basic"]),
                               _PRINTABLE.map(lambda t: "Basic " + t)))
def test_fuzz_requests_never_fail_on_the_server_side(
        rt: Runtime, op: str, method: str, label: str | None, body: bytes,
        content_type: str, authorization: str | None) -> None:
    rt.settings.auth_failure_limit = 1_000_000
    _fleet(rt)
    headers = {"Content-Type": content_type}
    if authorization == "valid":
        info, secret = create_secret(rt, device_id="fuzz", template=None)
        authorization = basic(info.id, secret)
    if authorization is not None:
        headers["Authorization"] = authorization
    path = f"/.well-known/est/{label}/{op}" if label else f"/.well-known/est/{op}"
    resp = EstApp(rt).request(method, path, content=body, headers=headers)
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert_text_error(resp, resp.status_code)


def _fleet(rt: Runtime) -> None:
    """A device and a template for the fuzzed requests, made on the first example."""
    try:
        get_device(rt, "fuzz")
    except NotFoundError:
        add_device(rt, NewDevice.parse("fuzz"))
        add_template(rt, Template.parse("sensors"))


def test_a_client_that_leaves_mid_body_is_no_server_error(
        rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    rt.settings.auth_failure_limit = 1_000_000
    add_device(rt, NewDevice.parse("dev-1"))
    info, secret = create_secret(rt, device_id="dev-1", template=None)
    app = WithTls(EstApp(rt).app)
    incoming = [{"type": "http.request", "body": b"QUJD", "more_body": True},
                {"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "https", "path": "/.well-known/est/simpleenroll",
             "raw_path": b"/.well-known/est/simpleenroll", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"application/pkcs10"),
                         (b"authorization", basic(info.id, secret).encode())],
             "client": ("192.0.2.1", 1000), "server": ("127.0.0.1", 8444)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400
    assert "unexpected" not in caplog.text
