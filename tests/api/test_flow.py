"""End-to-end use of the REST API: register, issue, list, revoke, publish, renew, retire."""

from __future__ import annotations

import base64
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from tests.api.support import add_device, assert_problem, issue
from tests.conftest import FakeClock
from tests.helpers import make_csr, make_key


def _chain(client: TestClient) -> tuple[x509.Certificate, x509.Certificate]:
    resp = client.get("/v1/ca/chain")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/pem-certificate-chain")
    issuing, root = x509.load_pem_x509_certificates(resp.content)
    return issuing, root


def _crl(client: TestClient, **params: str) -> x509.CertificateRevocationList:
    resp = client.get("/crl", params=params)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/pkix-crl"
    return x509.load_der_x509_crl(resp.content)


def _public_der(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _reason(crl: x509.CertificateRevocationList, serial: str) -> x509.ReasonFlags | None:
    entry = crl.get_revoked_certificate_by_serial_number(int(serial, 16))
    assert entry is not None, f"{serial} is not on the CRL"
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return None


def test_full_flow(api: TestClient, anon: TestClient, clock: FakeClock) -> None:
    device = add_device(api, "sensor-1", groups=["plant-a"], attributes={"model": "t100"})
    assert device["state"] == "pending"
    assert device["groups"] == ["plant-a"]
    assert device["attributes"] == {"model": "t100"}

    key = make_key("p256")
    short = issue(api, "sensor-1", make_csr(key, cn="spoofed-name"), days=10)
    long = issue(api, "sensor-1", make_csr())
    assert short["status"] == long["status"] == "valid"
    assert short["serial"] != long["serial"]

    # The certificate: subject from the registry, key from the CSR, chained to the CA.
    cert = x509.load_pem_x509_certificate(short["pem"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "sensor-1"
    assert _public_der(cert.public_key()) == _public_der(key.public_key())
    assert format(cert.serial_number, "X").zfill(len(short["serial"])) == short["serial"]
    issuing, root = _chain(api)
    cert.verify_directly_issued_by(issuing)
    issuing.verify_directly_issued_by(root)
    assert (cert.not_valid_after_utc - clock()) == timedelta(days=10)

    # The device became active and lists both certificates.
    shown = api.get("/v1/devices/sensor-1").json()
    assert shown["state"] == "active"
    assert {c["serial"] for c in shown["certificates"]} == {short["serial"], long["serial"]}

    listed = api.get("/v1/certificates").json()
    assert {c["serial"] for c in listed} == {short["serial"], long["serial"]}
    assert api.get("/v1/certificates", params={"device": "sensor-1"}).json() == listed
    assert api.get("/v1/certificates", params={"device": "other"}).json() == []
    one = api.get(f"/v1/certificates/{short['serial']}").json()
    assert one["pem"] == short["pem"]
    assert api.get(f"/v1/certificates/{short['serial'].lower()}").json()["serial"] == \
        short["serial"]

    # expiring_within: only the 10-day certificate is inside a 30-day window.
    soon = api.get("/v1/certificates", params={"expiring_within": "30d"}).json()
    assert [c["serial"] for c in soon] == [short["serial"]]
    both = api.get("/v1/certificates", params={"expiring_within": "400d"}).json()
    assert [c["serial"] for c in both] == [short["serial"], long["serial"]]  # soonest first
    assert api.get("/v1/certificates", params={"expiring_within": "1d"}).json() == []

    # Revoke the long one; a second revocation conflicts.
    resp = api.post(f"/v1/certificates/{long['serial']}/revoke", json={"reason": "keyCompromise"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "revoked"
    assert resp.json()["revocation_reason"] == "keyCompromise"
    again = api.post(f"/v1/certificates/{long['serial']}/revoke",
                     json={"reason": "keyCompromise"})
    assert_problem(again, 409)
    revoked_view = api.get(f"/v1/certificates/{long['serial']}").json()
    assert revoked_view["status"] == "revoked"
    # A revoked certificate is no longer "expiring".
    both = api.get("/v1/certificates", params={"expiring_within": "400d"}).json()
    assert [c["serial"] for c in both] == [short["serial"]]

    # The public CRL (no token needed) lists it with its reason, signed by the issuing CA.
    crl = _crl(anon)
    assert crl.is_signature_valid(issuing.public_key())
    assert crl.issuer == issuing.subject
    assert _reason(crl, long["serial"]) is x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(int(short["serial"], 16)) is None
    assert len(crl) == 1
    root_crl = _crl(anon, ca="root")
    assert root_crl.issuer == root.subject
    assert root_crl.is_signature_valid(root.public_key())
    assert len(root_crl) == 0
    assert_problem(anon.get("/crl", params={"ca": "other"}), 422)

    # Time passes: the 10-day certificate expires and leaves the expiring list.
    clock.advance(timedelta(days=11))
    assert api.get(f"/v1/certificates/{short['serial']}").json()["status"] == "expired"
    assert api.get("/v1/certificates", params={"expiring_within": "30d"}).json() == []


def test_renew_supersedes_the_old_certificate(api: TestClient, anon: TestClient) -> None:
    add_device(api, "cam-7")
    old = issue(api, "cam-7", make_csr())
    key = make_key("p384")
    resp = api.post(f"/v1/certificates/{old['serial']}/renew",
                    json={"csr": make_csr(key).decode()})
    assert resp.status_code == 201, resp.text
    new = resp.json()
    assert new["status"] == "valid"
    assert new["device_id"] == "cam-7"
    assert new["serial"] != old["serial"]
    new_cert = x509.load_pem_x509_certificate(new["pem"].encode())
    assert _public_der(new_cert.public_key()) == _public_der(key.public_key())

    before = api.get(f"/v1/certificates/{old['serial']}").json()
    assert before["status"] == "revoked"
    assert before["revocation_reason"] == "superseded"
    assert before["replaced_by"] == new["serial"]
    assert _reason(_crl(anon), old["serial"]) is x509.ReasonFlags.superseded

    # A revoked (superseded) certificate can never be renewed again.
    again = api.post(f"/v1/certificates/{old['serial']}/renew",
                     json={"csr": make_csr().decode()})
    assert_problem(again, 409)
    assert len(api.get("/v1/certificates").json()) == 2


def test_renew_with_grace_keeps_the_old_one_for_a_while(api: TestClient, anon: TestClient,
                                                         clock: FakeClock) -> None:
    add_device(api, "cam-8")
    old = issue(api, "cam-8", make_csr())
    resp = api.post(f"/v1/certificates/{old['serial']}/renew",
                    json={"csr": make_csr().decode(), "grace": "7d"})
    assert resp.status_code == 201, resp.text
    new = resp.json()
    view = api.get(f"/v1/certificates/{old['serial']}").json()
    assert view["status"] == "superseded"
    assert view["replaced_by"] == new["serial"]
    crl = _crl(anon)
    assert crl.get_revoked_certificate_by_serial_number(int(old["serial"], 16)) is None

    # Renewing it a second time is refused; the new one is the one to renew.
    again = api.post(f"/v1/certificates/{old['serial']}/renew",
                     json={"csr": make_csr().decode()})
    body = assert_problem(again, 409)
    assert new["serial"] in body["detail"]

    clock.advance(timedelta(days=8))
    assert api.get(f"/v1/certificates/{old['serial']}").json()["status"] == "revoked"
    assert _reason(_crl(anon), old["serial"]) is x509.ReasonFlags.superseded


def test_keygen_returns_matching_key_certificate_and_pkcs12(api: TestClient) -> None:
    add_device(api, "meter-3")
    passphrase = "a long pkcs12 passphrase"
    resp = api.post("/v1/devices/meter-3/certificates/keygen",
                    json={"pkcs12_passphrase": passphrase, "key_type": "ecdsa-p384", "days": 30})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    key = serialization.load_pem_private_key(body["key_pem"].encode(), password=None)
    cert = x509.load_pem_x509_certificate(body["certificate"]["pem"].encode())
    assert _public_der(key.public_key()) == _public_der(cert.public_key())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "meter-3"
    issuing, root = _chain(api)
    assert x509.load_pem_x509_certificates(body["chain_pem"].encode()) == [issuing, root]

    p12 = base64.b64decode(body["pkcs12_base64"])
    p12_key, p12_cert, extra = pkcs12.load_key_and_certificates(p12, passphrase.encode())
    assert p12_cert == cert
    assert p12_key is not None
    assert _public_der(p12_key.public_key()) == _public_der(cert.public_key())
    assert issuing in extra
    try:
        pkcs12.load_key_and_certificates(p12, b"not the passphrase")
    except ValueError:
        pass
    else:
        raise AssertionError("the PKCS#12 opened with a wrong passphrase")

    shown = api.get("/v1/devices/meter-3").json()
    assert shown["state"] == "active"
    assert [c["serial"] for c in shown["certificates"]] == [body["certificate"]["serial"]]


def test_keygen_refuses_a_short_passphrase(api: TestClient) -> None:
    add_device(api, "meter-4")
    resp = api.post("/v1/devices/meter-4/certificates/keygen", json={"pkcs12_passphrase": "short"})
    assert_problem(resp, 422)
    assert api.get("/v1/certificates").json() == []


def test_disable_enable_and_retire(api: TestClient, anon: TestClient) -> None:
    add_device(api, "valve-2")
    first = issue(api, "valve-2", make_csr())
    second = issue(api, "valve-2", make_csr())

    assert api.post("/v1/devices/valve-2/disable").json()["state"] == "disabled"
    assert_problem(api.post("/v1/devices/valve-2/certificates",
                            json={"csr": make_csr().decode()}), 409)
    assert api.post("/v1/devices/valve-2/enable").json()["state"] == "active"
    assert_problem(api.post("/v1/devices/valve-2/explode"), 404)  # no such route

    resp = api.post("/v1/devices/valve-2/retire")
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "retired"
    for serial in (first["serial"], second["serial"]):
        view = api.get(f"/v1/certificates/{serial}").json()
        assert view["status"] == "revoked"
        assert view["revocation_reason"] == "cessationOfOperation"
    crl = _crl(anon)
    assert {_reason(crl, s) for s in (first["serial"], second["serial"])} == {
        x509.ReasonFlags.cessation_of_operation}

    # Retired is final.
    assert_problem(api.post("/v1/devices/valve-2/enable"), 409)
    assert_problem(api.post("/v1/devices/valve-2/certificates",
                            json={"csr": make_csr().decode()}), 409)


def test_revoke_every_certificate_of_a_device(api: TestClient, anon: TestClient) -> None:
    add_device(api, "gw-1")
    serials = {issue(api, "gw-1", make_csr())["serial"] for _ in range(3)}
    resp = api.post("/v1/devices/gw-1/revoke", json={"reason": "key-compromise"})
    assert resp.status_code == 200, resp.text
    assert set(resp.json()["revoked"]) == serials
    assert resp.json()["reason"] == "keyCompromise"
    # Nothing left to revoke the second time.
    resp = api.post("/v1/devices/gw-1/revoke", json={})
    assert resp.status_code == 200
    assert resp.json()["revoked"] == []
    crl = _crl(anon)
    assert {_reason(crl, s) for s in serials} == {x509.ReasonFlags.key_compromise}
    # The device itself stays registered (revoking is not retiring).
    assert api.get("/v1/devices/gw-1").json()["state"] == "active"


def test_unspecified_reason_has_no_reason_code(api: TestClient, anon: TestClient) -> None:
    add_device(api, "d-0")
    cert = issue(api, "d-0", make_csr())
    resp = api.post(f"/v1/certificates/{cert['serial']}/revoke", json={})
    assert resp.status_code == 200
    assert resp.json()["status"] == "revoked"
    assert _reason(_crl(anon), cert["serial"]) is None


def test_unspecified_reason_is_reported(api: TestClient) -> None:
    add_device(api, "d-0")
    cert = issue(api, "d-0", make_csr())
    resp = api.post(f"/v1/certificates/{cert['serial']}/revoke", json={"reason": "unspecified"})
    assert resp.status_code == 200
    assert resp.json()["revocation_reason"] == "unspecified"
    shown = api.get(f"/v1/certificates/{cert['serial']}").json()
    assert shown["revocation_reason"] == "unspecified"


def test_device_listing_filters_and_pages(api: TestClient) -> None:
    for i in range(5):
        add_device(api, f"dev-{i}", groups=["even" if i % 2 == 0 else "odd"])
    ids = [d["id"] for d in api.get("/v1/devices").json()]
    assert ids == [f"dev-{i}" for i in range(5)]
    assert [d["id"] for d in api.get("/v1/devices", params={"group": "odd"}).json()] == \
        ["dev-1", "dev-3"]
    page = api.get("/v1/devices", params={"limit": 2, "after": "dev-1"}).json()
    assert [d["id"] for d in page] == ["dev-2", "dev-3"]
    assert api.get("/v1/devices", params={"state": "active"}).json() == []
    assert len(api.get("/v1/devices", params={"state": "pending"}).json()) == 5
