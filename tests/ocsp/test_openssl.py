"""A real ``iotsec serve --public-http-port`` asked by ``openssl ocsp``: good, then revoked
after ``iotsec cert revoke`` for every CA key type; the GET form, the nonce, the RFC's error
statuses, the paths the public listener serves, a revocation made by another process
reaching the pre-signed answers within IOTSEC_HOT_CACHE_SECONDS, and ``iotsec ocsp check``
against OpenSSL's own responder."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from iotsec.pki import x509 as enc
from iotsec.pki.ca import Authority, create_issuing, create_root
from iotsec.pki.issue import issue_device
from iotsec.pki.keys import KeyType, LocalSigner
from iotsec.pki.ocsp import MAX_REQUEST_BYTES
from iotsec.pki.profiles import DEVICE
from tests.cli.support import CONSOLE_SCRIPT, run_script
from tests.helpers import make_csr, make_key, self_signed
from tests.ports import free_port
from tests.security.serving import Home, Served, served


def _home(tmp_path: Path, key_type: KeyType, public: int) -> Home:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
    env.update(IOTSEC_HOME=str(home), IOTSEC_PUBLIC_URL=f"http://127.0.0.1:{public}")
    init = run_script("init", "--store-passphrase", "--json", "--key-type", key_type.value, env=env)
    assert init.returncode == 0, init.stderr
    chain = run_script("ca", "chain", env=env)
    assert chain.returncode == 0, chain.stderr
    (tmp_path / "chain.pem").write_text(chain.stdout)
    issuing, root = x509.load_pem_x509_certificates(chain.stdout.encode())
    (tmp_path / "issuing.pem").write_bytes(issuing.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    return Home(home, env, json.loads(init.stdout)["admin_token"], tmp_path / "chain.pem")


def _device(server: Served, tmp_path: Path, name: str) -> tuple[Path, str]:
    assert server.iotsec("device", "add", name).returncode == 0
    csr = tmp_path / f"{name}.csr"
    csr.write_bytes(make_csr())
    pem = tmp_path / f"{name}.pem"
    done = server.iotsec("cert", "issue", name, "--csr", str(csr), "--output", str(pem))
    assert done.returncode == 0, done.stderr
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    return pem, f"{cert.serial_number:X}"


def _openssl_ocsp(openssl: str, tmp_path: Path, cert: Path, url: str, *extra: str
                  ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([openssl, "ocsp", "-issuer", str(tmp_path / "issuing.pem"), "-cert",
                           str(cert), "-url", url, "-CAfile", str(tmp_path / "root.pem"),
                           *extra], capture_output=True, text=True, timeout=30, check=False)


@contextmanager
def _serving(tmp_path: Path, key_type: KeyType) -> Iterator[tuple[Served, str]]:
    public = free_port()
    home = _home(tmp_path, key_type, public)
    with served(tmp_path, "--public-http-port", str(public), home=home) as server:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", public), timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, server.log.read_text()
                time.sleep(0.1)
        yield server, f"http://127.0.0.1:{public}"


@pytest.mark.parametrize("key_type", list(KeyType))
def test_openssl_sees_good_then_revoked(openssl: str, tmp_path: Path,
                                        key_type: KeyType) -> None:
    with _serving(tmp_path, key_type) as (server, base):
        pem, serial = _device(server, tmp_path, "dev-1")
        cert = x509.load_pem_x509_certificate(pem.read_bytes())
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        ocsp_url, issuer = (d.access_location.value for d in aia)
        assert ocsp_url == f"{base}/ocsp"
        assert re.fullmatch(rf"{base}/ca/[1-9][0-9]*\.der", issuer)
        good = _openssl_ocsp(openssl, tmp_path, pem, f"{base}/ocsp")
        assert "Response verify OK" in good.stderr, good.stderr
        assert "WARNING" not in good.stderr  # the nonce was echoed
        assert f"{pem}: good" in good.stdout
        revoked_at = datetime.now(UTC).replace(microsecond=0)
        done = server.iotsec("cert", "revoke", serial, "--reason", "keyCompromise")
        assert done.returncode == 0, done.stderr
        after = _openssl_ocsp(openssl, tmp_path, pem, f"{base}/ocsp")
        assert "Response verify OK" in after.stderr, after.stderr
        assert f"{pem}: revoked" in after.stdout
        assert "Reason: keyCompromise" in after.stdout
        when = re.search(r"Revocation Time: (.+ GMT)", after.stdout)
        assert when is not None
        moment = datetime.strptime(when.group(1), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=UTC)
        assert abs(moment - revoked_at) < timedelta(seconds=30)


def test_public_listener_get_errors_paths_and_other_processes(openssl: str,
                                                              tmp_path: Path) -> None:
    with _serving(tmp_path, KeyType.ECDSA_P256) as (server, base):
        pem, serial = _device(server, tmp_path, "dev-1")
        client = httpx.Client(base_url=base, timeout=10)
        # The GET form, as a pre-signed answer with RFC 5019's caching headers.
        request = tmp_path / "req.der"
        subprocess.run([openssl, "ocsp", "-issuer", str(tmp_path / "issuing.pem"), "-cert",
                        str(pem), "-no_nonce", "-reqout", str(request)], check=True,
                       capture_output=True, timeout=30)
        path = quote(base64.b64encode(request.read_bytes()).decode(), safe="")
        got = client.get(f"/ocsp/{path}")
        assert got.status_code == 200
        assert got.headers["content-type"] == "application/ocsp-response"
        assert re.fullmatch(r"max-age=\d+, public, no-transform, must-revalidate",
                            got.headers["cache-control"])
        assert {"etag", "last-modified", "expires"} <= got.headers.keys()
        (tmp_path / "resp.der").write_bytes(got.content)
        shown = subprocess.run([openssl, "ocsp", "-respin", str(tmp_path / "resp.der"),
                                "-CAfile", str(tmp_path / "root.pem"), "-issuer",
                                str(tmp_path / "issuing.pem"), "-cert", str(pem)],
                               capture_output=True, text=True, timeout=30, check=False)
        assert "Response verify OK" in shown.stderr and f"{pem}: good" in shown.stdout
        # Malformed, oversized and unknown-issuer requests: the RFC's statuses, never a 500.
        for body, status in ((b"junk", ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
                             (b"\x30" * (MAX_REQUEST_BYTES + 10),
                              ocsp.OCSPResponseStatus.MALFORMED_REQUEST)):
            answer = client.post("/ocsp", content=body,
                                 headers={"content-type": "application/ocsp-request"})
            assert answer.status_code == 200
            assert ocsp.load_der_ocsp_response(answer.content).response_status is status
        other = tmp_path / "other.pem"
        stranger = self_signed(make_key(), "other CA", not_before=datetime.now(UTC)
                               - timedelta(hours=1), not_after=datetime.now(UTC)
                               + timedelta(days=1))
        other.write_bytes(stranger.public_bytes(serialization.Encoding.PEM))
        unknown = subprocess.run([openssl, "ocsp", "-issuer", str(other), "-serial", "0x1234",
                                  "-url", f"{base}/ocsp"], capture_output=True, text=True,
                                 timeout=30, check=False)
        assert "Responder Error: unauthorized (6)" in unknown.stdout + unknown.stderr
        # Only OCSP, CRLs and the CA certificates: nothing else of the API.
        issuing = x509.load_pem_x509_certificate((tmp_path / "issuing.pem").read_bytes())
        assert client.get("/ca/issuing.der").content == issuing.public_bytes(
            serialization.Encoding.DER)
        assert client.get("/ca/root.der").status_code == 200
        assert client.get("/ca/chain.pem").text == (tmp_path / "chain.pem").read_text()
        x509.load_der_x509_crl(client.get("/crl").content)
        x509.load_der_x509_crl(client.get("/crl", params={"ca": "root"}).content)
        auth = {"Authorization": f"Bearer {server.token}"}
        for method, where in (("GET", "/healthz"), ("GET", "/v1/devices"),
                             ("POST", "/v1/devices"), ("GET", "/openapi.json"),
                             ("GET", "/.well-known/est/cacerts"), ("GET", "/"),
                             ("GET", "/ca/other.der")):
            assert client.request(method, where, headers=auth).status_code == 404, where
        assert client.post("/ca/root.der").status_code == 405
        # Every route of the API (its OpenAPI document, from the HTTPS listener): not here.
        with server.client() as api:
            paths = api.get("/openapi.json", headers=auth).json()["paths"]
        assert len(paths) > 20
        for route, methods in paths.items():
            if route.startswith(("/crl", "/ocsp")):
                continue
            concrete = re.sub(r"\{[^}]+\}", "x", route)
            for method in methods:
                answer = client.request(method.upper(), concrete, headers=auth)
                assert answer.status_code == 404, (method, route)
        # iotsec ocsp check asks the public listener (IOTSEC_PUBLIC_URL) and verifies.
        checked = server.iotsec("ocsp", "check", serial, "--json")
        assert checked.returncode == 0, checked.stderr
        assert json.loads(checked.stdout)["status"] == "good"
        assert json.loads(checked.stdout)["nonce_checked"] is True
        # A revocation by another process (the CLI) reaches the pre-signed answer within
        # IOTSEC_HOT_CACHE_SECONDS (1 s by default).
        assert server.iotsec("cert", "revoke", serial).returncode == 0
        revoked = time.monotonic()
        while True:
            fresh = ocsp.load_der_ocsp_response(client.get(f"/ocsp/{path}").content)
            if fresh.certificate_status is ocsp.OCSPCertStatus.REVOKED:
                break
            # The bound, plus a second for a loaded machine's scheduling and requests.
            assert time.monotonic() - revoked < 1.0 + 1.0, "still good after the bound"
            time.sleep(0.05)
        checked = server.iotsec("ocsp", "check", "--cert", str(pem))
        assert checked.returncode == 0 and "revoked" in checked.stdout


def _index_line(cert: x509.Certificate, revoked: datetime | None) -> str:
    expiry = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    state = f"R\t{expiry}\t{revoked.strftime('%y%m%d%H%M%SZ')},keyCompromise" if revoked \
        else f"V\t{expiry}\t"
    return f"{state}\t{cert.serial_number:X}\tunknown\t/CN={cert.subject.rfc4514_string()}\n"


def test_ocsp_check_against_openssls_responder(openssl: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    root_signer = LocalSigner(make_key())
    root = Authority.from_der(create_root(root_signer, now), root_signer)
    issuing_key = make_key()
    issuing = Authority.from_der(create_issuing(root, LocalSigner(issuing_key), now),
                                 LocalSigner(issuing_key))
    ca_key = tmp_path / "ca.key"
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(enc.to_pem(issuing.der, "CERTIFICATE"))
    ca_key.write_bytes(issuing_key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    certs = []
    for name in ("good-1", "bad-1"):
        spki = enc.spki_der(make_key().public_key())
        issued = issue_device(issuing, device_id=name, spki=spki, profile=DEVICE, now=now)
        path = tmp_path / f"{name}.pem"
        path.write_bytes(enc.to_pem(issued.der, "CERTIFICATE"))
        certs.append((path, x509.load_der_x509_certificate(issued.der)))
    revoked_at = now.replace(microsecond=0) - timedelta(minutes=10)
    (tmp_path / "index.txt").write_text(_index_line(certs[0][1], None)
                                        + _index_line(certs[1][1], revoked_at))
    port = free_port()
    log = tmp_path / "openssl.log"
    with log.open("wb") as out:
        responder = subprocess.Popen([openssl, "ocsp", "-index", str(tmp_path / "index.txt"),
                                      "-port", str(port), "-rsigner", str(ca_pem),
                                      "-rkey", str(ca_key), "-CA", str(ca_pem), "-nmin", "5"],
                                     stdout=out, stderr=subprocess.STDOUT)
    try:
        # Not probed with a connection: OpenSSL's responder serves one at a time, and would
        # wait on the probe.
        deadline = time.monotonic() + 30
        while b"waiting for OCSP client connections" not in log.read_bytes():
            assert responder.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
        env["IOTSEC_HOME"] = str(tmp_path / "no-home")
        results = {}
        for path, _ in certs:
            done = subprocess.run([str(CONSOLE_SCRIPT), "ocsp", "check", "--cert", str(path),
                                   "--issuer", str(ca_pem), "--url",
                                   f"http://127.0.0.1:{port}", "--json"], env=env,
                                  capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
            results[path.stem] = json.loads(done.stdout)
        assert results["good-1"]["status"] == "good"
        assert results["good-1"]["signed_by"] == "ca" and results["good-1"]["nonce_checked"]
        assert results["bad-1"]["status"] == "revoked"
        assert results["bad-1"]["reason"] == "keyCompromise"
        assert results["bad-1"]["revoked_at"] == revoked_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        # A wrong issuer: the answer is refused, not believed (exit 1, one line).
        wrong = self_signed(make_key(), issuing.certificate.subject.rfc4514_string()[3:],
                            not_before=now - timedelta(hours=1), not_after=now + timedelta(1))
        (tmp_path / "wrong.pem").write_bytes(wrong.public_bytes(serialization.Encoding.PEM))
        refused = subprocess.run([str(CONSOLE_SCRIPT), "ocsp", "check", "--cert",
                                  str(certs[0][0]), "--issuer", str(tmp_path / "wrong.pem"),
                                  "--url", f"http://127.0.0.1:{port}"], env=env,
                                 capture_output=True, text=True, timeout=60, check=False)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
    finally:
        responder.terminate()
        responder.wait(timeout=10)
