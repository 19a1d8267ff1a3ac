"""Hardening: revoked server certificates stayed in use, and a PKCS#11 home could not serve.

``ensure_server_tls`` checked only expiry, names and the key, and the broker's server
certificate only expiry and names: after a restart (a sync) both kept serving a certificate
the CRL lists. Both are now replaced once the store says revoked. A home whose CA keys live
in a PKCS#11 token refused ``iotsec serve`` ("serving HTTPS needs the file key store"); its
server's TLS key is now an encrypted file in the home, and ``iotsec serve`` answers over TLS.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from iotsec.app.broker import mosquitto as broker
from iotsec.app.pki import cert_records, revocation
from iotsec.app.pki.infrastructure import stored_status
from iotsec.app.pki.server_tls import ensure_server_tls
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import init_home
from iotsec.broker.mosquitto import Layout
from iotsec.config import Settings
from iotsec.custody.file_keys import FileKeyStore
from iotsec.pki.crl import RevocationReason
from iotsec.pki.serial import format_serial
from iotsec.store.db import transaction
from tests.broker.conftest import broker_dir
from tests.cli.support import CONSOLE_SCRIPT, run_script
from tests.custody_hsm.conftest import Hsm, hsm, softhsm_module
from tests.ports import free_port

__all__ = ["broker_dir", "hsm", "softhsm_module"]


def _leaf(pem: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(pem.read_bytes())[0]


def _revoke_in_store(rt: Runtime, serial: str) -> None:
    """A revocation as the old device route made it (or as a backup restored it)."""
    moment = rt.now().replace(microsecond=0)
    with transaction(rt.engine) as conn:
        row = cert_records.locked_certificate(conn, serial)
        revocation.mark_revoked(conn, serial, moment, RevocationReason.keyCompromise,
                                row.authority_id)


def test_a_revoked_api_server_certificate_is_replaced_at_the_next_start(rt: Runtime) -> None:
    first = ensure_server_tls(rt, "localhost")
    old = _leaf(first.chain_file)
    assert _leaf(ensure_server_tls(rt, "localhost").chain_file) == old  # kept while valid
    _revoke_in_store(rt, format_serial(old.serial_number))
    again = ensure_server_tls(rt, "localhost")
    new = _leaf(again.chain_file)
    assert new.serial_number != old.serial_number
    assert stored_status(rt, old) == "revoked" and stored_status(rt, new) == "valid"
    assert again.key_file != first.key_file
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(again.chain_file), str(again.key_file), again.key_password)


def test_a_revoked_broker_server_certificate_is_replaced_at_the_next_sync(
        rt: Runtime, broker_dir: Path) -> None:
    options = broker.BrokerOptions(broker_user=broker.default_broker_user())
    broker.render(rt, broker_dir, options, dry_run=False)
    layout = Layout.parse(broker_dir)
    old = _leaf(layout.current / "server.pem")
    assert not broker.sync(rt, broker_dir, dry_run=False).server_certificate_issued
    _revoke_in_store(rt, format_serial(old.serial_number))
    result = broker.sync(rt, broker_dir, dry_run=False)
    new = _leaf(layout.current / "server.pem")
    assert result.server_certificate_issued
    assert new.serial_number != old.serial_number
    assert stored_status(rt, old) == "revoked" and stored_status(rt, new) == "valid"


def test_a_pkcs11_home_builds_its_server_tls(hsm: Hsm, tmp_path: Path) -> None:
    settings = hsm.settings(Settings(home=tmp_path / "home"))
    init_home(settings, store_passphrase=True)
    rt = open_runtime(settings)
    try:
        assert not isinstance(rt.keys, FileKeyStore)  # the CA keys are in the token
        tls = ensure_server_tls(rt, "localhost")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls.chain_file), str(tls.key_file), tls.key_password)
        assert tls.key_file.parent == settings.keys_dir
        assert os.stat(tls.key_file).st_mode & 0o777 == 0o600
        assert b"ENCRYPTED PRIVATE KEY" in tls.key_file.read_bytes()
        on_disk = {p.name for p in settings.keys_dir.glob("*.key.pem")}
        assert on_disk == {tls.key_file.name}  # no CA key left the token
        # ... and it is replaced when revoked, like on a file home.
        old = _leaf(tls.chain_file)
        _revoke_in_store(rt, format_serial(old.serial_number))
        assert _leaf(ensure_server_tls(rt, "localhost").chain_file) != old
    finally:
        rt.custody.close()
        rt.close()


@pytest.fixture
def pkcs11_env(hsm: Hsm, tmp_path: Path) -> dict[str, str]:
    """The environment of an ``iotsec`` command on a home whose keystore is the token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
    env.update(hsm.env())
    env["IOTSEC_HOME"] = str(tmp_path / "home")
    return env


def test_iotsec_serve_answers_over_tls_on_a_pkcs11_home(pkcs11_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    init = run_script("init", "--store-passphrase", "--keystore", "pkcs11", env=pkcs11_env)
    assert init.returncode == 0, init.stderr
    chain = tmp_path / "chain.pem"
    with chain.open("wb") as fh:
        done = subprocess.run([str(CONSOLE_SCRIPT), "ca", "chain"], env=pkcs11_env, stdout=fh,
                              stderr=subprocess.PIPE, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen([str(CONSOLE_SCRIPT), "serve", "--port", str(port),
                                   "--est-port", "0"],
                                  env=pkcs11_env, stdout=log, stderr=subprocess.STDOUT)
        try:
            trust = ssl.create_default_context(cafile=str(chain))
            with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust,
                              timeout=5) as client:
                deadline = time.monotonic() + 30
                while True:
                    assert server.poll() is None, log_path.read_text()
                    try:
                        health = client.get("/healthz")
                        break
                    except httpx.ConnectError:
                        assert time.monotonic() < deadline, log_path.read_text()
                        time.sleep(0.1)
            assert health.json() == {"status": "ok"}
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
    listed = run_script("cert", "list", "--json", env=pkcs11_env)
    assert listed.returncode == 0, listed.stderr
    assert [c["kind"] for c in json.loads(listed.stdout)] == ["server"]
    # 'iotsec init' says where that key lives.
    assert "TLS keys" in init.stdout and "kept encrypted in" in init.stdout
