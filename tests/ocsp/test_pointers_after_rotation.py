"""After ``iotsec ca rotate``, a certificate of the retiring CA still names its own CA's CRL,
delta CRL and certificate (ADR 0017): fetched from a real ``iotsec serve
--public-http-port`` through the URLs in the certificate, they let ``openssl verify
-crl_check`` decide, before and after a revocation, while the un-suffixed ``/crl`` now
means the new CA; ``openssl ocsp`` keeps answering for the retiring CA."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID

from iotsec.pki import x509 as enc
from tests.helpers import make_csr
from tests.ports import free_port
from tests.security.serving import init_home, served


def _pointers(cert: x509.Certificate) -> tuple[str, str, str]:
    """The certificate's CDP, caIssuers and OCSP URLs."""
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    (crl_url,) = [n.value for point in cdp for n in point.full_name or ()]
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    found = {d.access_method: d.access_location.value for d in aia}
    return (crl_url, found[AuthorityInformationAccessOID.CA_ISSUERS],
            found[AuthorityInformationAccessOID.OCSP])


def _fetch(url: str) -> bytes:
    got = httpx.get(url, timeout=10)
    assert got.status_code == 200, (url, got.status_code, got.text)
    return got.content


def _pem(path: Path, der: bytes, label: str) -> Path:
    path.write_bytes(enc.to_pem(der, label))
    return path


def _verify(openssl: str, tmp_path: Path, leaf: Path, issuing: Path, *crls: bytes
            ) -> subprocess.CompletedProcess[str]:
    files = [_pem(tmp_path / f"crl-{n}.pem", der, "X509 CRL") for n, der in enumerate(crls)]
    return subprocess.run(
        [openssl, "verify", "-crl_check", "-use_deltas", "-CAfile", str(tmp_path / "root.pem"),
         "-untrusted", str(issuing), *[a for f in files for a in ("-CRLfile", str(f))],
         str(leaf)], capture_output=True, text=True, timeout=30, check=False)


def _freshest(crl_der: bytes) -> str:
    ext = x509.load_der_x509_crl(crl_der).extensions.get_extension_for_class(
        x509.FreshestCRL).value
    (url,) = [n.value for point in ext for n in point.full_name or ()]
    return url


def test_a_retiring_cas_certificate_names_its_own_crl_and_certificate(
        openssl: str, tmp_path: Path, database_url: str | None) -> None:
    public = free_port()
    base = f"http://127.0.0.1:{public}"
    env = {"IOTSEC_PUBLIC_URL": base}
    if database_url is not None:
        env["IOTSEC_DATABASE_URL"] = database_url
    home = init_home(tmp_path, env)
    root_der = x509.load_pem_x509_certificates(home.chain.read_bytes())[-1].public_bytes(
        Encoding.DER)
    _pem(tmp_path / "root.pem", root_der, "CERTIFICATE")
    with served(tmp_path, "--public-http-port", str(public), home=home) as server:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", public), timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, server.log.read_text()
                time.sleep(0.1)
        assert server.iotsec("device", "add", "dev-1").returncode == 0
        (tmp_path / "dev.csr").write_bytes(make_csr())
        leaf = tmp_path / "dev-1.pem"
        done = server.iotsec("cert", "issue", "dev-1", "--csr", str(tmp_path / "dev.csr"),
                             "--output", str(leaf))
        assert done.returncode == 0, done.stderr
        cert = x509.load_pem_x509_certificate(leaf.read_bytes())
        crl_url, issuer_url, ocsp_url = _pointers(cert)
        old_issuing = x509.load_pem_x509_certificates(home.chain.read_bytes())[0]
        old_id = crl_url.rsplit("=", 1)[1]
        assert crl_url == f"{base}/crl?ca={old_id}"
        assert issuer_url == f"{base}/ca/{old_id}.der" and ocsp_url == f"{base}/ocsp"

        rotated = server.iotsec("ca", "rotate", "--json")
        assert rotated.returncode == 0, rotated.stderr
        # The serving process learns of the new CA within IOTSEC_HOT_CACHE_SECONDS.
        deadline = time.monotonic() + 10
        while x509.load_der_x509_certificate(_fetch(f"{base}/ca/issuing.der")) == old_issuing:
            assert time.monotonic() < deadline, "the new CA is not served"
            time.sleep(0.2)

        # The pointers of the old certificate still name the old CA.
        issuer_der = _fetch(issuer_url)
        assert issuer_der == old_issuing.public_bytes(Encoding.DER)
        issuing_pem = _pem(tmp_path / "issuer.pem", issuer_der, "CERTIFICATE")
        named = _fetch(crl_url)
        assert x509.load_der_x509_crl(named).issuer == old_issuing.subject
        assert _freshest(named) == f"{base}/crl/delta?ca={old_id}"
        ok = _verify(openssl, tmp_path, leaf, issuing_pem, named,
                     _fetch(_freshest(named)))
        assert ok.returncode == 0 and f"{leaf}: OK" in ok.stdout, ok.stdout + ok.stderr
        # The un-suffixed URL means the active CA, whose CRL cannot decide for this one.
        active = _fetch(f"{base}/crl")
        assert x509.load_der_x509_crl(active).issuer != old_issuing.subject
        wrong = _verify(openssl, tmp_path, leaf, issuing_pem, active)
        assert wrong.returncode != 0 and "unable to get certificate CRL" in wrong.stdout + \
            wrong.stderr

        serial = f"{cert.serial_number:X}"
        revoked = server.iotsec("cert", "revoke", serial, "--reason", "keyCompromise")
        assert revoked.returncode == 0, revoked.stderr
        # Another process revoked: the served CRLs follow within IOTSEC_HOT_CACHE_SECONDS.
        deadline = time.monotonic() + 10
        while True:
            complete = _fetch(crl_url)
            delta = _fetch(_freshest(complete))
            seen = {e.serial_number for e in x509.load_der_x509_crl(complete)}
            if cert.serial_number in seen:
                break
            assert time.monotonic() < deadline, "the revocation is not on the named CRL"
            time.sleep(0.2)
        out = _verify(openssl, tmp_path, leaf, issuing_pem, complete, delta)
        assert out.returncode != 0 and "certificate revoked" in out.stdout + out.stderr

        # OCSP still answers for the retiring CA, through the URL in the certificate.
        asked = subprocess.run(
            [openssl, "ocsp", "-issuer", str(issuing_pem), "-cert", str(leaf), "-url", ocsp_url,
             "-CAfile", str(tmp_path / "root.pem")],
            capture_output=True, text=True, timeout=30, check=False)
        assert "Response verify OK" in asked.stderr, asked.stderr
        assert f"{leaf}: revoked" in asked.stdout, asked.stdout

        # The id is bounded: unknown is 404, junk 404/422, never a 500.
        assert httpx.get(f"{base}/ca/4242.der").status_code == 404
        assert httpx.get(f"{base}/crl", params={"ca": "4242"}).status_code == 404
        for junk in ("0", "x", "1" * 12, "-3"):
            assert httpx.get(f"{base}/crl", params={"ca": junk}).status_code == 422
            assert httpx.get(f"{base}/crl/delta", params={"ca": junk}).status_code == 422
        for path in ("/ca/0.der", "/ca/x.der", "/ca/1234567890.der", "/ca/1.pem"):
            assert httpx.get(base + path).status_code == 404
        assert httpx.post(issuer_url).status_code == 405
