"""``iotsec serve`` with its EST listener, a real process asked by curl and ``openssl
s_client``: both listeners served, only the EST listener asking for a client certificate,
the certificates its handshake takes and refuses (an expired one only inside the renewal
window), claim CAs trusted as soon as they are registered, forged certificate headers
ignored, ``--workers``, and a port in use refused in one line."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.cli.conftest import cli, cli_home, ready
from tests.cli.support import CONSOLE_SCRIPT, Cli
from tests.enrol.asgi_est import Manufacturer, csr, pem
from tests.ports import free_port
from tests.security.serving import Served, init_home, recorded_servers, served
from tests.services import require_tool

__all__ = ["cli", "cli_home", "ready"]

EST = "/.well-known/est"


def _curl(url: str, chain: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """curl, printing the body and then the status code on a line of its own."""
    return subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", str(chain),
                           "-w", "\n%{http_code}", *options, url],
                          capture_output=True, text=True, timeout=60, check=False)


def _status(done: subprocess.CompletedProcess[str]) -> int:
    assert done.returncode == 0, done.stderr
    return int(done.stdout.rsplit("\n", 1)[1])


def _refused(done: subprocess.CompletedProcess[str]) -> bool:
    """Whether curl got no HTTP answer at all (the handshake failed)."""
    return done.returncode != 0 and done.stdout.strip() in ("", "000")


def _with(cert: Path, key: Path) -> tuple[str, ...]:
    return ("--cert", str(cert), "--key", str(key))


def _device_certificate(srv: Served, device: str, directory: Path) -> tuple[Path, Path]:
    """A device registered on ``srv``'s home and a certificate iotsec issued it."""
    assert srv.iotsec("device", "add", device).returncode == 0
    done = srv.iotsec("cert", "issue", device, "--keygen", "-o", str(directory), "--json")
    assert done.returncode == 0, done.stderr
    files = json.loads(done.stdout)["files"]
    return Path(files[f"{device}.crt"]), Path(files[f"{device}.key"])


def _claim(factory: Manufacturer, hardware_id: str, directory: Path) -> tuple[Path, Path]:
    """A claim certificate ``factory`` issued, and its key, as files."""
    key, cert = factory.claim(hardware_id)
    files = directory / f"{hardware_id}.pem", directory / f"{hardware_id}.key"
    files[0].write_text(pem(cert))
    files[1].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return files


def _reenrol(srv: Served, client: tuple[Path, Path] | None, *headers: str
             ) -> subprocess.CompletedProcess[str]:
    """``simplereenroll`` over curl (with ``client``'s certificate and key in the
    handshake): a new key's CSR in base64, as RFC 7030 shows."""
    body = base64.encodebytes(csr(cn="ignored")).decode("ascii")
    options = ["-X", "POST", "-H", "Content-Type: application/pkcs10",
               "-H", "Content-Transfer-Encoding: base64", "--data-binary", body]
    for header in headers:
        options += ["-H", header]
    if client is not None:
        options += list(_with(*client))
    return _curl(f"{srv.est_url}{EST}/simplereenroll", srv.chain, *options)


def _s_client(port: int, chain: Path, *options: str) -> str:
    openssl = require_tool("openssl", "Debian package 'openssl'")
    done = subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-msg",
                           "-CAfile", str(chain), "-verify_return_error", *options],
                          input="", capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_both_listeners_serve_and_the_banner_names_them(est_server: Served) -> None:
    health = _curl(f"{est_server.api_url}/healthz", est_server.chain)
    assert _status(health) == 200
    cacerts = _curl(f"{est_server.est_url}{EST}/cacerts", est_server.chain)
    assert _status(cacerts) == 200
    # The API is not served on the EST listener, nor EST on the API's.
    assert _status(_curl(f"{est_server.est_url}/healthz", est_server.chain)) == 404
    assert _status(_curl(f"{est_server.api_url}{EST}/cacerts", est_server.chain)) == 404
    banner = est_server.log.read_text().splitlines()[0]
    assert banner == (f"iotsec serving on {est_server.api_url}, EST on {est_server.est_url}"
                      f"{EST}/  (clients trust the chain from 'iotsec ca chain')")


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_only_the_est_listener_requests_a_client_certificate(est_server: Served,
                                                             version: str) -> None:
    api = _s_client(est_server.port, est_server.chain, version)
    est = _s_client(est_server.est_port or 0, est_server.chain, version)
    assert "ServerHello" in api and "ServerHello" in est
    assert "CertificateRequest" not in api
    assert "CertificateRequest" in est
    # It requests one without requiring it: the handshake without one succeeded.
    assert "Verify return code: 0 (ok)" in est


def test_an_iotsec_certificate_is_taken_and_an_unknown_ca_refused(
        est_server: Served, tmp_path: Path) -> None:
    cert, key = _device_certificate(est_server, "tls-dev-1", tmp_path / "dev")
    cacerts = f"{est_server.est_url}{EST}/cacerts"
    assert _status(_curl(cacerts, est_server.chain, *_with(cert, key))) == 200
    # The chain the handshake verified reaches the application: it renews the device.
    renewed = _reenrol(est_server, (cert, key))
    assert _status(renewed) == 200, renewed.stdout
    # A certificate from a CA nobody registered does not get through the handshake.
    claim = _claim(Manufacturer.create("Nobody's Factory CA"), "hw-unknown", tmp_path)
    refused = _curl(cacerts, est_server.chain, *_with(*claim))
    assert _refused(refused), refused


def test_a_forged_client_certificate_header_is_ignored(est_server: Served,
                                                       tmp_path: Path) -> None:
    cert, key = _device_certificate(est_server, "tls-dev-2", tmp_path / "dev")
    forged = cert.read_text()
    headers = [f"{name}: {value}" for name in ("X-SSL-Client-Cert", "X-Client-Cert",
                                               "SSL-Client-Cert", "X-Forwarded-Client-Cert")
               for value in (forged.replace("\n", " "), forged.replace("\n", "%0A"))]
    # The device's own certificate in headers, none in the handshake: not authenticated.
    refused = _reenrol(est_server, None, *headers)
    assert _status(refused) == 401, refused.stdout
    # The same request with the certificate in the handshake renews it.
    assert _status(_reenrol(est_server, (cert, key), *headers)) == 200


def test_a_claim_ca_registered_while_serving_is_trusted_without_a_restart(
        est_server: Served, tmp_path: Path) -> None:
    factory = Manufacturer.create("Acme Line 7 CA")
    claim = _claim(factory, "acme-7-0001", tmp_path)
    (tmp_path / "ca.pem").write_bytes(factory.pem)
    cacerts = f"{est_server.est_url}{EST}/cacerts"
    before = _curl(cacerts, est_server.chain, *_with(*claim))
    assert _refused(before), before

    done = est_server.iotsec("enrol", "template", "add", "acme-line-7", "--id-from",
                             "serial-number")
    assert done.returncode == 0, done.stderr
    done = est_server.iotsec("enrol", "claim-ca", "add", "acme-7", "--ca",
                             str(tmp_path / "ca.pem"), "--template", "acme-line-7")
    assert done.returncode == 0, done.stderr
    registered = time.monotonic()
    while True:
        attempt = _curl(cacerts, est_server.chain, *_with(*claim))
        if attempt.returncode == 0:
            break
        assert time.monotonic() - registered < 8, attempt.stderr
        time.sleep(0.25)
    assert _status(attempt) == 200
    # The server was not restarted, and the claim enrols the device it names.
    assert Path(f"/proc/{est_server.pid}").exists()
    body = base64.encodebytes(csr(cn="ignored")).decode("ascii")
    enrolled = _curl(f"{est_server.est_url}{EST}/simpleenroll", est_server.chain,
                     *_with(*claim), "-X", "POST",
                     "-H", "Content-Type: application/pkcs10", "--data-binary", body)
    assert _status(enrolled) == 200, enrolled.stdout
    assert "acme-7-0001" in est_server.iotsec("device", "list").stdout


def test_an_expired_certificate_passes_the_handshake_only_inside_the_renewal_window(
        tmp_path: Path) -> None:
    faketime = require_tool("faketime", "Debian package 'faketime'")
    # A home whose CA is three days old, and a device certificate that expired yesterday.
    home = init_home(tmp_path, prefix=(faketime, "-f", "-3d"))
    two_days_ago = (faketime, "-f", "-2d", str(CONSOLE_SCRIPT))
    added = subprocess.run([*two_days_ago, "device", "add", "old-1"], env=home.env,
                           capture_output=True, text=True, timeout=60, check=False)
    assert added.returncode == 0, added.stderr
    issued = subprocess.run([*two_days_ago, "cert", "issue", "old-1", "--keygen", "--days",
                             "1", "-o", str(tmp_path / "old")], env=home.env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert issued.returncode == 0, issued.stderr
    cert, key = tmp_path / "old" / "old-1.crt", tmp_path / "old" / "old-1.key"
    expired_at = x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc
    assert expired_at < datetime.now(UTC) - timedelta(hours=12)
    for run in ("strict", "window"):
        (tmp_path / run).mkdir()
    with served(tmp_path / "strict", home=home, est=True) as srv:
        refused = _curl(f"{srv.est_url}{EST}/cacerts", srv.chain, *_with(cert, key))
        assert _refused(refused), refused
    with served(tmp_path / "window", home=home, est=True,
                env={"IOTSEC_RENEW_AFTER_EXPIRY": str(3 * 86400)}) as srv:
        assert _status(_curl(f"{srv.est_url}{EST}/cacerts", srv.chain,
                             *_with(cert, key))) == 200
        renewed = _reenrol(srv, (cert, key))
        assert _status(renewed) == 200, renewed.stdout


def _listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            found.add(match.group(1))
    return found


def _workers(pid: int) -> list[int]:
    workers = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            workers.append(int(entry.name))
    return workers


def test_several_workers_each_serve_both_listeners(tmp_path: Path) -> None:
    with served(tmp_path, "--workers", "2", est=True) as srv:
        cert, key = _device_certificate(srv, "tls-dev-3", tmp_path / "dev")
        for _ in range(6):
            assert _status(_curl(f"{srv.api_url}/healthz", srv.chain)) == 200
            assert _status(_curl(f"{srv.est_url}{EST}/cacerts", srv.chain,
                                 *_with(cert, key))) == 200
        assert _status(_reenrol(srv, (cert, key))) == 200
        workers = _workers(srv.pid)
        assert len(workers) == 2
        api, est = _listening_inodes(srv.port), _listening_inodes(srv.est_port or 0)
        assert api and est
        for worker in workers:
            held = _socket_inodes(worker)
            assert held & api and held & est, worker
        # A worker that dies is replaced by one that serves both listeners too.
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            now = _workers(srv.pid)
            fresh = [w for w in now if w not in workers]
            if len(now) == 2 and fresh and _socket_inodes(fresh[0]) & est:
                break
            assert time.monotonic() < deadline, now
            time.sleep(0.2)
        assert _socket_inodes(fresh[0]) & api
        # The certificate still reaches the application, which knows it was renewed.
        again = _reenrol(srv, (cert, key))
        assert _status(again) == 403 and "already renewed" in again.stdout
        workers = now
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{w}").exists() for w in workers):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def _exited(pid: int) -> bool:
    """Whether ``pid`` has exited (gone, or a zombie its parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_both_listeners(tmp_path: Path, sig: signal.Signals) -> None:
    with served(tmp_path, est=True) as srv:
        # An idle keep-alive connection on each listener does not hold the stop up.
        idle = [socket.create_connection(("127.0.0.1", port))
                for port in (srv.port, srv.est_port or 0)]
        os.kill(srv.pid, sig)
        deadline = time.monotonic() + 15
        while not _exited(srv.pid):
            assert time.monotonic() < deadline, srv.log.read_text()
            time.sleep(0.1)
        for port in (srv.port, srv.est_port or 0):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=5)
        for sock in idle:
            sock.close()
        assert "Traceback" not in srv.log.read_text()


def test_an_est_port_in_use_is_refused_in_one_line(cli: Cli, ready: object,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    started = recorded_servers(monkeypatch)
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        message = cli.refused("serve", "--port", str(port), "--est-port", str(busy))
    assert f"127.0.0.1:{busy}" in message and "--est-port" in message, message
    assert "serving on" not in message
    same = cli.refused("serve", "--port", str(port), "--est-port", str(port))
    assert "--est-port" in same
    assert started == []
    # Nothing is left holding the API's port.
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))
