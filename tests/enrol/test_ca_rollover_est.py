"""Devices re-enrol onto a rotated CA over EST, proved with ``curl`` and ``openssl`` against
a real ``iotsec serve``: the CA is rotated by another process (``iotsec ca rotate``) while
the server runs; a device's certificate from the retiring CA still authenticates at the
EST listener, ``simplereenroll`` answers a certificate of the new CA, that certificate
authenticates in turn (the listener loaded the new CA live), ``cacerts`` publishes both
CAs, and after ``iotsec ca retire`` the retiring CA's certificates are refused."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.enrol.test_curl_openssl import (
    certificates_in,
    est_call,
    est_post,
    iotsec_json,
    new_csr,
    run,
    user,
)
from tests.security.serving import Served

pytestmark = pytest.mark.openssl


@pytest.fixture(scope="module")
def curl() -> str:
    from tests.services import require_tool

    return require_tool("curl", "Debian package 'curl'")


def _reenrol_until(curl: str, server: Served, work: Path, name: str, csr: Path, cert: Path,
                   key: Path, timeout: float = 10.0) -> tuple[int, Path]:
    """``simplereenroll`` with ``cert``, again while the listener has not loaded its CA yet
    (the server polls the store every 2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _, body = est_post(curl, server, work, "simplereenroll", name, csr,
                                       "--cert", cert, "--key", key)
        except AssertionError:
            # curl failed: until the listener has loaded the certificate's CA, the TLS 1.3
            # handshake refuses the certificate after curl has sent its request, which curl
            # reports as an empty reply (52).
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        if status == 200 or time.monotonic() > deadline:
            return status, body
        time.sleep(0.5)


def test_reenrol_onto_the_rotated_ca(est_server: Served, curl: str, openssl: str,
                                     tmp_path: Path) -> None:
    iotsec_json(est_server, "device", "add", "roll-dev")
    secret = iotsec_json(est_server, "enrol", "secret", "create", "roll-dev")
    key, csr = new_csr(openssl, tmp_path, "first")
    status, _, body = est_post(curl, est_server, tmp_path, "simpleenroll", "first", csr,
                               *user(secret))
    assert status == 200, body.read_text()
    first_pem, (first,) = certificates_in(openssl, tmp_path, body)
    # A second device of the old CA, which will not re-enrol before the CA is retired.
    iotsec_json(est_server, "device", "add", "roll-late")
    late_secret = iotsec_json(est_server, "enrol", "secret", "create", "roll-late")
    late_key, late_csr = new_csr(openssl, tmp_path, "late")
    status, _, body = est_post(curl, est_server, tmp_path, "simpleenroll", "late", late_csr,
                               *user(late_secret))
    assert status == 200, body.read_text()
    late_pem, _ = certificates_in(openssl, tmp_path, body)

    rotated = iotsec_json(est_server, "ca", "rotate")
    new_ca, old_ca = rotated["changed"]
    assert (new_ca["state"], old_ca["state"]) == ("active", "retiring")
    assert first.issuer.rfc4514_string() == old_ca["subject"]
    time.sleep(1.5)  # the server's view of the active CA is at most 1 s old

    # The retiring CA's certificate still authenticates; the answer is from the new CA.
    key2, csr2 = new_csr(openssl, tmp_path, "second")
    status, body = _reenrol_until(curl, est_server, tmp_path, "second", csr2, first_pem, key)
    assert status == 200, body.read_text()
    second_pem, (second,) = certificates_in(openssl, tmp_path, body)
    assert second.issuer.rfc4514_string() == new_ca["subject"]
    bundle = tmp_path / "bundle.pem"
    assert est_server.iotsec("ca", "bundle", "-o", str(bundle)).returncode == 0
    for pem in (first_pem, second_pem):
        done = run(openssl, "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile",
                   bundle, pem, cwd=tmp_path)
        assert done.stdout.decode().strip().endswith(": OK")

    # cacerts publishes both issuing CAs during the overlap.
    status, _, body = est_call(curl, est_server, tmp_path, "cacerts", "cacerts")
    assert status == 200
    _, published = certificates_in(openssl, tmp_path, body)
    assert {c.subject.rfc4514_string() for c in published} >= {new_ca["subject"],
                                                                old_ca["subject"]}

    # The new CA's certificate authenticates too: the listener loaded the rotated CA live.
    _, csr3 = new_csr(openssl, tmp_path, "third")
    status, body = _reenrol_until(curl, est_server, tmp_path, "third", csr3, second_pem, key2)
    assert status == 200, body.read_text()
    _, (third,) = certificates_in(openssl, tmp_path, body)
    assert third.issuer == second.issuer

    # Retired: a certificate of the old CA no longer re-enrols. The application refuses it
    # (403) at once; within the listener's poll the handshake itself refuses it.
    retired = iotsec_json(est_server, "ca", "retire", str(old_ca["id"]))
    assert retired["changed"][0]["state"] == "retired"
    _, csr4 = new_csr(openssl, tmp_path, "fourth")
    deadline = time.monotonic() + 10
    while True:
        done = subprocess.run(
            [curl, "-sS", "--cacert", str(est_server.chain), "-o", str(tmp_path / "4.body"),
             "-w", "%{http_code}", "--cert", str(late_pem), "--key", str(late_key),
             "--data-binary", f"@{csr4}", "-H", "Content-Type: application/pkcs10",
             f"{est_server.est_url}/.well-known/est/simplereenroll"],
            capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:  # the handshake refused the certificate
            break
        assert done.stdout == "403", (done.stdout, (tmp_path / "4.body").read_text())
        assert time.monotonic() < deadline, "the listener still trusts the retired CA"
        time.sleep(0.5)
