"""RFC 7030's own way of proving an EST server: ``curl`` as the HTTP client and ``openssl``
for everything else, against a real ``iotsec serve`` with its EST listener.

- ``cacerts`` parses with ``openssl pkcs7 -print_certs`` and is the chain iotsec publishes;
- ``simpleenroll`` with a bootstrap secret (``curl --user id:secret``) and
  ``simplereenroll`` with the device's certificate (``curl --cert/--key``) each answer a
  certificate that ``openssl verify -x509_strict`` accepts, naming the device;
- ``serverkeygen``'s multipart answer splits with Python's email parser, ``openssl pkey``
  and ``openssl pkcs7`` read its parts, the key is the certificate's, and the key is nowhere
  in the server's home or log;
- a client certificate sent in a header instead of the handshake is refused.
"""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from iotsec.pki.serial import format_serial
from tests.security.serving import Served
from tests.services import require_tool

pytestmark = pytest.mark.openssl

EST = "/.well-known/est"


@pytest.fixture(scope="module")
def curl() -> str:
    return require_tool("curl", "Debian package 'curl'")


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == 0, (args, done.stderr.decode(errors="replace"))
    return done


def iotsec_json(server: Served, *args: str) -> Any:
    done = server.iotsec(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def new_csr(openssl: str, work: Path, name: str, cn: str = "whatever-the-device-says"
            ) -> tuple[Path, Path]:
    """A P-256 key made by openssl and its CSR as an RFC 8951 body (base64 of the DER)."""
    key, der, b64 = work / f"{name}.key", work / f"{name}.csr.der", work / f"{name}.csr.b64"
    run(openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", key, "-subj", f"/CN={cn}", "-outform", "DER", "-out", der,
        cwd=work)
    run(openssl, "base64", "-in", der, "-out", b64, cwd=work)
    return key, b64


def est_call(curl: str, server: Served, work: Path, op: str, name: str, *options: str | Path
             ) -> tuple[int, dict[str, str], Path]:
    """``curl`` an EST operation: (status, headers (lower-case names), body file)."""
    body, headers = work / f"{name}.body", work / f"{name}.headers"
    done = run(curl, "-sS", "--cacert", server.chain, "-D", headers, "-o", body,
               "-w", "%{http_code}", *options, f"{server.est_url}{EST}/{op}", cwd=work)
    fields = {}
    for line in headers.read_text().splitlines()[1:]:
        field, _, value = line.partition(":")
        if value:
            fields[field.strip().lower()] = value.strip()
    return int(done.stdout), fields, body


def est_post(curl: str, server: Served, work: Path, op: str, name: str, csr: Path,
             *credential: str | Path) -> tuple[int, dict[str, str], Path]:
    """``curl`` a CSR (an RFC 8951 body file) to an EST operation with ``credential``
    (``--user id:secret``, or ``--cert``/``--key``, or forged headers)."""
    return est_call(curl, server, work, op, name, *credential, "--data-binary", f"@{csr}",
                    "-H", "Content-Type: application/pkcs10")


def user(secret: dict[str, str]) -> tuple[str, str]:
    """curl's HTTP Basic option for an enrolment secret (``enrol secret create --json``)."""
    return "--user", f"{secret['id']}:{secret['secret']}"


def certificates_in(openssl: str, work: Path, body: Path) -> tuple[Path, list[x509.Certificate]]:
    """An RFC 8951 certs-only body decoded the RFC 7030 way: ``openssl base64 -d`` then
    ``openssl pkcs7 -print_certs``; the PEM file and its certificates."""
    der, pem = body.with_suffix(".p7"), body.with_suffix(".pem")
    run(openssl, "base64", "-d", "-in", body, "-out", der, cwd=work)
    run(openssl, "pkcs7", "-inform", "DER", "-in", der, "-print_certs", "-out", pem, cwd=work)
    return pem, x509.load_pem_x509_certificates(pem.read_bytes())


def verified(openssl: str, server: Served, work: Path, cert_pem: Path) -> x509.Certificate:
    done = run(openssl, "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile",
               server.chain, cert_pem, cwd=work)
    assert done.stdout.decode().strip().endswith(": OK"), done.stdout
    (cert,) = x509.load_pem_x509_certificates(cert_pem.read_bytes())
    return cert


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def test_cacerts_parses_with_openssl(est_server: Served, curl: str, openssl: str,
                                     tmp_path: Path) -> None:
    status, headers, body = est_call(curl, est_server, tmp_path, "cacerts", "cacerts")
    assert status == 200
    assert headers["content-type"] == "application/pkcs7-mime"
    assert headers["content-transfer-encoding"] == "base64"
    assert "max-age" in headers["strict-transport-security"]
    _, certs = certificates_in(openssl, tmp_path, body)
    assert set(certs) == set(x509.load_pem_x509_certificates(est_server.chain.read_bytes()))


def test_simpleenroll_then_simplereenroll_with_curl(est_server: Served, curl: str, openssl: str,
                                                    tmp_path: Path) -> None:
    iotsec_json(est_server, "device", "add", "curl-dev-1")
    secret = iotsec_json(est_server, "enrol", "secret", "create", "curl-dev-1")
    key, csr = new_csr(openssl, tmp_path, "first")
    status, headers, body = est_post(curl, est_server, tmp_path, "simpleenroll", "enrolled",
                                     csr, *user(secret))
    assert status == 200, body.read_text()
    assert headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only"
    cert_pem, _ = certificates_in(openssl, tmp_path, body)
    first = verified(openssl, est_server, tmp_path, cert_pem)
    assert common_name(first) == "curl-dev-1"  # the registry's name, not the CSR's
    # The secret was for one use.
    status, headers, _ = est_post(curl, est_server, tmp_path, "simpleenroll", "again", csr,
                                  *user(secret))
    assert status == 401 and headers["www-authenticate"] == 'Basic realm="iotsec EST"'

    # Re-enrolment over mutual TLS: the current certificate and its key, a new key's CSR.
    _, next_csr = new_csr(openssl, tmp_path, "second")
    status, _, body = est_post(curl, est_server, tmp_path, "simplereenroll", "renewed",
                               next_csr, "--cert", cert_pem, "--key", key)
    assert status == 200, body.read_text()
    renewed_pem, _ = certificates_in(openssl, tmp_path, body)
    renewed = verified(openssl, est_server, tmp_path, renewed_pem)
    assert common_name(renewed) == "curl-dev-1"
    assert renewed.serial_number != first.serial_number
    old = iotsec_json(est_server, "cert", "show", format_serial(first.serial_number))
    assert old["replaced_by"] == format_serial(renewed.serial_number)

    # The same certificate handed over in a header instead of the handshake is nobody.
    forged = cert_pem.read_text().replace("\n", "")
    status, headers, _ = est_post(
        curl, est_server, tmp_path, "simplereenroll", "forged", next_csr,
        "-H", f"X-SSL-Client-Cert: {forged}", "-H", f"X-Forwarded-Client-Cert: Cert=\"{forged}\"")
    assert status == 401 and "basic" in headers["www-authenticate"].lower()


def test_serverkeygen_with_curl_split_by_the_email_parser(est_server: Served, curl: str,
                                                          openssl: str, tmp_path: Path) -> None:
    iotsec_json(est_server, "device", "add", "curl-dev-2")
    secret = iotsec_json(est_server, "enrol", "secret", "create", "curl-dev-2")
    _, csr = new_csr(openssl, tmp_path, "proof")
    status, headers, body = est_post(curl, est_server, tmp_path, "serverkeygen", "keygen", csr,
                                     *user(secret))
    assert status == 200, body.read_text()
    assert headers["content-type"].startswith("multipart/mixed")
    message = email.message_from_bytes(
        f"Content-Type: {headers['content-type']}\r\n\r\n".encode() + body.read_bytes(),
        policy=email.policy.default)
    assert message.is_multipart() and not message.defects
    key_part, cert_part = message.iter_parts()  # type: ignore[attr-defined]
    assert key_part.get_content_type() == "application/pkcs8"
    assert cert_part.get_content_type() == "application/pkcs7-mime"
    assert cert_part.get_param("smime-type") == "certs-only"
    key_der: bytes = key_part.get_content()
    (tmp_path / "key.der").write_bytes(key_der)
    (tmp_path / "cert.p7").write_bytes(cert_part.get_content())
    public = run(openssl, "pkey", "-inform", "DER", "-in", "key.der", "-pubout", cwd=tmp_path)
    run(openssl, "pkcs7", "-inform", "DER", "-in", "cert.p7", "-print_certs", "-out",
        "cert.pem", cwd=tmp_path)
    cert = verified(openssl, est_server, tmp_path, tmp_path / "cert.pem")
    assert common_name(cert) == "curl-dev-2"
    cert_public = run(openssl, "x509", "-in", "cert.pem", "-noout", "-pubkey", cwd=tmp_path)
    assert cert_public.stdout == public.stdout  # the key is the certificate's
    # Never stored nor logged: not in any file of the server's home, nor in its log.
    wanted = [key_der, key_part.get_payload().replace("\r\n", "").encode()[:64]]
    for path in [*est_server.home.rglob("*"), est_server.log]:
        if path.is_file():
            data = path.read_bytes()
            assert not any(w in data for w in wanted), path
