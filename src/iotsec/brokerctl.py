"""Talking to a running Mosquitto: reload, confirm, and end live sessions (I/O adapter).

Mosquitto 2.0.11 behaviour this module is built on (each point is exercised against the
real broker by ``tests/broker``):

- ``SIGHUP`` re-reads ``acl_file``, ``password_file`` and the listener's TLS files
  (certificate, key, CA and CRL). It does **not** re-check live sessions: a device whose
  certificate was just revoked stays connected.
- A reload that cannot read the CRL, or finds the ACL invalid, leaves the broker running
  **without revocation checking or without any ACL** (fail-open). iotsec therefore checks
  every file before it is swapped in, and after each reload proves enforcement with two
  probes: a valid probe certificate must connect and be *refused* a publish (its ACL
  block denies everything, so an ACL that failed to load shows), and a revoked *canary*
  certificate must be refused with the TLS alert ``certificate_revoked`` (so a CRL that
  failed to load shows). On failure the previous generation is restored.
- Ending a live session: the device listener sets ``use_username_as_clientid``, so a
  device's client id is always its certificate CN (its device id). iotsec connects on its
  control socket (a Unix socket in a directory only the broker user can enter, with a
  generated password) using that client id; Mosquitto closes the device's connection
  ("already connected, closing old connection") and iotsec disconnects at once with a
  clean session. The device cannot come back: its certificate is in the CRL the broker
  already reloaded, or (disabled devices) its ACL block denies everything.

The probes speak just enough MQTT 5 over raw sockets (CONNECT, PUBLISH QoS 1, DISCONNECT)
to keep this deterministic and free of client-library threads.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from iotsec.errors import BrokerProcessError, BrokerValidationError
from iotsec.scan.probes import mqtt_connect, mqtt_string, remaining_length

__all__ = [
    "DISCONNECT", "MAX_PACKET", "MAX_PID_FILE", "RC_NOT_AUTHORIZED", "BrokerProcess",
    "ProbeResult", "TlsIdentity", "canary_refused", "connect_packet", "dry_run", "kick",
    "log_size", "probe", "publish_packet", "read_packet", "reload_errors", "wait_for_reload"
]

MAX_PACKET = 64 * 1024
MAX_PID_FILE = 64
RC_NOT_AUTHORIZED = 0x87


# --- a minimal MQTT 5 codec (the scanner's probes encode its CONNECT, strings and lengths) ---


def connect_packet(client_id: str = "", *, username: str | None = None,
                   password: str | None = None, keepalive: int = 10) -> bytes:
    """The MQTT 5 CONNECT of the probes and the session kicks: a clean start, and no
    session expiry, so the session ends with us."""
    return mqtt_connect(client_id, username=username, password=password, keepalive=keepalive,
                        version=5)


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    body = mqtt_string(topic) + struct.pack("!H", packet_id) + b"\x00" + payload
    return b"\x32" + remaining_length(len(body)) + body


DISCONNECT = b"\xe0\x00"


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return bytes(data)


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    """One MQTT packet: (first byte, body). Refuses bodies over :data:`MAX_PACKET`."""
    first = _recv_exact(sock, 1)[0]
    length, shift = 0, 0
    for _ in range(4):
        byte = _recv_exact(sock, 1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    if length > MAX_PACKET:
        raise ConnectionError("oversized MQTT packet from the broker")
    return first, _recv_exact(sock, length)


# --- the broker process -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerProcess:
    """A running Mosquitto process, checked to be one before it is ever signalled."""

    pid: int

    @classmethod
    def find(cls, *, pid: int | None = None, pidfile: Path | None = None) -> BrokerProcess:
        if pid is None:
            if pidfile is None:
                raise BrokerProcessError("no broker process given")
            try:
                with pidfile.open("rb") as fh:
                    text = fh.read(MAX_PID_FILE + 1)
            except OSError as exc:
                raise BrokerProcessError(f"cannot read the pid file {pidfile}: "
                                         f"{exc.strerror}") from None
            if len(text) > MAX_PID_FILE or not text.strip().isdigit():
                raise BrokerProcessError(f"{pidfile} does not hold a process id")
            pid = int(text.strip())
        if pid <= 1:
            raise BrokerProcessError(f"{pid} is not a broker process id")
        process = cls(pid)
        process.check()
        return process

    def check(self) -> None:
        """Raise unless the process is alive and (where /proc exists) is ``mosquitto``."""
        comm = Path(f"/proc/{self.pid}/comm")
        if Path("/proc/self").exists():
            try:
                name = comm.read_text(errors="replace").strip()
            except OSError:
                raise BrokerProcessError(f"process {self.pid} is not running") from None
            if name != "mosquitto":
                raise BrokerProcessError(f"process {self.pid} is {name[:32]!r}, not mosquitto",
                                         hint="check --pid / --pidfile (a stale pid file?)")
        else:
            try:
                os.kill(self.pid, 0)
            except OSError:
                raise BrokerProcessError(f"process {self.pid} is not running") from None

    def reload(self) -> None:
        self.check()
        try:
            os.kill(self.pid, signal.SIGHUP)
        except PermissionError:
            raise BrokerProcessError(f"not allowed to signal process {self.pid}") from None
        except ProcessLookupError:
            raise BrokerProcessError(f"process {self.pid} is not running") from None


def log_size(log_file: Path) -> int:
    try:
        return log_file.stat().st_size
    except OSError:
        return 0


def wait_for_reload(log_file: Path, offset: int, *, timeout: float = 15.0) -> list[str]:
    """Wait for ``Reloading config.`` after ``offset`` in the broker log; return the lines
    logged from there on (errors of the reload among them). Mosquitto logs it within one
    turn of its loop; the generous bound is for a machine under heavy load."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with log_file.open("rb") as fh:
                fh.seek(offset)
                tail = fh.read(4 * 1024 * 1024).decode("utf-8", "replace")
        except OSError:
            tail = ""
        lines = tail.splitlines()
        for i, line in enumerate(lines):
            if line.endswith("Reloading config."):
                return lines[i:]
        if time.monotonic() > deadline:
            raise TimeoutError("the broker did not log a reload")
        time.sleep(0.02)


def reload_errors(lines: Iterable[str]) -> list[str]:
    """The error lines a reload logged: Mosquitto reloads within one turn of its loop, so
    they are the run of ``Error``/``OpenSSL Error`` lines right after ``Reloading
    config.`` (a later handshake failure of some client is not the reload's)."""
    out = []
    for line in list(lines)[1:]:
        text = line.split(": ", 1)[-1]
        if text.startswith("Error") or text.startswith("OpenSSL Error"):
            out.append(text)
        elif not text.startswith("Warning"):
            break
    return out


# --- dry run ----------------------------------------------------------------------------


def dry_run(mosquitto: str, conf_text: str, workdir: Path, *, timeout: float = 15.0) -> None:
    """Start ``mosquitto`` on ``conf_text`` (which listens on a Unix socket under
    ``workdir``), wait until it reports running, and stop it. Raises
    :class:`BrokerValidationError` with Mosquitto's own error lines if it does not start."""
    fd, name = tempfile.mkstemp(prefix="check-", suffix=".conf", dir=workdir)
    conf = Path(name)
    with os.fdopen(fd, "w") as fh:
        fh.write(conf_text)
    os.chmod(conf, 0o640)
    _same_group(conf, workdir)
    proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        fd = proc.stderr.fileno()
        buffer = b""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                line = raw.decode("utf-8", "replace").rstrip()
                lines.append(line)
                if line.endswith(" running"):
                    return
            if len(buffer) > 65536:
                buffer = b""
        errors = [ln.split(": ", 1)[-1] for ln in lines if "rror" in ln] or lines[-3:]
        text = " | ".join(errors)[:600]
        hint = "nothing was changed on the broker; the message is Mosquitto's own"
        if "Unable to open" in text or "No such file" in text or "ermission" in text:
            hint += ("; the broker's account must be able to enter every directory above "
                     "the broker directory and read the files in it")
        raise BrokerValidationError(
            "mosquitto refused the new configuration: " + (text or "it did not start in time"),
            hint=hint)
    finally:
        if proc.poll() is None:
            # Nothing to save (no persistence, no clients): stop it at once. Mosquitto
            # handles SIGTERM only at the next turn of its loop, which can take seconds.
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        conf.unlink(missing_ok=True)


def _same_group(path: Path, like: Path) -> None:
    with contextlib.suppress(OSError):
        st = like.stat()
        if os.geteuid() == 0:
            os.chown(path, -1, st.st_gid)


# --- probes and kicks -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsIdentity:
    cert: Path
    key: Path
    ca: Path


def _tls_socket(host: str, port: int, who: TlsIdentity, server_name: str,
                timeout: float) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(who.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(who.cert), str(who.key))
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_name)
    except BaseException:
        raw.close()
        raise


@dataclass(frozen=True, slots=True)
class ProbeResult:
    connected: bool
    publish_reason: int | None
    error: str | None = None

    @property
    def enforcing(self) -> bool:
        return self.connected and self.publish_reason == RC_NOT_AUTHORIZED


def probe(host: str, port: int, who: TlsIdentity, *, server_name: str,
          timeout: float = 3.0) -> ProbeResult:
    """Connect with the probe certificate and publish once (QoS 1). The probe's ACL block
    denies everything, so an enforcing broker answers PUBACK 0x87 (not authorised)."""
    try:
        with _tls_socket(host, port, who, server_name, timeout) as s:
            s.sendall(connect_packet())
            kind, body = read_packet(s)
            if kind >> 4 != 2 or len(body) < 2 or body[1] != 0:
                return ProbeResult(False, None, f"CONNACK {body[1:2].hex() or kind}")
            packet_id = secrets.randbelow(65534) + 1
            s.sendall(publish_packet("iotsec/probe", b"probe", packet_id))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                kind, body = read_packet(s)
                if kind >> 4 == 4 and body[:2] == struct.pack("!H", packet_id):
                    reason = body[2] if len(body) > 2 else 0
                    with contextlib.suppress(OSError):
                        s.sendall(DISCONNECT)
                    return ProbeResult(True, reason)
            return ProbeResult(True, None, "no PUBACK")
    except (OSError, ssl.SSLError, ConnectionError) as exc:
        return ProbeResult(False, None, f"{type(exc).__name__}: {exc}"[:200])


def canary_refused(host: str, port: int, who: TlsIdentity, *, server_name: str,
                   timeout: float = 3.0) -> str:
    """Connect with the revoked canary certificate. Returns ``"revoked"`` when the broker
    refuses it with the TLS alert certificate_revoked (revocation checking is on),
    ``"accepted"`` when it answers CONNACK (it is not), or the other error seen.

    With TLS 1.3 the server checks the client certificate after the client's handshake
    has finished, so the client waits for the alert before it sends anything: data the
    server never reads would make it reset the connection and lose the alert."""
    try:
        with _tls_socket(host, port, who, server_name, timeout) as s:
            s.settimeout(min(timeout, 1.0))
            try:
                data = s.recv(1)
            except TimeoutError:
                data = b""
            else:
                if not data:
                    return "closed without an alert"
            s.settimeout(timeout)
            s.sendall(connect_packet())
            kind, _ = read_packet(s)
            return "accepted" if kind >> 4 == 2 else f"packet {kind}"
    except ssl.SSLError as exc:
        return "revoked" if exc.reason == "SSLV3_ALERT_CERTIFICATE_REVOKED" else str(exc)[:200]
    except (OSError, ConnectionError) as exc:
        return f"{type(exc).__name__}: {exc}"[:200]


def kick(socket_path: Path, username: str, password: str, client_ids: Sequence[str], *,
         timeout: float = 3.0) -> list[str]:
    """End the live sessions of ``client_ids`` by taking each id over on the control
    socket and disconnecting at once. Returns the ids whose takeover the broker accepted
    (whether or not the device was connected)."""
    done = []
    for client_id in client_ids:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(socket_path))
            s.sendall(connect_packet(client_id, username=username, password=password))
            kind, body = read_packet(s)
            if kind >> 4 == 2 and len(body) >= 2 and body[1] == 0:
                done.append(client_id)
                with contextlib.suppress(OSError):
                    s.sendall(DISCONNECT)
    return done
