"""Helpers of the CRL tests: devices with certificates, CRLs written for openssl."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from iotsec.app.identity import devices
from iotsec.app.pki import issuance
from iotsec.app.pki.cert_records import CertificateRecord
from iotsec.app.runtime import Runtime
from tests.helpers import make_csr
from tests.pki.support import run_openssl, write_pem


def issue(rt: Runtime, device_id: str) -> CertificateRecord:
    devices.add_device(rt, devices.NewDevice.parse(device_id))
    return issuance.issue_from_csr(rt, device_id, make_csr())


def crl_pem(path: Path, der: bytes) -> Path:
    path.write_bytes(x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM))
    return path


def verify(openssl: str, rt: Runtime, tmp_path: Path, cert_der: bytes, *crls: Path,
           deltas: bool = False) -> str:
    """``openssl verify -crl_check`` of ``cert_der`` against the home's chain and ``crls``
    (with ``-use_deltas -extended_crl`` when ``deltas``); its output."""
    args: list[str | Path] = ["verify", "-x509_strict", "-crl_check"]
    if deltas:
        args += ["-use_deltas", "-extended_crl"]
    for crl in crls:
        args += ["-CRLfile", crl]
    result = run_openssl(
        openssl, *args,
        "-CAfile", write_pem(tmp_path / "root.pem", rt.authority("root").der),
        "-untrusted", write_pem(tmp_path / "issuing.pem", rt.authority("issuing").der),
        write_pem(tmp_path / "leaf.pem", cert_der))
    return result.stdout + result.stderr
