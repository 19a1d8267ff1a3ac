"""Certificates and secrets the Mosquitto broker setup needs, issued by iotsec's own CA.

- The broker's TLS server certificate (serverAuth, SANs for the listener's address, the
  loopback names and any ``--dns`` / ``--ip`` given). Mosquitto cannot read an encrypted
  key non-interactively, so its key is a fresh P-256 key in the generation directory,
  readable by the broker's group only; it is reissued 30 days before expiry, when the
  names it must cover change, or when the store no longer lists it as valid (revoked).
- A *probe* client certificate (CN ``_iotsec_probe``, not a valid device id) with which
  iotsec checks after each reload that the broker serves and enforces its ACL. It is
  reissued before every sync that would find it revoked or expired: a revoked probe would
  fail the check of every sync, which would roll back and never push a new CRL.
- A *canary* client certificate (CN ``_iotsec_canary``), revoked at once: it stays in
  every CRL, and a broker that accepts it is running without revocation checking. It is
  reissued when it expires or when the store does not know it as revoked.
- The password of iotsec's control account (``_iotsec_admin``) on the broker's Unix
  socket, and its PBKDF2 hash for ``password_file``.

Every certificate is recorded in the store like any other (kinds ``server``,
``broker-probe``, ``broker-canary``), so it is listed and counted; they are revoked only
with their replacement (see :mod:`iotsec.app.broker.infrastructure`).
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iotsec.app.pki.authorities import chain_certificates, pem_of
from iotsec.app.pki.infrastructure import (
    InfrastructureKind,
    record_infrastructure,
    stored_status,
)
from iotsec.app.pki.issuance import revocation_urls
from iotsec.app.pki.server_tls import server_names
from iotsec.app.runtime import Runtime
from iotsec.broker.acl import PROBE_USER
from iotsec.errors import BrokerConfigError
from iotsec.filesystem import write_private_file
from iotsec.pki import x509 as enc
from iotsec.pki.crl import RevocationReason
from iotsec.pki.issue import issue_device, issue_server
from iotsec.pki.profiles import CertProfile, check_dns_name

__all__ = [
    "CANARY_USER", "RENEW_BEFORE", "ServerNames", "admin_password", "client_certificate",
    "server_certificate"
]

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


def _current(rt: Runtime, pem_path: Path, *, expected: str = "valid"
             ) -> x509.Certificate | None:
    """The certificate in ``pem_path`` if it is still good: issued by the current issuing
    CA, not within :data:`RENEW_BEFORE` of its expiry, and in the store with the status
    ``expected`` (``valid``; ``revoked`` for the canary)."""
    issuer = rt.authority("issuing").certificate
    try:
        cert = x509.load_pem_x509_certificates(pem_path.read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return None
    if cert.issuer != issuer.subject or cert.not_valid_after_utc - rt.now() < RENEW_BEFORE:
        return None
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return None
    if stored_status(rt, cert) != expected:
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
        cert = _current(rt, previous / "server.pem")
        if cert is not None and _covers(cert, names):
            return (previous / "server.pem").read_bytes(), (previous / "server.key"
                                                            ).read_bytes(), False
    key = ec.generate_private_key(ec.SECP256R1())
    cn = names.dns[0] if bind in ("0.0.0.0", "::") else bind  # noqa: S104
    issued = issue_server(issuing, spki=enc.spki_der(key.public_key()), common_name=cn,
                          dns_names=names.dns, ips=names.ips, now=now,
                          **revocation_urls(rt.settings, rt.issuing_id()))
    record_infrastructure(rt, issued, "server")
    # The issuing CA and, during a root rollover, the cross certificate: a device that
    # trusts only the old root still verifies the broker.
    intermediates = chain_certificates(rt, cross=True)[:-1]
    chain = enc.to_pem(issued.der, "CERTIFICATE") + pem_of(intermediates).encode("ascii")
    return chain, _key_pem(key), True


def _write_secret(path: Path, data: bytes) -> None:
    write_private_file(path, data, overwrite=True)


def client_certificate(rt: Runtime, private: Path, name: str, *, revoked: bool) -> bool:
    """Make sure ``private/<name>.pem`` and ``.key`` hold a current certificate for the
    probe (``revoked=False``: valid in the store) or the canary (``revoked=True``: revoked
    in the store); returns True if issued. A probe or canary that is expired, near its
    expiry, unknown to the store or (the probe) revoked is replaced."""
    issuing = rt.authority("issuing")
    pem = private / f"{name}.pem"
    expected = "revoked" if revoked else "valid"
    if _current(rt, pem, expected=expected) is not None and (
            private / f"{name}.key").exists():
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    cn = PROBE_USER if not revoked else CANARY_USER
    issued = issue_device(issuing, device_id=cn, spki=enc.spki_der(key.public_key()),
                          profile=_CLIENT_PROFILE, now=rt.now())
    kind: InfrastructureKind = "broker-canary" if revoked else "broker-probe"
    record_infrastructure(rt, issued, kind, revoked=RevocationReason.cessationOfOperation
                          if revoked else None)
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
