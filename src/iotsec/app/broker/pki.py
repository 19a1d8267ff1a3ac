"""Certificates and secrets the Mosquitto broker setup needs, issued by iotsec's own CA.

- The broker's TLS server certificate (serverAuth, SANs for the listener's address, the
  loopback names and any ``--dns`` / ``--ip`` given). Mosquitto cannot read an encrypted
  key non-interactively, so its key is a fresh P-256 key in the generation directory,
  readable by the broker's group only; it is reissued 30 days before expiry or when the
  names it must cover change.
- A *probe* client certificate (CN ``_iotsec_probe``, not a valid device id) with which
  iotsec checks after each reload that the broker serves and enforces its ACL.
- A *canary* client certificate (CN ``_iotsec_canary``), revoked at once: it stays in
  every CRL, and a broker that accepts it is running without revocation checking.
- The password of iotsec's control account (``_iotsec_admin``) on the broker's Unix
  socket, and its PBKDF2 hash for ``password_file``.

Every certificate is recorded in the store like any other (kinds ``server``,
``broker-probe``, ``broker-canary``), so it is listed, counted and revocable.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import insert

from iotsec.app.pki.certs import certificate_row, revoke
from iotsec.app.pki.server_tls import server_names
from iotsec.app.runtime import Runtime
from iotsec.broker.acl import PROBE_USER
from iotsec.errors import BrokerConfigError
from iotsec.pki import x509 as enc
from iotsec.pki.crl import RevocationReason
from iotsec.pki.issue import IssuedCertificate, issue_device, issue_server
from iotsec.pki.profiles import CertProfile, check_dns_name
from iotsec.pki.serial import format_serial
from iotsec.store import models as m
from iotsec.store.db import transaction
from iotsec.timeutil import ts

RENEW_BEFORE = timedelta(days=30)
CANARY_USER = "_iotsec_canary"
_CLIENT_PROFILE = CertProfile(name="broker-client", validity_days=397,
                              extended_key_usage=(enc.OID_CLIENT_AUTH,))


@dataclass(frozen=True, slots=True)
class ServerNames:
    dns: tuple[str, ...]
    ips: tuple[str, ...]

    @classmethod
    def parse(cls, bind: str, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()
              ) -> ServerNames:
        base_dns, base_ips = server_names(bind)
        try:
            extra_ips = tuple(str(ipaddress.ip_address(i)) for i in ips)
        except ValueError:
            raise BrokerConfigError("an --ip value is not an IP address") from None
        names = {*base_dns, *(check_dns_name(d) for d in dns)}
        return cls(dns=tuple(sorted(names)), ips=tuple(sorted({*base_ips, *extra_ips})))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _record(rt: Runtime, der: bytes, serial: int, not_before: datetime, not_after: datetime,
            cn: str, kind: str) -> None:
    spki = enc.spki_der(x509.load_der_x509_certificate(der).public_key())
    issued = IssuedCertificate(serial=serial, der=der, not_before=not_before,
                               not_after=not_after, subject_cn=cn,
                               spki_sha256=hashlib.sha256(spki).hexdigest())
    with transaction(rt.engine) as conn:
        conn.execute(insert(m.certificates).values(certificate_row(
            issued, authority_id=rt.issuing_id(), device_id=None, kind=kind,
            profile=kind, now=ts(rt.now()))))


def _current(pem_path: Path, issuer: x509.Certificate, now: datetime) -> x509.Certificate | None:
    """The certificate in ``pem_path`` if it is still good: issued by the current issuing
    CA and not within :data:`RENEW_BEFORE` of its expiry."""
    try:
        cert = x509.load_pem_x509_certificates(pem_path.read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return None
    if cert.issuer != issuer.subject or cert.not_valid_after_utc - now < RENEW_BEFORE:
        return None
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return None
    return cert


def _covers(cert: x509.Certificate, names: ServerNames) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return (set(names.dns) == set(san.get_values_for_type(x509.DNSName))
            and set(names.ips) == {str(i) for i in san.get_values_for_type(x509.IPAddress)})


def server_certificate(rt: Runtime, previous: Path | None, names: ServerNames, bind: str
                       ) -> tuple[bytes, bytes, bool]:
    """``(chain PEM, key PEM, issued)`` for the broker: the previous generation's if it is
    still good and covers ``names``, else a new certificate and key."""
    issuing = rt.authority("issuing")
    now = rt.now()
    if previous is not None:
        cert = _current(previous / "server.pem", issuing.certificate, now)
        if cert is not None and _covers(cert, names):
            return (previous / "server.pem").read_bytes(), (previous / "server.key"
                                                            ).read_bytes(), False
    key = ec.generate_private_key(ec.SECP256R1())
    cn = names.dns[0] if bind in ("0.0.0.0", "::") else bind  # noqa: S104
    issued = issue_server(issuing, spki=enc.spki_der(key.public_key()), common_name=cn,
                          dns_names=names.dns, ips=names.ips, now=now)
    _record(rt, issued.der, issued.serial, issued.not_before, issued.not_after, cn, "server")
    chain = enc.to_pem(issued.der, "CERTIFICATE") + enc.to_pem(issuing.der, "CERTIFICATE")
    return chain, _key_pem(key), True


def _write_secret(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def client_certificate(rt: Runtime, private: Path, name: str, *, revoked: bool) -> bool:
    """Make sure ``private/<name>.pem`` and ``.key`` hold a current certificate for the
    probe (``revoked=False``) or the canary (``revoked=True``); returns True if issued."""
    issuing = rt.authority("issuing")
    pem = private / f"{name}.pem"
    if _current(pem, issuing.certificate, rt.now()) is not None and (
            private / f"{name}.key").exists():
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    cn = PROBE_USER if not revoked else CANARY_USER
    issued = issue_device(issuing, device_id=cn, spki=enc.spki_der(key.public_key()),
                          profile=_CLIENT_PROFILE, now=rt.now())
    kind = "broker-canary" if revoked else "broker-probe"
    _record(rt, issued.der, issued.serial, issued.not_before, issued.not_after, cn, kind)
    if revoked:
        revoke(rt, format_serial(issued.serial), RevocationReason.cessationOfOperation)
    _write_secret(private / f"{name}.key", _key_pem(key))
    _write_secret(pem, enc.to_pem(issued.der, "CERTIFICATE"))
    return True


def admin_password(private: Path) -> str:
    """The control account's password, generated once (256 bits) and kept 0600."""
    path = private / "admin.secret"
    if path.exists():
        text = path.read_text(encoding="ascii", errors="replace")[:200].strip()
        if len(text) >= 32:
            return text
    password = secrets.token_urlsafe(32)
    _write_secret(path, password.encode("ascii") + b"\n")
    return password
