"""Enrolment (EST) under named certificate profiles: a template naming a custom profile,
the device's and groups' selections before the template's, a re-enrolment keeping the
profile, and a profile refusing a key -- at the service level on SQLite and PostgreSQL,
and over the EST application in-process."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from iotsec.app.enrol import est, secrets
from iotsec.app.identity.devices import get_device
from iotsec.app.pki import profiles
from iotsec.app.pki.cert_records import list_certificates
from iotsec.app.runtime import Runtime
from iotsec.errors import NotFoundError, ProfileRefusedError
from iotsec.pki.der import oid as der_oid
from iotsec.pki.est import decode_base64_body, read_certs_only
from iotsec.pki.profiles import CertProfile
from iotsec.pki.x509 import OID_NO_REV_AVAIL
from tests.enrol.asgi_est import EstApp, assert_text_error, issued_certificate
from tests.enrol.services_support import add_template, csr
from tests.helpers import make_key


def _profile(rt: Runtime, name: str, **kwargs: object) -> None:
    options: dict[str, object] = {"days": 30, "key_types": "p256,p384", "ekus": "clientAuth",
                                  **kwargs}
    profiles.add_profile(rt, CertProfile.parse(name, **options))  # type: ignore[arg-type]


def _secret(rt: Runtime, template: str, uses: int = 1) -> est.BasicCredential:
    info, secret = secrets.create_secret(rt, device_id=None, template=template, uses=uses,
                                         expires_in=timedelta(hours=1))
    return est.BasicCredential(info.id, secret)


def _enrolled(rt: Runtime, outcome: est.Issued | est.Pending) -> x509.Certificate:
    assert isinstance(outcome, est.Issued)
    return read_certs_only(outcome.chain_der)[0]


def test_template_naming_a_custom_profile(rt: Runtime) -> None:
    _profile(rt, "sensors-short", days=5, dns_from=("attr:site", "{device_id}.sensors.example"),
             ekus="clientAuth,serverAuth", no_revocation=True)
    add_template(rt, "sensors", profile="sensors-short", attributes=["site=plant-7.example"])
    cert = _enrolled(rt, est.enrol(rt, _secret(rt, "sensors"), csr(cn="S-1"),
                                   label=None, source="192.0.2.1"))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["s-1.sensors.example",
                                                     "plant-7.example"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(OID_NO_REV_AVAIL))
    assert cert.not_valid_after_utc - rt.now() == timedelta(days=5)
    assert [c.profile for c in list_certificates(rt)] == ["sensors-short"]
    assert profiles.get_profile(rt, "sensors-short")[1].templates == 1


def test_group_and_device_selections_come_before_the_template(rt: Runtime) -> None:
    _profile(rt, "by-template", days=30)
    _profile(rt, "by-group", days=20)
    add_template(rt, "sensors", profile="by-template", groups=["plant"])
    credential = _secret(rt, "sensors", uses=2)
    assert _enrolled(rt, est.enrol(rt, credential, csr(cn="a-1"), label=None, source="192.0.2.1")) \
        .not_valid_after_utc - rt.now() == timedelta(days=30)
    profiles.set_group_profile(rt, "plant", "by-group")
    _enrolled(rt, est.enrol(rt, credential, csr(cn="a-2"), label=None, source="192.0.2.1"))
    assert {c.device_id: c.profile for c in list_certificates(rt)} == {
        "a-1": "by-template", "a-2": "by-group"}


def test_reenrolment_keeps_the_profile(rt: Runtime) -> None:
    _profile(rt, "short", days=10)
    add_template(rt, "sensors", profile="short")
    key = make_key()
    first = _enrolled(rt, est.enrol(rt, _secret(rt, "sensors"), csr(key, cn="r-1"),
                                    label=None, source="192.0.2.1"))
    again = est.reenrol(rt, est.ClientChain((first,)), csr(key, cn="r-1"), label=None,
                        source="192.0.2.1")
    renewed = read_certs_only(again.chain_der)[0]
    assert renewed.serial_number != first.serial_number
    assert [c.profile for c in list_certificates(rt)] == ["short", "short"]


def test_a_key_the_profile_refuses_enrols_nothing(rt: Runtime) -> None:
    _profile(rt, "p384-only", key_types="p384")
    add_template(rt, "sensors", profile="p384-only")
    credential = _secret(rt, "sensors")
    with pytest.raises(ProfileRefusedError, match="allows p384 keys; the CSR's key is p256"):
        est.enrol(rt, credential, csr(cn="k-1"), label=None, source="192.0.2.1")
    assert list_certificates(rt) == []
    assert get_device_or_none(rt, "k-1") is None
    # The secret was not used up: the same device enrols with a P-384 key.
    cert = _enrolled(rt, est.enrol(rt, credential, csr(make_key("p384"), cn="k-1"),
                                   label=None, source="192.0.2.1"))
    assert cert.not_valid_after_utc - rt.now() == timedelta(days=30)


def get_device_or_none(rt: Runtime, device_id: str) -> object:
    try:
        return get_device(rt, device_id)
    except NotFoundError:
        return None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_simpleenroll_over_http_under_a_custom_profile(rt: Runtime) -> None:
    rt.settings.auth_failure_limit = 1_000_000
    _profile(rt, "gateways", days=60, ekus="clientAuth,serverAuth",
             dns_from=("{device_id}.gw.example",))
    add_template(rt, "gw", profile="gateways")
    app = EstApp(rt)
    info, secret = secrets.create_secret(rt, device_id=None, template="gw", uses=2)
    cert = issued_certificate(app.post("simpleenroll", csr(cn="gw-9"),
                                       secret=(info.id, secret)))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw-9.gw.example"]
    assert list_certificates(rt)[0].profile == "gateways"
    refused = app.post("simpleenroll", csr(make_key("rsa2048"), cn="gw-10"),
                       secret=(info.id, secret))
    assert "allows p256, p384 keys" in assert_text_error(refused, 400)
    assert len(list_certificates(rt)) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_csrattrs_name_a_key_type_the_templates_profile_allows(rt: Runtime) -> None:
    secp384r1 = der_oid("1.3.132.0.34")
    secp256r1 = der_oid("1.2.840.10045.3.1.7")
    _profile(rt, "p384-only", key_types="p384")
    _profile(rt, "any-ec", key_types="p256,p384")
    add_template(rt, "big", profile="p384-only")
    add_template(rt, "any", profile="any-ec")
    app = EstApp(rt)
    plain = decode_base64_body(app.get("csrattrs").content)
    big = decode_base64_body(app.get("csrattrs", label="big").content)
    anything = decode_base64_body(app.get("csrattrs", label="any").content)
    # The issuing CA is P-256: kept where the profile allows it, else P-384.
    assert secp256r1 in plain and secp384r1 not in plain
    assert secp384r1 in big and secp256r1 not in big
    assert secp256r1 in anything and secp384r1 not in anything
