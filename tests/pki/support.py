"""Helpers shared by the PKI tests: CA chains, PEM files and the openssl CLI."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from iotsec.pki.ca import Authority, create_issuing, create_root
from iotsec.pki.csr import parse_csr
from iotsec.pki.issue import IssuedCertificate, issue_device
from iotsec.pki.keys import KeyType, LocalSigner
from iotsec.pki.profiles import DEVICE
from tests.helpers import make_csr


@dataclass(frozen=True)
class Chain:
    now: datetime
    root: Authority
    issuing: Authority


def build_chain(key_type: KeyType, now: datetime, *, label: str | None = None) -> Chain:
    root_signer = LocalSigner(key_type.generate())
    root = Authority.from_der(create_root(root_signer, now, label=label), root_signer)
    issuing_signer = LocalSigner(key_type.generate())
    issuing = Authority.from_der(
        create_issuing(root, issuing_signer, now, label=label), issuing_signer
    )
    return Chain(now=now, root=root, issuing=issuing)


def write_pem(path: Path, der: bytes) -> Path:
    cert = x509.load_der_x509_certificate(der)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def run_openssl(openssl: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [openssl, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def issue_leaf(ca: Authority, device_id: str, now: datetime, *, days: int | None = None,
               key: object = None) -> IssuedCertificate:
    """A device certificate for ``device_id`` issued by ``ca`` from a freshly made CSR."""
    checked = parse_csr(make_csr(key, der=True))  # type: ignore[arg-type]
    return issue_device(ca, device_id=device_id, spki=checked.spki, profile=DEVICE, now=now,
                        days=days)
