"""``iotsec serve``'s TLS: 1.2 and 1.3 only; in TLS 1.2 ECDHE with AEAD ciphers only (no CBC,
no RSA key exchange, no SHA-1 MAC). Checked with the reference clients: ``openssl s_client``
and nmap's ``ssl-enum-ciphers``."""

from __future__ import annotations

import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iotsec.api.tls import server_context
from iotsec.errors import ConfigError
from tests.conftest import require_tool
from tests.security.serving import Served, served

CBC = ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA256",
       "ECDHE-ECDSA-AES256-SHA384"]
AEAD = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(tmp_path_factory.mktemp("tls")) as srv:
        yield srv


def _s_client(srv: Served, *options: str) -> subprocess.CompletedProcess[str]:
    openssl = require_tool("openssl", "Debian package 'openssl'")
    return subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{srv.port}", "-servername", "localhost",
         "-CAfile", str(srv.chain), "-verify_return_error", *options],
        input="", capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("cipher", CBC)
def test_cbc_suites_are_refused(server: Served, cipher: str) -> None:
    done = _s_client(server, "-tls1_2", "-cipher", cipher)
    assert done.returncode != 0, done.stdout
    assert "Cipher is (NONE)" in done.stdout
    assert f"Cipher is {cipher}" not in done.stdout


@pytest.mark.parametrize("cipher", AEAD)
def test_ecdhe_aead_suites_are_accepted(server: Served, cipher: str) -> None:
    done = _s_client(server, "-tls1_2", "-cipher", cipher)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"New, TLSv1.2, Cipher is {cipher}" in done.stdout
    assert "Verify return code: 0 (ok)" in done.stdout
    assert "Compression: NONE" in done.stdout


def test_tls13_is_spoken_and_older_versions_are_not(server: Served) -> None:
    tls13 = _s_client(server, "-tls1_3")
    assert tls13.returncode == 0, tls13.stdout + tls13.stderr
    assert "New, TLSv1.3, Cipher is TLS_" in tls13.stdout
    # Security level 0 so that it is the server, not this client, that refuses TLS 1.1.
    tls11 = _s_client(server, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert tls11.returncode != 0
    assert "Cipher is (NONE)" in tls11.stdout


def test_tls12_renegotiation_is_refused(server: Served) -> None:
    """A client-initiated renegotiation (``R`` in s_client) is answered by a
    no_renegotiation alert, not a new handshake."""
    openssl = require_tool("openssl", "Debian package 'openssl'")
    client = subprocess.Popen(
        [openssl, "s_client", "-connect", f"127.0.0.1:{server.port}", "-tls1_2",
         "-CAfile", str(server.chain)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert client.stdin is not None
    client.stdin.write("R\n")
    client.stdin.flush()
    time.sleep(2)  # the server's answer arrives before s_client sees the end of its input
    out, err = client.communicate(timeout=30)
    assert "New, TLSv1.2" in out
    assert "RENEGOTIATING" in err
    assert "no renegotiation" in err, err


def test_nmap_lists_only_ecdhe_aead_suites(server: Served) -> None:
    nmap = require_tool("nmap", "Debian package 'nmap'")
    # "+" runs the script whatever service nmap guesses the port is.
    out = subprocess.run([nmap, "-Pn", "-p", str(server.port), "--script",
                          "+ssl-enum-ciphers", "127.0.0.1"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "TLSv1.2:" in out and "TLSv1.3:" in out, out
    assert "TLSv1.0:" not in out and "TLSv1.1:" not in out, out
    suites = re.findall(r"\b(TLS_\w+) \(", out)
    tls12 = [s for s in suites if not s.startswith("TLS_AKE_")]
    assert tls12, out
    assert "CBC" not in out, out
    for suite in tls12:
        assert suite.startswith("TLS_ECDHE_"), out
        assert "_GCM_" in suite or "CHACHA20_POLY1305" in suite, out
    assert "least strength: A" in out, out


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass")))
    return cert_file, key_file


def test_the_context_offers_no_cbc_suite(tmp_path: Path) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    context = server_context(cert_file, key_file, "pass")
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    tls12 = [s for s in context.get_ciphers() if s["protocol"] == "TLSv1.2"]
    assert tls12
    for suite in tls12:
        assert suite["aead"], suite
        assert suite["kea"] == "kx-ecdhe", suite
    with pytest.raises(ConfigError, match="cannot load the server certificate"):
        server_context(cert_file, key_file, "wrong")
    with pytest.raises(ConfigError, match="cannot load the server certificate"):
        server_context(tmp_path / "missing.pem", None, None)
