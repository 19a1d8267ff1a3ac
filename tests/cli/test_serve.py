"""``iotsec serve`` and the installed console script."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509

from tests.cli.support import CONSOLE_SCRIPT, Cli, assert_refused, run_script
from tests.cli.support import Result as CliResult
from tests.ports import free_port as _free_port
from tests.security.serving import child_pids, recorded_servers


@pytest.fixture
def fake_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[list[uvicorn.Config]]:
    """Record the servers ``iotsec serve`` would run instead of serving."""
    return recorded_servers(monkeypatch)


def test_plain_http_is_refused_off_loopback(cli: Cli, ready: object,
                                            fake_uvicorn: list[list[uvicorn.Config]]) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10", "example.org"):  # noqa: S104
        message = cli.refused("serve", "--http", "--host", host)
        assert "loopback" in message
    assert fake_uvicorn == []


def test_plain_http_on_loopback_and_https_elsewhere(
        cli: Cli, ready: object, fake_uvicorn: list[list[uvicorn.Config]]) -> None:
    # serve binds the ports before it hands over to uvicorn: free ones.
    port, est = _free_port(), _free_port()
    cli.ok("serve", "--http", "--host", "127.0.0.1", "--port", str(port), "--est-port",
           str(est))
    ((plain, enrol),) = fake_uvicorn
    assert (plain.host, plain.port) == ("127.0.0.1", port)
    assert plain.ssl_certfile is None and plain.ssl is None
    # EST stays on HTTPS, and asks for (without requiring) a client certificate.
    assert (enrol.host, enrol.port) == ("127.0.0.1", est)
    assert enrol.ssl is not None and enrol.ssl.verify_mode == ssl.CERT_OPTIONAL
    fake_uvicorn.clear()

    cli.ok("serve", "--host", "0.0.0.0", "--port", str(_free_port()),  # noqa: S104
           "--est-port", "0")
    ((tls,),) = fake_uvicorn
    assert tls.ssl_certfile is not None and tls.ssl_keyfile is not None
    chain = x509.load_pem_x509_certificates(Path(tls.ssl_certfile).read_bytes())
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    # The TLS key stays encrypted on disk; the server is given its passphrase.
    assert b"ENCRYPTED" in Path(tls.ssl_keyfile).read_bytes()
    assert tls.ssl_keyfile_password
    # The API listener never asks for a client certificate.
    assert tls.ssl is not None and tls.ssl.verify_mode == ssl.CERT_NONE


def test_uninitialised_home_is_refused_before_serving(
        cli: Cli, fake_uvicorn: list[list[uvicorn.Config]]) -> None:
    assert "iotsec init" in cli.refused("serve")
    assert fake_uvicorn == []


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
    env["IOTSEC_HOME"] = str(home)
    return env


def _stop(server: subprocess.Popen[bytes], *, grace: float) -> None:
    """Stop the server by its pid: SIGTERM, then SIGKILL if it still runs after ``grace``
    seconds."""
    server.terminate()
    try:
        server.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=10)


def test_console_script_exit_codes(tmp_path: Path) -> None:
    assert CONSOLE_SCRIPT.exists()
    env = _env(tmp_path / "home")
    version = run_script("--version", env=env)
    assert version.returncode == 0
    assert version.stdout.startswith("iotsec ")
    uninitialised = run_script("device", "list", env=env)
    assert_refused(CliResult(uninitialised.returncode, uninitialised.stdout,
                             uninitialised.stderr))
    usage = run_script("cert", "revoke", env=env)
    assert usage.returncode == 2
    assert "Traceback" not in usage.stderr


def test_serve_https_end_to_end(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _env(home)
    init = run_script("init", "--store-passphrase", "--json", env=env)
    assert init.returncode == 0, init.stderr
    token = json.loads(init.stdout)["admin_token"]
    chain = tmp_path / "chain.pem"
    with chain.open("wb") as fh:  # iotsec ca chain > chain.pem
        done = subprocess.run([str(CONSOLE_SCRIPT), "ca", "chain"], env=env, stdout=fh,
                              stderr=subprocess.PIPE, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    issuing = x509.load_pem_x509_certificates(chain.read_bytes())[0]

    port = _free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen([str(CONSOLE_SCRIPT), "serve", "--port", str(port),
                               "--est-port", "0"], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        trust = ssl.create_default_context(cafile=str(chain))
        base = f"https://127.0.0.1:{port}"
        with httpx.Client(base_url=base, verify=trust, timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    health = client.get("/healthz")
                    break
                except httpx.ConnectError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            assert health.status_code == 200
            assert health.json() == {"status": "ok"}
            assert "server" not in health.headers

            crl = client.get("/crl")
            assert crl.status_code == 200
            assert crl.headers["content-type"] == "application/pkix-crl"
            parsed = x509.load_der_x509_crl(crl.content)
            assert parsed.is_signature_valid(issuing.public_key())

            assert client.get("/v1/devices").status_code == 401
            auth = {"Authorization": f"Bearer {token}"}
            assert client.post("/v1/devices", json={"id": "net-1"}, headers=auth
                               ).status_code == 201
            listed = client.get("/v1/devices", headers=auth)
            assert listed.status_code == 200
            assert [d["id"] for d in listed.json()] == ["net-1"]

        # A client that does not trust iotsec's CA is refused by TLS.
        with httpx.Client(verify=ssl.create_default_context(), timeout=5) as stranger, \
                pytest.raises(httpx.ConnectError):
            stranger.get(f"{base}/healthz")
    finally:
        _stop(server, grace=10)
        log.close()


def test_serve_with_several_workers(tmp_path: Path) -> None:
    """``--workers 2``: two serving processes over one home, each answering decisions
    (the fast path and the registry cache per process); all stop with the supervisor."""
    home = tmp_path / "home"
    env = _env(home)
    init = run_script("init", "--store-passphrase", "--json", env=env)
    assert init.returncode == 0, init.stderr
    token = json.loads(init.stdout)["admin_token"]
    assert run_script("device", "add", "sensor-1", env=env).returncode == 0
    port = _free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen([str(CONSOLE_SCRIPT), "serve", "--http", "--port", str(port),
                               "--est-port", "0", "--workers", "2"], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    workers: set[int] = set()
    try:
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    assert client.get("/healthz").status_code == 200
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            for _ in range(20):
                decision = client.post("/v1/authz/check", headers=auth, json={
                    "device": "sensor-1", "action": "publish",
                    "resource": "devices/sensor-1/t"})
                assert decision.status_code == 200
                assert decision.json()["allowed"] is True
            assert client.post("/v1/authz/check", json={}).status_code == 401
        workers = {p for p in child_pids(server.pid)
                   if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()}
        assert len(workers) == 2
    finally:
        _stop(server, grace=20)
        log.close()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{p}").exists() for p in workers)
