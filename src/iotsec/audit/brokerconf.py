"""Reading a Mosquitto 2.0 configuration and its CRL file for the audit (pure: text and
bytes in, facts out).

Only what the audit judges is read: listeners (port, bind address or Unix socket, TLS,
``require_certificate``, ``crlfile``), anonymous access, logging. Mosquitto's own rules are
followed: settings such as ``certfile`` or ``crlfile`` belong to the most recent
``listener`` (before any, to the default listener of ``port``); ``allow_anonymous`` is
global unless ``per_listener_settings true``; with no listener at all, Mosquitto 2.0 listens
on the loopback interface, port 1883, without TLS. Directives the audit does not need are
skipped, as are ``include_dir`` files (reported in :attr:`BrokerConfig.includes`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cryptography import x509

from iotsec.audit.snapshot import BrokerListener, CrlFacts
from iotsec.errors.audit import AuditBrokerDirError

__all__ = ["MAX_CONF_BYTES", "MAX_CRL_BYTES", "BrokerConfig", "parse_conf", "parse_crls"]

MAX_CONF_BYTES = 1024 * 1024
MAX_CRL_BYTES = 64 * 1024 * 1024
MAX_CRLS = 64
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----\r?\n(.*?)-----END X509 CRL-----", re.S)


@dataclass
class _Listener:
    port: int
    bind: str | None
    socket: str | None
    line: int
    certfile: str | None = None
    psk: bool = False
    require_certificate: bool = False
    crlfile: str | None = None
    allow_anonymous: bool | None = None

    def facts(self) -> BrokerListener:
        return BrokerListener(port=self.port, bind=self.bind, socket=self.socket,
                              tls=self.certfile is not None or self.psk,
                              require_certificate=self.require_certificate,
                              crlfile=self.crlfile, line=self.line)


@dataclass(frozen=True)
class BrokerConfig:
    listeners: tuple[BrokerListener, ...]
    allow_anonymous: bool
    #: Ports of listeners that allow anonymous clients (with per_listener_settings true).
    per_listener_anonymous: tuple[int, ...]
    log_files: tuple[str, ...]
    connection_messages: bool
    includes: tuple[str, ...] = field(default=())


def _bool(value: str) -> bool | None:
    return {"true": True, "false": False}.get(value.strip().lower())


def parse_conf(text: str) -> BrokerConfig:
    """The facts of a ``mosquitto.conf``. Raises :class:`AuditBrokerDirError` when the text
    is larger than :data:`MAX_CONF_BYTES`."""
    if len(text) > MAX_CONF_BYTES:
        raise AuditBrokerDirError(f"mosquitto.conf is larger than {MAX_CONF_BYTES} bytes",
                                  hint="check that the broker directory is the right one")
    default = _Listener(port=1883, bind=None, socket=None, line=0)
    default_used = False
    listeners: list[_Listener] = []
    current = default
    per_listener = False
    anonymous: bool | None = None
    log_files: list[str] = []
    connection_messages = True
    includes: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        rest = rest.strip()
        args = rest.split()
        if keyword == "listener" and args:
            try:
                port = int(args[0])
            except ValueError:
                continue
            target = args[1] if len(args) > 1 else None
            socket = target if port == 0 and target is not None else None
            current = _Listener(port=port, bind=None if socket else target, socket=socket,
                                line=number)
            listeners.append(current)
        elif keyword == "port" and args and args[0].isdigit():
            default.port, default.line, default_used = int(args[0]), number, True
        elif keyword == "bind_address" and args:
            default.bind, default_used = args[0], True
        elif keyword == "certfile" and rest:
            current.certfile = rest
        elif keyword == "psk_hint" and rest:
            current.psk = True
        elif keyword == "crlfile" and rest:
            current.crlfile = rest
        elif keyword == "require_certificate":
            current.require_certificate = _bool(rest) is True
        elif keyword == "per_listener_settings":
            per_listener = _bool(rest) is True
        elif keyword == "allow_anonymous":
            value = _bool(rest)
            if per_listener and current is not default:
                current.allow_anonymous = value
            else:
                anonymous = value
                default.allow_anonymous = value
        elif keyword == "log_dest" and args:
            if args[0] == "file" and len(args) > 1:
                log_files.append(rest.partition(" ")[2].strip())
        elif keyword == "connection_messages":
            connection_messages = _bool(rest) is not False
        elif keyword == "include_dir" and rest:
            includes.append(rest)
    if default_used or not listeners:
        if not default_used:
            default.bind = "127.0.0.1"  # Mosquitto 2.0 with no listener: loopback only
        listeners.insert(0, default)
    # Mosquitto 2.0 defaults allow_anonymous to false.
    open_ports = tuple(x.port for x in listeners
                       if per_listener and x.allow_anonymous is True and x is not default)
    return BrokerConfig(
        listeners=tuple(x.facts() for x in listeners), allow_anonymous=anonymous is True,
        per_listener_anonymous=open_ports, log_files=tuple(log_files),
        connection_messages=connection_messages, includes=tuple(includes))


def _broker_scope(crl: x509.CertificateRevocationList) -> bool:
    """An issuingDistributionPoint with onlyContainsUserCerts and nothing else: the scope
    of the broker's own CRL (iotsec.pki.crl.CrlScope.broker_only)."""
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return (idp.only_contains_user_certs and idp.full_name is None
            and idp.relative_name is None and idp.only_some_reasons is None)


def parse_crls(data: bytes) -> tuple[CrlFacts, ...]:
    """Every CRL of a PEM file (the broker's ``crlfile`` holds one per CA), or of one DER
    CRL. Raises :class:`AuditBrokerDirError` when it is too large or holds no readable CRL."""
    if len(data) > MAX_CRL_BYTES:
        raise AuditBrokerDirError(f"the CRL file is larger than {MAX_CRL_BYTES} bytes")
    blocks = _PEM_CRL.findall(data)
    if len(blocks) > MAX_CRLS:
        raise AuditBrokerDirError(f"the CRL file holds more than {MAX_CRLS} CRLs")
    crls: list[x509.CertificateRevocationList] = []
    try:
        if blocks:
            for block in blocks:
                pem = b"-----BEGIN X509 CRL-----\n" + block + b"-----END X509 CRL-----\n"
                crls.append(x509.load_pem_x509_crl(pem))
        elif data[:1] == b"\x30":
            crls.append(x509.load_der_x509_crl(data))
    except ValueError:
        raise AuditBrokerDirError("the CRL file holds a CRL that cannot be read") from None
    if not crls:
        raise AuditBrokerDirError("the CRL file holds no CRL")
    out = []
    for crl in crls:
        try:
            number: int | None = crl.extensions.get_extension_for_class(
                x509.CRLNumber).value.crl_number
        except (x509.ExtensionNotFound, ValueError):
            number = None
        next_update = crl.next_update_utc
        out.append(CrlFacts(issuer=crl.issuer.rfc4514_string(), number=number,
                            this_update=int(crl.last_update_utc.timestamp()),
                            next_update=int(next_update.timestamp()) if next_update else None,
                            broker_scope=_broker_scope(crl)))
    return tuple(out)
