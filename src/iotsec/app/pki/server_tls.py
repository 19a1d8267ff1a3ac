"""TLS for ``iotsec serve``: a server certificate from iotsec's own issuing CA.

The certificate is reissued when it nears expiry or when the host names it must cover
change. Its key lives in key custody (encrypted PKCS#8); the TLS stack is given the
passphrase, never a clear-text key file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from sqlalchemy import insert

from iotsec.app.pki.certs import certificate_row
from iotsec.app.runtime import Runtime
from iotsec.custody.file_keys import FileKeyStore
from iotsec.custody.home import read_passphrase
from iotsec.errors import ConfigError, InvalidInputError
from iotsec.filesystem import atomic_write
from iotsec.pki import x509 as enc
from iotsec.pki.issue import issue_server
from iotsec.pki.keys import KeyType
from iotsec.pki.profiles import check_dns_name
from iotsec.store import models as m
from iotsec.store.db import transaction
from iotsec.timeutil import ts

RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class ServerTls:
    chain_file: Path
    key_file: Path
    key_password: str


def server_names(host: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """DNS names and IP addresses the server certificate covers for ``host``."""
    dns = {"localhost"}
    ips = {"127.0.0.1", "::1"}
    try:
        ip = ipaddress.ip_address(host)
        if not ip.is_unspecified:
            ips.add(str(ip))
    except ValueError:
        dns.add(check_dns_name(host))
    hostname = socket.gethostname()
    # An odd local host name (underscores, a bare label with dots) is simply left out.
    with contextlib.suppress(InvalidInputError):
        dns.add(check_dns_name(hostname))
    return tuple(sorted(dns)), tuple(sorted(ips))


def _covers(cert: x509.Certificate, dns: tuple[str, ...], ips: tuple[str, ...]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_dns = set(san.get_values_for_type(x509.DNSName))
    have_ips = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    return set(dns) <= have_dns and set(ips) <= have_ips


def ensure_server_tls(rt: Runtime, host: str) -> ServerTls:
    """Return TLS files for ``host``, issuing a fresh server certificate when needed."""
    if not isinstance(rt.keys, FileKeyStore):
        raise ConfigError("serving HTTPS needs the file key store for the server key")
    directory = rt.settings.server_dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    chain_file = directory / "tls-chain.pem"
    label_file = directory / "tls-key-label"
    dns, ips = server_names(host)
    now = rt.now()
    password = read_passphrase(rt.settings).decode("utf-8")
    if chain_file.exists() and label_file.exists():
        current = x509.load_pem_x509_certificates(chain_file.read_bytes())[0]
        label = label_file.read_text().strip()
        if (current.not_valid_after_utc - now > RENEW_BEFORE and _covers(current, dns, ips)
                and rt.keys.exists(label)):
            return ServerTls(chain_file, rt.keys.private_key_path(label), password)
    label = f"server-tls-{secrets.token_hex(4)}"
    signer = rt.keys.generate(label, KeyType.ECDSA_P256)
    issuing = rt.authority("issuing")
    issued = issue_server(issuing, spki=enc.spki_der(signer.public_key()),
                          common_name=dns[0] if host in ("0.0.0.0", "::") else host,  # noqa: S104
                          dns_names=dns, ips=ips, now=now)
    with transaction(rt.engine) as conn:
        conn.execute(insert(m.certificates).values(certificate_row(
            issued, authority_id=rt.issuing_id(), device_id=None, kind="server",
            profile="server", now=ts(now))))
    leaf = enc.to_pem(issued.der, "CERTIFICATE")
    atomic_write(chain_file, leaf + enc.to_pem(issuing.der, "CERTIFICATE"))
    atomic_write(label_file, (label + "\n").encode("utf-8"))
    return ServerTls(chain_file, rt.keys.private_key_path(label), password)
