"""``GET /crl/delta`` and ``GET /crl/p/{k}``: public, DER, answered from memory like
``/crl``, and bad partitions answered with a problem, never a 500."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from cryptography import x509
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.pki import crl as crl_service
from iotsec.app.pki.issuance import issue_from_csr
from iotsec.app.pki.revocation import revoke
from iotsec.app.runtime import Runtime
from iotsec.pki.crl import RevocationReason
from tests.helpers import make_csr

CRL_URL = "http://testserver/crl"


def _crl(client: TestClient, path: str) -> x509.CertificateRevocationList:
    resp = client.get(path)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/pkix-crl"
    return x509.load_der_x509_crl(resp.content)


def test_delta_crl_route(anon: TestClient, rt: Runtime, monkeypatch: pytest.MonkeyPatch
                         ) -> None:
    rt.settings.crl_url = CRL_URL
    add_device(rt, NewDevice.parse("dev-1"))
    cert = issue_from_csr(rt, "dev-1", make_csr())
    complete = _crl(anon, "/crl")
    base = complete.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    delta = _crl(anon, "/crl/delta")
    assert delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value \
        .crl_number == base
    assert len(delta) == 0
    # Answered from memory until this process records a revocation.
    calls: list[str] = []
    real = crl_service.current_delta_crl
    monkeypatch.setattr(crl_service, "current_delta_crl",
                        lambda rt, **kw: calls.append("read") or real(rt, **kw))
    assert _crl(anon, "/crl/delta") == delta
    assert calls == []
    revoke(rt, cert.serial, RevocationReason.keyCompromise)
    after = _crl(anon, "/crl/delta")
    assert calls == ["read"] and [e.serial_number for e in after] == [int(cert.serial, 16)]
    root = _crl(anon, "/crl/delta?ca=root")
    assert root.issuer == rt.authority("root").certificate.subject
    assert anon.get("/crl/delta?ca=other").status_code == 422
    # The CA named by its id (the freshestCRL of its complete CRL): the same delta, kept in
    # memory under its id like the active CA's.
    ca = rt.issuing_id()
    named = complete.extensions.get_extension_for_class(x509.FreshestCRL).value
    assert [n.value for p in named for n in p.full_name or ()] == [
        f"{CRL_URL}/delta?ca={ca}"]
    by_id = _crl(anon, f"/crl/delta?ca={ca}")
    assert [e.serial_number for e in by_id] == [int(cert.serial, 16)]
    assert by_id.issuer == after.issuer
    calls.clear()
    assert _crl(anon, f"/crl/delta?ca={ca}") == by_id and calls == []
    assert _crl(anon, f"/crl/delta?ca={rt.authority_id('root')}").issuer == root.issuer
    assert anon.get("/crl/delta?ca=4242").status_code == 404
    assert anon.get("/crl/delta?ca=0").status_code == 422


def test_partition_crl_route(anon: TestClient, rt: Runtime) -> None:
    resp = anon.get("/crl/p/0")
    assert resp.status_code == 404 and "partitioning is off" in resp.json()["detail"]
    rt.settings.crl_url = CRL_URL
    rt.settings.crl_partitions = 2
    add_device(rt, NewDevice.parse("dev-1"))
    cert = issue_from_csr(rt, "dev-1", make_csr())
    k = int(cert.serial, 16) % 2
    revoke(rt, cert.serial)
    parsed = _crl(anon, f"/crl/p/{k}")
    assert [e.serial_number for e in parsed] == [int(cert.serial, 16)]
    idp = parsed.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    ca = rt.issuing_id()
    assert [n.value for n in idp.full_name or ()] == [f"{CRL_URL}/p/{k}?ca={ca}",
                                                    f"{CRL_URL}/p/{k}"]
    assert len(_crl(anon, f"/crl/p/{1 - k}")) == 0
    assert anon.get("/crl/p/2").status_code == 404
    # The CA named by its id, as the certificate's CDP names it: the same CRL.
    assert _crl(anon, f"/crl/p/{k}?ca={ca}") == parsed
    # The root has no partitions; an unknown id is 404; junk is refused, never a 500.
    assert anon.get(f"/crl/p/{k}?ca={rt.authority_id('root')}").status_code == 404
    assert anon.get(f"/crl/p/{k}?ca=999").status_code == 404
    for junk in ("0", "-1", "root", "1e3", "x" * 300, "9999999999"):
        assert anon.get(f"/crl/p/{k}", params={"ca": junk}).status_code == 422


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.integers(min_value=-10**30, max_value=10**30).map(str),
                 st.text(min_size=1, max_size=40)))
def test_any_partition_path_is_answered_without_a_500(anon: TestClient, path: str) -> None:
    """Partitioning is off here: every partition, valid or not, gets a problem document."""
    resp = anon.get("/crl/p/" + quote(path, safe=""))
    assert resp.status_code in (404, 422), (path, resp.status_code)
    assert resp.headers["content-type"] == "application/problem+json", resp.headers
