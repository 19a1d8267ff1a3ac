"""Alert delivery to real local receivers: a syslog listener over UDP, TCP and TLS (RFC 5424
messages, RFC 6587/5425 octet counting) and an SMTP server (aiosmtpd) with STARTTLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from iotsec.app.identity import devices
from iotsec.app.monitor.alerts import get_alert
from iotsec.app.monitor.checks import run_checks
from iotsec.app.monitor.delivery import deliver_due
from iotsec.app.pki import issuance
from iotsec.app.runtime import Runtime
from tests.helpers import make_csr

RFC5424 = re.compile(r"^<(\d+)>1 \S+ \S+ iotsec - alert\.cert\.expiring \[iotsec@32473 .*\] ")


def _server_cert(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "server.pem", tmp / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _alert(rt: Runtime) -> int:
    devices.add_device(rt, devices.NewDevice.parse("sink-1"))
    issuance.issue_from_csr(rt, "sink-1", make_csr(), days=2)
    (alert_id,) = run_checks(rt).raised
    return alert_id


def _read_framed(conn: socket.socket | ssl.SSLSocket) -> str:
    data = b""
    while b" " not in data:
        data += conn.recv(1)
    length, _, rest = data.partition(b" ")
    body = rest
    while len(body) < int(length):
        body += conn.recv(int(length) - len(body))
    return body.decode("utf-8")


def test_syslog_over_udp_and_tcp(rt: Runtime) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(10)
    rt.settings.alert_syslog = f"udp://127.0.0.1:{udp.getsockname()[1]}"
    alert_id = _alert(rt)
    assert deliver_due(rt).delivered == 1
    message = udp.recv(65535).decode()
    udp.close()
    assert RFC5424.match(message) and f'id="{alert_id}"' in message
    assert int(RFC5424.match(message).group(1)) == 13 * 8 + 2  # log audit, critical

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    got: list[str] = []

    def accept() -> None:
        conn, _ = listener.accept()
        with conn:
            got.append(_read_framed(conn))

    thread = threading.Thread(target=accept)
    thread.start()
    rt.settings.alert_syslog = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    from iotsec.app.monitor.alerts import set_state
    from iotsec.eventlog.alerts import AlertState

    set_state(rt, alert_id, AlertState.RESOLVED)
    devices.add_device(rt, devices.NewDevice.parse("sink-2"))
    issuance.issue_from_csr(rt, "sink-2", make_csr(), days=2)
    assert run_checks(rt).raised
    assert deliver_due(rt).delivered == 1
    thread.join(10)
    listener.close()
    assert RFC5424.match(got[0])


def test_syslog_over_tls_verifies_the_server(rt: Runtime, tmp_path: Path) -> None:
    cert, key = _server_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    got: list[str] = []

    def accept() -> None:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                got.append(_read_framed(tls))
        except (ssl.SSLError, OSError):
            got.append("handshake refused")

    rt.settings.alert_syslog = f"tls://127.0.0.1:{listener.getsockname()[1]}"
    thread = threading.Thread(target=accept)
    thread.start()
    _alert(rt)
    result = deliver_due(rt)  # the server's certificate is not trusted: refused
    thread.join(10)
    assert result.failed == 1 and got == ["handshake refused"]
    rt.settings.alert_syslog_ca = cert
    thread = threading.Thread(target=accept)
    thread.start()
    from datetime import timedelta
    rt.clock = (lambda now=rt.now() + timedelta(minutes=1): now)  # type: ignore[misc]
    assert deliver_due(rt).delivered == 1
    thread.join(10)
    listener.close()
    assert RFC5424.match(got[-1])


def test_syslog_in_clear_to_another_host_is_refused(rt: Runtime) -> None:
    rt.settings.alert_syslog = "udp://192.0.2.7:514"
    alert_id = _alert(rt)
    deliver_due(rt)
    assert get_alert(rt, alert_id).deliveries == {"syslog": "pending"}
    with rt.engine.connect() as conn:
        from sqlalchemy import select

        from iotsec.store import models as m
        error = conn.execute(select(m.alert_deliveries.c.last_error)).scalar_one()
    assert "in clear" in error


class _Inbox:
    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos),  # type: ignore[attr-defined]
                           envelope.content))  # type: ignore[attr-defined]
        return "250 OK"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[_Inbox, int, Path]]:
    cert, key = _server_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = _Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True)
    controller.start()
    try:
        yield inbox, port, cert
    finally:
        controller.stop()


def test_mail_over_starttls(rt: Runtime, smtp: tuple[_Inbox, int, Path]) -> None:
    inbox, port, cert = smtp
    rt.settings.alert_smtp_url = f"smtp://127.0.0.1:{port}"
    rt.settings.alert_smtp_from = "iotsec@example.com"
    rt.settings.alert_smtp_to = ["soc@example.com"]
    rt.settings.alert_smtp_ca = cert
    rt.settings.alert_smtp_password = SecretStr("unused")
    alert_id = _alert(rt)
    assert deliver_due(rt).delivered == 1
    sender, rcpts, content = inbox.mails[0]
    assert sender == "iotsec@example.com" and rcpts == ["soc@example.com"]
    assert b"Subject: [iotsec high]" in content and b"sink-1" in content
    assert get_alert(rt, alert_id).deliveries == {"email": "delivered"}
