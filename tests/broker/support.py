"""Helpers for the broker tests: a real Mosquitto per test, device credentials, a reference
model of Mosquitto's acl_file checks."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iotsec import brokerctl
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.pki.bundles import issue_with_keygen
from iotsec.app.runtime import Runtime
from iotsec.broker.mosquitto import Layout
from iotsec.device import Message


@contextlib.contextmanager
def short_broker_dir(name: str) -> Iterator[Path]:
    """``/tmp/iotsec-b-XXXX/NAME`` (not created), removed afterwards: short, since a Unix
    socket path lives inside, and reachable by the broker's own account."""
    path = Path(tempfile.mkdtemp(prefix="iotsec-b-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path / name
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Broker:
    """A Mosquitto started on a rendered directory; stopped by its pid."""

    def __init__(self, binary: str, layout: Layout) -> None:
        self.binary = binary
        self.layout = layout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 5.0) -> None:
        offset = self.layout.log_file.stat().st_size if self.layout.log_file.exists() else 0
        self.proc = subprocess.Popen([self.binary, "-c", str(self.layout.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"mosquitto exited: {err[-500:]}")
            with contextlib.suppress(OSError), self.layout.log_file.open("rb") as fh:
                fh.seek(offset)
                if b" running" in fh.read():
                    return
            time.sleep(0.02)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None


class Inbox:
    """A device's message handler that keeps what arrives (and signals each arrival)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.event = threading.Event()

    def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self.event.set()


@dataclass(frozen=True)
class Creds:
    device_id: str
    cert: Path
    key: Path
    ca: Path
    serial: str


def enroll(rt: Runtime, device_id: str, out: Path, *, days: int | None = None,
           roles: tuple[str, ...] | None = None, groups: tuple[str, ...] = ()) -> Creds:
    """Register (if needed) and issue a certificate; write cert, key and the CA chain."""
    with contextlib.suppress(Exception):
        add_device(rt, NewDevice.parse(device_id, groups=groups, roles=roles))
    bundle = issue_with_keygen(rt, device_id, p12_passphrase=b"not-used-here", days=days)
    out.mkdir(parents=True, exist_ok=True)
    tag = bundle.certificate.serial[:8]
    cert = out / f"{device_id}-{tag}.crt"
    key = out / f"{device_id}-{tag}.key"
    ca = out / "ca.pem"
    cert.write_text(bundle.certificate.pem)
    key.write_bytes(bundle.key_pem)
    ca.write_text(bundle.chain_pem)
    return Creds(device_id, cert, key, ca, bundle.certificate.serial)


def foreign_ca_creds(device_id: str, out: Path, ca: Path) -> Creds:
    """A certificate for ``device_id`` from a CA the broker does not trust."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Rogue CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(hours=1))
               .not_valid_after(now + timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / "rogue.crt", out / "rogue.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                          + ca_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Creds(device_id, cert_path, key_path, ca, "00")


def wait_for(predicate: object, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(step)
    return False


@contextlib.contextmanager
def running(binary: str, layout: Layout) -> Iterator[Broker]:
    broker = Broker(binary, layout)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


def mqtt_tls_connect(port: int, ca: Path, cert: Path | None = None,
                     key: Path | None = None) -> str:
    """A TLS connection to the broker on ``port`` (with the client certificate ``cert`` and
    ``key`` when given) and an MQTT CONNECT: 'connected', or why not."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            # TLS 1.3: the server checks the client certificate after the handshake; wait
            # for its alert before sending (unread data would make it reset instead).
            tls.settimeout(0.5)
            try:
                if not tls.recv(1):
                    return "failed: closed"
            except TimeoutError:
                pass
            tls.settimeout(3)
            tls.sendall(brokerctl.connect_packet())
            kind, body = brokerctl.read_packet(tls)
            return "connected" if kind >> 4 == 2 and body[1] == 0 else f"refused {body.hex()}"
    except (ssl.SSLError, OSError, ConnectionError) as exc:
        return f"failed: {exc}"
