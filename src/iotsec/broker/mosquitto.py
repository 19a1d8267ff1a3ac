"""Mosquitto 2.0 configuration, password lines and ACL checks (pure: text in, text out).

The rendered ``mosquitto.conf`` has:

- one mutual-TLS listener for devices: TLS 1.2 or newer with AEAD ECDHE suites,
  ``require_certificate true``, ``use_identity_as_username true`` (the username is the
  certificate's CN, which iotsec sets to the device id) and ``use_username_as_clientid
  true`` (a device cannot choose another device's client id, so it cannot take over or
  kick another device's session);
- a Unix-socket listener in ``DIR/run`` (a directory only the broker user can enter)
  where iotsec logs in with a generated password to end live sessions (see
  :mod:`iotsec.brokerctl`);
- with ``--plain-localhost`` only, a plaintext listener bound to 127.0.0.1;
- ``allow_anonymous false`` everywhere, the ACL and CRL from the current generation,
  and a log that :mod:`iotsec.broker.logs` parses.

Every file the broker reads is reached through ``DIR/current``, a symbolic link to one
generation directory, so a sync swaps all of them with one atomic ``rename``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from iotsec.errors import BrokerConfigError, BrokerCrlError, BrokerValidationError

__all__ = [
    "LOG_TIMESTAMP_FORMAT", "MAX_ACL_BYTES", "MAX_SOCKET_PATH", "PBKDF2_ITERATIONS",
    "TLS12_CIPHERS", "CrlInfo", "Layout", "ListenerSettings", "acl_lines", "check_acl",
    "check_crl", "password_line", "render_conf"
]

#: The TLS 1.2 suites offered (the server key is ECDSA P-256); TLS 1.3 uses its defaults.
TLS12_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                 "ECDHE-ECDSA-CHACHA20-POLY1305")
#: Mosquitto's own timestamp format would be Unix seconds; ISO 8601 with the offset is
#: unambiguous for people and for :mod:`iotsec.broker.logs`.
LOG_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
#: ``sun_path`` holds 108 bytes on Linux; keep room for the terminating NUL.
MAX_SOCKET_PATH = 100
MAX_ACL_BYTES = 512 * 1024 * 1024
PBKDF2_ITERATIONS = 101  # what mosquitto_passwd writes for PBKDF2-SHA512 ($7$)
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/@+=,-]+$")
_ACCESS = ("read", "write", "readwrite", "deny")


@dataclass(frozen=True, slots=True)
class Layout:
    """Where everything lives under the broker directory ``DIR``."""

    root: Path

    @classmethod
    def parse(cls, directory: Path) -> Layout:
        root = directory.expanduser().absolute()
        text = str(root)
        if not _SAFE_PATH.fullmatch(text) or "/../" in text + "/" or len(text) > 200:
            raise BrokerConfigError(
                f"the broker directory {text[:80]!r} cannot be used in mosquitto.conf",
                hint="use an absolute path of letters, digits and . _ - / (no spaces), "
                "at most 200 characters")
        layout = cls(root)
        if len(str(layout.run / "check-00000000.sock").encode()) > MAX_SOCKET_PATH:
            raise BrokerConfigError(
                f"the broker directory {text[:80]!r} is too long for a Unix socket path",
                hint=f"choose a directory whose path has at most "
                f"{MAX_SOCKET_PATH - len('/run/check-00000000.sock')} characters")
        return layout

    @property
    def conf(self) -> Path:
        return self.root / "mosquitto.conf"

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def run(self) -> Path:
        """Written by the broker: its socket, log, pid file and persistence."""
        return self.root / "run"

    @property
    def private(self) -> Path:
        """iotsec's own secrets and state; the broker never reads them."""
        return self.root / "private"

    @property
    def admin_socket(self) -> Path:
        return self.run / "admin.sock"

    @property
    def log_file(self) -> Path:
        return self.run / "mosquitto.log"

    @property
    def pid_file(self) -> Path:
        return self.run / "mosquitto.pid"

    def generation(self, number: int) -> Path:
        return self.root / f"gen-{number:06d}"


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    """The device listener and its options, validated."""

    port: int = 8883
    bind: str = "127.0.0.1"
    plain_localhost_port: int | None = None
    debug_log: bool = True
    persistence: bool = True
    max_packet_size: int = 1024 * 1024

    @classmethod
    def parse(cls, *, port: int = 8883, bind: str = "127.0.0.1",
              plain_localhost_port: int | None = None, debug_log: bool = True,
              persistence: bool = True) -> ListenerSettings:
        for p in (port, plain_localhost_port):
            if p is not None and not 1 <= p <= 65535:
                raise BrokerConfigError(f"port {p} is out of range", hint="give 1 to 65535")
        if plain_localhost_port is not None and plain_localhost_port == port:
            raise BrokerConfigError("the plaintext and TLS listeners need different ports")
        try:
            address = ipaddress.ip_address(bind)
        except ValueError:
            raise BrokerConfigError(f"--bind {bind[:60]!r} is not an IP address",
                                    hint="bind to an address such as 127.0.0.1, 0.0.0.0 or "
                                    "::; name the host with --dns for the certificate"
                                    ) from None
        return cls(port=port, bind=str(address), plain_localhost_port=plain_localhost_port,
                   debug_log=debug_log, persistence=persistence)


def password_line(username: str, password: str, salt: bytes,
                  iterations: int = PBKDF2_ITERATIONS) -> str:
    """A ``password_file`` line in Mosquitto 2.0's PBKDF2-SHA512 format (``$7$``)."""
    if ":" in username or not username.isprintable() or not 8 <= len(salt) <= 64:
        raise BrokerConfigError("invalid broker account")
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return (f"{username}:$7${iterations}${base64.b64encode(salt).decode('ascii')}$"
            f"{base64.b64encode(digest).decode('ascii')}\n")


def render_conf(layout: Layout, listener: ListenerSettings, *, files: Path | None = None,
                check_socket: Path | None = None, user: str | None = None) -> str:
    """``mosquitto.conf`` for the broker in ``layout``.

    ``files`` is the directory the broker reads (default ``DIR/current``). With
    ``check_socket``, the configuration is the dry run used to validate a candidate
    generation: the device listener's TLS settings on a Unix socket, logging to stderr,
    nothing persisted. ``user`` is the account a broker started as root switches to.
    """
    if user is not None and (not user.isprintable() or " " in user or not user):
        raise BrokerConfigError(f"invalid broker user {user[:40]!r}")
    files = files or layout.current
    lines = [
        "# Written by iotsec ('iotsec broker mosquitto render'); do not edit.",
        "# The files below are replaced by 'iotsec broker mosquitto sync'.",
        *([f"user {user}"] if user else []),
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {files / 'acl'}",
        f"password_file {files / 'passwd'}",
        f"max_packet_size {listener.max_packet_size}",
        "connection_messages true",
        "log_timestamp true",
        f"log_timestamp_format {LOG_TIMESTAMP_FORMAT}",
    ]
    log_types = ["error", "warning", "notice", "information", "subscribe", "unsubscribe"]
    if listener.debug_log and check_socket is None:
        # Denied PUBLISH lines are logged at debug level only.
        log_types.append("debug")
    lines += [f"log_type {t}" for t in log_types]
    if check_socket is not None:
        lines += ["log_dest stderr", "persistence false"]
    else:
        lines += [f"log_dest file {layout.log_file}", f"pid_file {layout.pid_file}"]
        if listener.persistence:
            lines += ["persistence true", f"persistence_location {layout.run}/"]
        else:
            lines.append("persistence false")
    if check_socket is not None:
        lines.append(f"listener 0 {check_socket}")
    else:
        lines.append(f"listener {listener.port} {listener.bind}")
    lines += [
        "protocol mqtt",
        f"cafile {files / 'ca.pem'}",
        f"certfile {files / 'server.pem'}",
        f"keyfile {files / 'server.key'}",
        f"crlfile {files / 'crl.pem'}",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "tls_version tlsv1.2",
        f"ciphers {TLS12_CIPHERS}",
    ]
    if check_socket is None:
        lines += ["", "# iotsec's control socket (session kicks); password-protected, and",
                  "# only the broker user can enter its directory.",
                  f"listener 0 {layout.admin_socket}", "protocol mqtt"]
        if listener.plain_localhost_port is not None:
            lines += ["", "# Plaintext, loopback only (asked for with --plain-localhost).",
                      f"listener {listener.plain_localhost_port} 127.0.0.1", "protocol mqtt"]
    return "\n".join(lines) + "\n"


def _topic_ok(topic: str) -> bool:
    if not topic or topic.startswith(" ") or "\x00" in topic:
        return False
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return all(" " <= c != "\x7f" for c in topic)


def acl_lines(text: str) -> Iterator[tuple[int, str, str | None, str]]:
    """Read an ACL the way Mosquitto 2.0's loader does, stricter: yields
    ``(line number, keyword, access, value)`` and raises on anything Mosquitto would
    refuse or read differently than written (over-long lines, unknown keywords, invalid
    topics, a ``topic`` line before the first ``user`` line, which would apply to
    anonymous clients)."""
    if len(text) > MAX_ACL_BYTES:
        raise BrokerValidationError(f"the ACL is larger than {MAX_ACL_BYTES} bytes")
    seen_user = False
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw or raw.startswith("#"):
            continue

        def bad(why: str, number: int = number, raw: str = raw) -> BrokerValidationError:
            return BrokerValidationError(f"ACL line {number} ({raw[:60]!r}) {why}")

        if len(raw.encode("utf-8")) > 1000:
            raise bad("is longer than Mosquitto reads in one piece")
        if "\r" in raw or not all(" " <= c != "\x7f" for c in raw):
            raise bad("contains a control character")
        keyword, _, rest = raw.partition(" ")
        if keyword == "user":
            if not rest or rest != rest.strip() or " " in rest:
                raise bad("does not name one user")
            seen_user = True
            yield number, keyword, None, rest
            continue
        if keyword not in ("topic", "pattern"):
            raise bad("is not a user, topic or pattern line")
        access, _, topic = rest.partition(" ")
        if access not in _ACCESS:
            raise bad("has no access type (read, write, readwrite or deny)")
        if not _topic_ok(topic):
            raise bad("does not hold a valid topic filter")
        if keyword == "topic" and not seen_user:
            raise bad("would apply to anonymous clients")
        if keyword == "pattern" and any("%" in level and level not in ("%u",)
                                        for level in topic.split("/")):
            raise bad("uses '%' other than a whole-level %u")
        yield number, keyword, access, topic


def check_acl(text: str, *, required_users: tuple[str, ...] = ()) -> int:
    """Validate a rendered ACL; returns its number of user blocks."""
    users: set[str] = set()
    denied_all: set[str] = set()
    current: str | None = None
    for _, keyword, access, value in acl_lines(text):
        if keyword == "user":
            if value in users:
                raise BrokerValidationError(f"the ACL has two blocks for user {value!r}")
            users.add(value)
            current = value
        elif keyword == "topic" and access == "deny" and value == "#" and current:
            denied_all.add(current)
    missing = [u for u in required_users if u not in denied_all]
    if missing:
        raise BrokerValidationError(f"the ACL does not deny everything to {missing[0]!r}")
    return len(users)


@dataclass(frozen=True, slots=True)
class CrlInfo:
    number: int
    this_update: datetime
    next_update: datetime


def check_crl(der: bytes, issuer: x509.Certificate, *, now: datetime,
              min_remaining: timedelta, previous_number: int | None = None) -> CrlInfo:
    """Verify a CRL before the broker gets it: it parses, names and is signed by
    ``issuer``, is not older than the one the broker has (``previous_number``), is not
    dated in the future, and stays valid for at least ``min_remaining``. Mosquitto itself
    would run without revocation checking on a CRL it cannot load, and lock every device
    out with one past its nextUpdate."""
    try:
        crl = x509.load_der_x509_crl(der)
    except ValueError:
        raise BrokerCrlError("the CRL is not a readable DER CRL") from None
    if crl.issuer != issuer.subject:
        raise BrokerCrlError(f"the CRL is issued by {crl.issuer.rfc4514_string()[:80]!r}, "
                             f"not by the CA {issuer.subject.rfc4514_string()[:80]!r}")
    if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise BrokerCrlError("the CRL's signature does not verify with the CA's key")
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        raise BrokerCrlError("the CRL has no CRL number") from None
    if previous_number is not None and number < previous_number:
        raise BrokerCrlError(f"the CRL (number {number}) is older than the one the broker "
                             f"has (number {previous_number}); refusing to roll back")
    this_update = crl.last_update_utc
    next_update = crl.next_update_utc
    if this_update > now + timedelta(minutes=5):
        raise BrokerCrlError("the CRL's thisUpdate lies in the future",
                             hint="check the clock of this machine")
    if next_update is None or next_update - now < min_remaining:
        raise BrokerCrlError("the CRL's nextUpdate is too close or past: "
                             f"{next_update.isoformat() if next_update else 'absent'}")
    return CrlInfo(number=number, this_update=this_update, next_update=next_update)
