"""Loopback fixture servers for the scanner tests: real tools and small fakes.

Everything listens on 127.0.0.1, on free ports chosen at start. Real tools (``openssl
s_server``, ``mosquitto``) run as child processes and are stopped by their pid; the fakes
(Telnet, HTTP, FTP, SSH, RTSP, Modbus, CoAP and the misbehaving servers) run on an asyncio
loop in a background thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from iotsec.app.runtime import Runtime
from iotsec.pki import x509 as enc
from iotsec.pki.issue import issue_server
from iotsec.scan.probes import mqtt_connect

HOST = "127.0.0.1"


def wait_listening(port: int, proc: subprocess.Popen[bytes] | None = None,
                   timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on "
                               f"{port}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout} s")


def wait_mqtt(port: int, proc: subprocess.Popen[bytes], *, tls: bool = False,
              timeout: float = 10.0) -> None:
    """Wait until the broker on ``port`` answers a CONNECT with a CONNACK (whatever its
    code): a broker's port accepts connections as soon as it listens, before its loop
    reads them."""
    deadline = time.monotonic() + timeout
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # readiness only
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the broker on {port} exited with {proc.returncode}")
        if _connack(port, context if tls else None):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the broker on {HOST}:{port} answered no CONNECT in {timeout} s")


def _connack(port: int, context: ssl.SSLContext | None) -> bool:
    try:
        raw = socket.create_connection((HOST, port), 0.5)
    except OSError:
        return False
    with raw:
        try:
            conn = raw if context is None else context.wrap_socket(raw)
            with conn:
                conn.settimeout(0.5)
                conn.sendall(mqtt_connect("lab-ready"))
                return conn.recv(4)[:1] == b"\x20"  # CONNACK
        except OSError:
            return False


@dataclass
class Processes:
    """Child processes, stopped by pid (terminate, then kill) in reverse order."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], cwd: Path, port: int) -> subprocess.Popen[bytes]:
        with (cwd / f"proc-{port}.log").open("wb") as log:  # the child keeps its own copy
            proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=log,
                                    stderr=subprocess.STDOUT)
        self.procs.append(proc)
        wait_listening(port, proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdin is not None:
                proc.stdin.close()
        self.procs.clear()


# --------------------------------------------------------------------------- certificates


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def fleet_server_cert(rt: Runtime, directory: Path, stem: str, *, dns: tuple[str, ...],
                      ips: tuple[str, ...], days: int = 397,
                      rsa_bits: int | None = None) -> tuple[Path, Path, Path]:
    """A server certificate from the home's issuing CA: (cert, key, chain) files."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    key = (rsa.generate_private_key(65537, rsa_bits) if rsa_bits
           else ec.generate_private_key(ec.SECP256R1()))
    issuing = rt.authority("issuing")
    issued = issue_server(issuing, spki=enc.spki_der(key.public_key()),
                          common_name=dns[0] if dns else ips[0], dns_names=dns, ips=ips,
                          now=datetime.now(UTC), days=days)
    cert = directory / f"{stem}.crt"
    key_file = directory / f"{stem}.key"
    chain = directory / f"{stem}-chain.pem"
    cert.write_bytes(enc.to_pem(issued.der, "CERTIFICATE"))
    key_file.write_bytes(_pem_key(key))
    chain.write_bytes(enc.to_pem(issuing.der, "CERTIFICATE"))
    return cert, key_file, chain


def expired_self_signed(directory: Path, stem: str) -> tuple[Path, Path]:
    """RSA-1024, self-signed, expired 30 days ago; names 127.0.0.1 (so only the expiry,
    the signer and the key are wrong)."""
    key = rsa.generate_private_key(65537, 1024)  # noqa: S505 - the weakness under test
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old-camera.local")])
    now = datetime.now(UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=400)).not_valid_after(now - timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file = directory / f"{stem}.crt"
    key_file = directory / f"{stem}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(_pem_key(key))
    return cert_file, key_file


def s_server(openssl: str, port: int, cert: Path, key: Path, *extra: str) -> list[str]:
    return [openssl, "s_server", "-accept", f"{HOST}:{port}", "-cert", str(cert),
            "-key", str(key), "-www", "-quiet", "-naccept", "1000000", *extra]


# --------------------------------------------------------------------------- mosquitto


def mosquitto_conf(directory: Path, name: str, port: int, *, anonymous: bool,
                   users: dict[str, str] | None = None, cert: Path | None = None,
                   key: Path | None = None, mosquitto_passwd: str | None = None) -> Path:
    lines = [f"listener {port} {HOST}", f"allow_anonymous {'true' if anonymous else 'false'}",
             "persistence false", "log_dest stdout", "log_type error"]
    if os.geteuid() == 0:
        # Started as root, Mosquitto switches to the 'mosquitto' user, which cannot read
        # files in the test's private temporary directory.
        lines.append("user root")
    if users:
        assert mosquitto_passwd is not None
        pw = directory / f"{name}.passwd"
        pw.touch(mode=0o600)
        for user, password in users.items():
            subprocess.run([mosquitto_passwd, "-b", str(pw), user, password], check=True,
                           capture_output=True)
        lines.append(f"password_file {pw}")
    if cert is not None and key is not None:
        lines += [f"certfile {cert}", f"keyfile {key}", "tls_version tlsv1.2"]
    conf = directory / f"{name}.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


# --------------------------------------------------------------------------- fakes

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _readline(reader: asyncio.StreamReader, limit: int = 256) -> bytes | None:
    """A line without Telnet commands (IAC sequences are skipped)."""
    out = bytearray()
    while len(out) < limit:
        b = await reader.read(1)
        if not b:
            return None
        if b[0] == 255:
            cmd = await reader.read(1)
            if cmd and cmd[0] in (251, 252, 253, 254):
                await reader.read(1)
            continue
        if b == b"\n":
            return bytes(out).rstrip(b"\r\x00")
        out += b
    return bytes(out)


def telnet_handler(user: str, password: str) -> Handler:
    """A BusyBox-like telnetd: IAC negotiation, login, password, a '#' shell prompt."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(bytes([255, 251, 1, 255, 251, 3, 255, 253, 31]))
        for _ in range(3):
            writer.write(b"\r\nCamera login: ")
            await writer.drain()
            got_user = await _readline(reader)
            if got_user is None:
                return
            writer.write(b"Password: ")
            await writer.drain()
            got_pw = await _readline(reader)
            if got_pw is None:
                return
            if got_user == user.encode() and got_pw == password.encode():
                writer.write(b"\r\n\r\nBusyBox v1.19.4 built-in shell (ash)\r\n# ")
                await writer.drain()
                await reader.read(100)
                return
            writer.write(b"\r\nLogin incorrect\r\n")
            await writer.drain()

    return handle


def _http(status: str, headers: dict[str, str], body: bytes) -> bytes:
    head = [f"HTTP/1.1 {status}", "Server: <script>alert(1)</script>",
            f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        return None


def http_basic_handler(user: str | None, password: str | None) -> Handler:
    """Basic authentication on every path; ``user=None`` accepts any credentials."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _read_request(reader)
        if request is None:
            return
        auth = None
        for line in request.split(b"\r\n"):
            if line.lower().startswith(b"authorization: basic "):
                auth = base64.b64decode(line.split(b" ", 2)[2]).decode()
        ok = auth is not None and (user is None or auth == f"{user}:{password}")
        if ok:
            writer.write(_http("200 OK", {"Content-Type": "text/html"}, b"<h1>DVR</h1>"))
        else:
            writer.write(_http("401 Unauthorized",
                               {"WWW-Authenticate": 'Basic realm="DVR"'}, b"denied"))
        await writer.drain()

    return handle


def http_page_handler(login_form: bool) -> Handler:
    """A plain page, or a redirect from / to a login form."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _read_request(reader)
        if request is None:
            return
        parts = request.split(b" ", 2)
        path = parts[1] if len(parts) > 1 else b"/"
        if login_form and path == b"/":
            writer.write(_http("302 Found", {"Location": "/login.html"}, b""))
        elif login_form:
            writer.write(_http("200 OK", {"Content-Type": "text/html"},
                               b'<form method="post"><input name="user">'
                               b'<input type="password" name="pw"></form>'))
        else:
            writer.write(_http("200 OK", {"Content-Type": "text/html"},
                               b"<h1>Sensor dashboard</h1>"))
        await writer.drain()

    return handle


def ftp_handler(user: str, password: str) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 <b>ProFTPD</b> Server (Device FTP) ready\r\n")
        await writer.drain()
        got_user = None
        while True:
            line = await reader.readline()
            if not line:
                return
            cmd, _sp, arg = line.strip().decode("latin-1").partition(" ")
            cmd = cmd.upper()
            if cmd == "USER":
                got_user = arg
                writer.write(b"331 Password required\r\n")
            elif cmd == "PASS":
                ok = got_user == user and arg == password
                writer.write(b"230 Logged in\r\n" if ok else b"530 Login incorrect\r\n")
            elif cmd == "QUIT":
                writer.write(b"221 Bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"500 Unknown command\r\n")
            await writer.drain()

    return handle


async def ssh_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-OpenSSH_8.4p1 Debian-5\r\n")
    await writer.drain()
    await reader.read(256)


async def rtsp_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = await _read_request(reader)
    if request is None:
        return
    if request.startswith(b"OPTIONS"):
        writer.write(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: DESCRIBE, SETUP, PLAY\r\n\r\n")
    else:
        writer.write(b"RTSP/1.0 400 Bad Request\r\nCSeq: 0\r\n\r\n")
    await writer.drain()


async def modbus_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readexactly(7), 5)
    except (asyncio.IncompleteReadError, TimeoutError):
        return
    tid, proto, length, unit = struct.unpack(">HHHB", head)
    if proto != 0 or not 2 <= length <= 254:
        return  # not Modbus: hang up, as real devices do
    pdu = await reader.readexactly(length - 1)
    body = bytes([3, 2, 0x01, 0x2C]) if pdu[0] == 3 else bytes([pdu[0] | 0x80, 1])
    writer.write(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
    await writer.drain()


async def silent_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts and never answers (reads and discards until the client leaves)."""
    while await reader.read(4096):
        pass


async def endless_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Sends a banner that never ends."""
    chunk = b"Welcome to the device console! " * 128
    with contextlib.suppress(ConnectionError, OSError):
        for _ in range(100_000):
            writer.write(chunk)
            await writer.drain()


async def tls_stall_handler(reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
    """Reads a ClientHello, starts a ServerHello record and stalls in the middle of it."""
    data = await reader.read(4096)
    if not data:
        return
    writer.write(bytes([22, 3, 3, 0, 90, 2, 0, 0, 86, 3, 3]) + os.urandom(10))
    await writer.drain()
    while await reader.read(4096):
        pass


class CoapServer(asyncio.DatagramProtocol):
    """Answers GET /.well-known/core with a piggy-backed 2.05 Content."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 4 or data[0] >> 6 != 1:
            return
        tkl = data[0] & 0x0F
        token = data[4:4 + tkl]
        payload = b'</sensors/temp>;rt="temperature";if="sensor",</actuators/valve>'
        reply = (bytes([0x60 | tkl, 0x45]) + data[2:4] + token + bytes([0xC1, 40]) + b"\xff"
                 + payload)  # ACK, 2.05, Content-Format 40 (link-format)
        self.transport.sendto(reply, addr)


class FakeServers:
    """A thread running an asyncio loop that hosts the fake servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.closers: list[Callable[[], None]] = []

    def _run(self, coro: Awaitable[object]) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    def tcp(self, handler: Handler) -> int:
        async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError,
                    IndexError, struct.error):
                pass  # a probe the fake does not understand: hang up, as devices do
            finally:
                writer.close()

        async def start() -> asyncio.Server:
            return await asyncio.start_server(guarded, HOST, 0)

        server = self._run(start())
        assert isinstance(server, asyncio.Server)
        self.closers.append(server.close)
        return int(server.sockets[0].getsockname()[1])

    def coap(self) -> int:
        async def start() -> asyncio.DatagramTransport:
            transport, _ = await self.loop.create_datagram_endpoint(
                CoapServer, local_addr=(HOST, 0))
            return transport

        transport = cast(asyncio.DatagramTransport, self._run(start()))
        self.closers.append(transport.close)
        return int(transport.get_extra_info("sockname")[1])

    def stop(self) -> None:
        async def close_all() -> None:
            for close in self.closers:
                close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._run(close_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
