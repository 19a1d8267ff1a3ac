"""Certificates name where their revocation is published: AIA (OCSP, caIssuers) and the CRL
distribution point under IOTSEC_PUBLIC_URL; IOTSEC_CRL_URL keeps naming the CRL."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID

from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.pki.issuance import issue_from_csr
from iotsec.app.pki.server_tls import ensure_server_tls
from iotsec.app.runtime import Runtime
from iotsec.config import Settings
from iotsec.errors import ConfigError
from tests.helpers import make_csr


def _pointers(der: bytes) -> tuple[dict[str, str], list[str]]:
    cert = x509.load_der_x509_certificate(der)
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    names = {AuthorityInformationAccessOID.OCSP: "ocsp",
             AuthorityInformationAccessOID.CA_ISSUERS: "ca_issuers"}
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return ({names[d.access_method]: d.access_location.value for d in aia},
            [n.value for point in cdp for n in point.full_name or ()])


def test_device_and_server_certificates_carry_the_public_urls(rt: Runtime) -> None:
    rt.settings.public_url = "http://pki.example.com:8080/"
    add_device(rt, NewDevice.parse("dev-1"))
    issued = issue_from_csr(rt, "dev-1", make_csr())
    ca = rt.issuing_id()
    assert _pointers(issued.der) == (
        {"ocsp": "http://pki.example.com:8080/ocsp",
         "ca_issuers": f"http://pki.example.com:8080/ca/{ca}.der"},
        [f"http://pki.example.com:8080/crl?ca={ca}"])
    tls = ensure_server_tls(rt, "localhost")
    server = x509.load_pem_x509_certificates(tls.chain_file.read_bytes())[0]
    assert _pointers(server.public_bytes(Encoding.DER))[0]["ocsp"] == \
        "http://pki.example.com:8080/ocsp"
    # IOTSEC_CRL_URL, when set, is the CRL distribution point; the AIA stays.
    rt.settings.crl_url = "https://crl.example.com/iotsec.crl"
    again = issue_from_csr(rt, "dev-1", make_csr())
    aia, cdp = _pointers(again.der)
    assert cdp == [f"https://crl.example.com/iotsec.crl?ca={ca}"]
    assert aia["ocsp"] == "http://pki.example.com:8080/ocsp"


def test_without_a_public_url_there_is_no_aia(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-1"))
    cert = x509.load_der_x509_certificate(issue_from_csr(rt, "dev-1", make_csr()).der)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)


@pytest.mark.parametrize("value", ["https://pki.example.com", "http://pki.example.com/ocsp",
                                   "http://user@pki.example.com", "pki.example.com",
                                   "http://pki.example.com:8080?x=1", "http://"])
def test_the_public_url_is_an_http_origin(value: str) -> None:
    with pytest.raises(ConfigError, match="public_url"):
        Settings(public_url=value)
