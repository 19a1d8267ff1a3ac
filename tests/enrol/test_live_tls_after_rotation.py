"""A running ``iotsec serve`` follows CA changes made by another process, without a restart:
after ``iotsec ca rotate`` its API and EST listeners present a server certificate from the
new CA and the EST listener trusts the new CA; after ``iotsec ca retire`` the retired CA's
device certificates fail the EST handshake itself, within a few seconds (the server polls
the store every 2 s)."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.helpers import make_csr, make_key
from tests.security.serving import Served, init_home, served

#: The poll interval of the serving process, plus a loaded machine's scheduling.
BOUND = 2.0 + 6.0


def _served(server: Served, port: int) -> x509.Certificate:
    """The certificate a new handshake with ``port`` presents."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            server.trust().wrap_socket(raw, server_hostname="localhost") as conn:
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _served_issuer(server: Served, port: int) -> x509.Name:
    return _served(server, port).issuer


def _device(server: Served, tmp_path: Path, name: str) -> tuple[Path, Path, x509.Certificate]:
    key = make_key()
    key_file = tmp_path / f"{name}.key"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    csr = tmp_path / f"{name}.csr"
    csr.write_bytes(make_csr(key))
    if server.iotsec("device", "show", name).returncode != 0:
        assert server.iotsec("device", "add", name).returncode == 0
    pem = tmp_path / f"{name}.pem"
    done = server.iotsec("cert", "issue", name, "--csr", str(csr), "--output", str(pem))
    assert done.returncode == 0, done.stderr
    return pem, key_file, x509.load_pem_x509_certificate(pem.read_bytes())


def _est_accepts(server: Served, cert: Path, key: Path) -> bool:
    """Whether the EST listener completes a request made with this client certificate
    (``cacerts`` needs none: only the handshake can refuse it)."""
    context = server.trust()
    context.load_cert_chain(cert, key)
    try:
        with httpx.Client(base_url=server.est_url, verify=context, timeout=10) as client:
            return client.get("/.well-known/est/cacerts").status_code == 200
    except (httpx.TransportError, ssl.SSLError):
        return False


def _within(bound: float, check: Callable[[], bool], what: str) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < bound, what
        time.sleep(0.2)
    return time.monotonic() - start


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_rotation_and_a_retirement_reach_the_running_listeners(
        tmp_path: Path, database_url: str | None) -> None:
    env = {} if database_url is None else {"IOTSEC_DATABASE_URL": database_url}
    home = init_home(tmp_path, env)
    old_issuing = x509.load_pem_x509_certificates(home.chain.read_bytes())[0]
    with served(tmp_path, est=True, home=home) as server:
        assert server.est_port is not None
        assert _served_issuer(server, server.port) == old_issuing.subject
        assert _served_issuer(server, server.est_port) == old_issuing.subject
        old_cert, old_key, _ = _device(server, tmp_path, "dev-old")
        assert _est_accepts(server, old_cert, old_key)

        rotated = server.iotsec("ca", "rotate", "--json")
        assert rotated.returncode == 0, rotated.stderr
        new_cert, new_key, issued = _device(server, tmp_path, "dev-new")
        assert issued.issuer != old_issuing.subject
        # The new CA is trusted, and the server certificate comes from it, on both
        # listeners, for new handshakes: no restart.
        _within(BOUND, lambda: _est_accepts(server, new_cert, new_key),
                "the EST listener does not trust the new CA")
        _within(BOUND, lambda: _served_issuer(server, server.port) == issued.issuer,
                "the API listener still presents a certificate of the retiring CA")
        _within(BOUND, lambda: _served_issuer(server, server.est_port or 0) == issued.issuer,
                "the EST listener still presents a certificate of the retiring CA")
        # Retiring: still trusted during the overlap.
        assert _est_accepts(server, old_cert, old_key)

        old_id = next(a["id"] for a in json.loads(rotated.stdout)["changed"]
                      if a["state"] == "retiring" and a["role"] == "issuing")
        retired = server.iotsec("ca", "retire", str(old_id))
        assert retired.returncode == 0, retired.stderr
        _within(BOUND, lambda: not _est_accepts(server, old_cert, old_key),
                "the EST listener still trusts the retired CA")
        assert _est_accepts(server, new_cert, new_key)
        assert _served_issuer(server, server.port) == issued.issuer

        # The server certificate replaced by another process (revoked as infrastructure):
        # the running server loads the replacement too.
        current = _served(server, server.port).serial_number
        replaced = server.iotsec("cert", "revoke", f"{current:X}", "--infrastructure")
        assert replaced.returncode == 0, replaced.stderr
        # Every handshake meanwhile succeeds: the new context is handed over whole.
        _within(BOUND, lambda: _served(server, server.port).serial_number != current,
                "the API listener still presents the revoked server certificate\n"
                + server.log.read_text())
