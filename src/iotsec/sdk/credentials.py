"""A device's key and certificate on disk: the files, the checks, and crash-safe changes.

One directory holds one device's credentials (mode 0700)::

    key.pem            the private key in use (PKCS#8 PEM, mode 0600)
    cert.pem           its certificate (PEM)
    key.prev.pem       the pair in use before the last renewal, kept until the new pair
    cert.prev.pem      is proven (the EST server accepts it in a TLS handshake)
    key.new.pem        a renewal in progress: the new key (made before the request)
    cert.new.pem       ... and its certificate, checked, before both replace the pair
    key.pending.pem    an enrolment in progress (also while it awaits approval: a poll
                       must present the same key)

Every file is written whole under a temporary name and renamed into place
(:func:`iotsec.filesystem.atomic_write`), and the order of the steps is chosen so that a
crash at any point leaves a pair :func:`recover` can make whole again: ``key.pem`` and
``cert.pem`` change by two renames, and between them the staged or the previous pair is
still on disk.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from iotsec.errors import ConflictError, EstError, InvalidInputError, NotFoundError
from iotsec.filesystem import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    atomic_write,
    exclusive_lock,
    sync_directory,
)
from iotsec.pki.keys import KeyType
from iotsec.pki.serial import format_serial

__all__ = ["MAX_PEM", "DeviceFiles", "DeviceKey", "Pair", "cert_pem", "check_issued",
           "directory_lock", "drop_previous", "install_enrolled", "key_pem", "load_ca",
           "load_key", "load_pair", "make_csr", "promote", "recover", "write_staged_cert",
           "write_staged_key"]

#: The largest key, certificate or CA file read.
MAX_PEM: Final = 64 * 1024
_CERT_MODE: Final = 0o644

#: The keys a device may hold (what :meth:`iotsec.pki.keys.KeyType.generate` makes).
DeviceKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class DeviceFiles:
    """Where one device's credentials live (see the module docstring)."""

    dir: Path

    @property
    def cert(self) -> Path:
        return self.dir / "cert.pem"

    @property
    def key(self) -> Path:
        return self.dir / "key.pem"

    @property
    def prev_cert(self) -> Path:
        return self.dir / "cert.prev.pem"

    @property
    def prev_key(self) -> Path:
        return self.dir / "key.prev.pem"

    @property
    def new_cert(self) -> Path:
        return self.dir / "cert.new.pem"

    @property
    def new_key(self) -> Path:
        return self.dir / "key.new.pem"

    @property
    def pending_key(self) -> Path:
        return self.dir / "key.pending.pem"

    def has_previous(self) -> bool:
        return self.prev_cert.exists() or self.prev_key.exists()


@dataclass(frozen=True, slots=True)
class Pair:
    """A certificate and the private key that matches it."""

    cert: x509.Certificate
    key: DeviceKey

    @property
    def device_id(self) -> str:
        names = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else ""

    @property
    def serial(self) -> str:
        return format_serial(self.cert.serial_number)


def _read(path: Path) -> bytes | None:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_PEM + 1)
    except OSError:
        return None
    return data if len(data) <= MAX_PEM else None


def key_pem(key: DeviceKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _spki(cert_or_key: x509.Certificate | DeviceKey) -> bytes:
    public = cert_or_key.public_key()
    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def load_key(path: Path) -> DeviceKey | None:
    """The unencrypted private key in ``path``, or ``None`` if it is missing or unusable."""
    data = _read(path)
    if data is None:
        return None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return None
    try:
        KeyType.of(key)
    except InvalidInputError:
        return None
    return key


def load_pair(cert_path: Path, key_path: Path) -> Pair | None:
    """The pair in these files if both parse and the key is the certificate's, else
    ``None`` (a missing, truncated or mismatched file is what a crash may leave)."""
    data = _read(cert_path)
    key = load_key(key_path)
    if data is None or key is None:
        return None
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        return None
    return Pair(cert, key) if _spki(cert) == _spki(key) else None


def load_ca(ca_file: Path) -> list[x509.Certificate]:
    """The CA certificates the device trusts (a PEM file of one or more)."""
    data = _read(ca_file)
    if data is None:
        raise InvalidInputError(f"cannot read the CA file {ca_file} (missing, unreadable or "
                                f"larger than {MAX_PEM} bytes)",
                                hint="give the iotsec CA chain ('iotsec ca chain')")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise InvalidInputError(f"{ca_file} holds no PEM certificate",
                                hint="give the iotsec CA chain ('iotsec ca chain')") from None


def check_issued(pair: Pair, ca: list[x509.Certificate], now: datetime, *,
                 device_id: str | None = None) -> None:
    """Raise unless ``pair``'s certificate chains to ``ca`` at ``now`` as a TLS client
    certificate, holds the pair's key and (when given) names ``device_id``."""
    if _spki(pair.cert) != _spki(pair.key):
        raise EstError("the certificate received is not for the key sent")
    if device_id is not None and pair.device_id != device_id:
        raise EstError(f"the certificate received names {pair.device_id!r}, not "
                       f"{device_id!r}")
    try:
        verifier = (verification.PolicyBuilder().store(verification.Store(ca)).time(now)
                    .build_client_verifier())
        verifier.verify(pair.cert, [])
    except (verification.VerificationError, ValueError) as exc:
        raise EstError(f"the certificate received does not chain to the trusted CA: {exc}",
                       hint="the CA file must hold the issuing chain ('iotsec ca chain')"
                       ) from None


def make_csr(key: DeviceKey, *, common_name: str | None = None,
             serial_number: str | None = None) -> bytes:
    """A DER PKCS#10 request signed by ``key``. The server decides the certificate's
    subject; the CN or serialNumber only matter to a template that takes the device id from
    the CSR."""
    names = []
    try:
        if common_name:
            names.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        if serial_number:
            names.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    except ValueError as exc:
        raise InvalidInputError(f"cannot put that name in a CSR: {exc}") from None
    digest: hashes.SHA256 | hashes.SHA384 = (
        hashes.SHA384() if isinstance(key, ec.EllipticCurvePrivateKey)
        and isinstance(key.curve, ec.SECP384R1) else hashes.SHA256())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names)).sign(
        key, digest)
    return csr.public_bytes(serialization.Encoding.DER)


@contextlib.contextmanager
def directory_lock(files: DeviceFiles) -> Iterator[None]:
    """One writer at a time in ``files.dir`` (an advisory lock on ``.lock``): two agents on
    one directory would renew over each other."""
    files.dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    with exclusive_lock(files.dir / ".lock", ConflictError(
            f"another process is changing the credentials in {files.dir}",
            hint="run one agent per device directory")):
        yield


def _write(path: Path, data: bytes, mode: int) -> None:
    atomic_write(path, data, mode=mode, dir_mode=PRIVATE_DIR_MODE)


def _restore_previous(files: DeviceFiles) -> Pair | None:
    previous = load_pair(files.prev_cert, files.prev_key)
    if previous is None:
        return None
    _write(files.key, key_pem(previous.key), PRIVATE_FILE_MODE)
    _write(files.cert, cert_pem(previous.cert), _CERT_MODE)
    drop_previous(files)
    return previous


def _renews(staged: Pair, current: Pair) -> bool:
    """Whether ``staged`` is a renewal of ``current``: the same device, another certificate,
    issued no earlier (two issued within a second share their notBefore)."""
    return (staged.device_id == current.device_id and staged.serial != current.serial
            and staged.cert.not_valid_before_utc >= current.cert.not_valid_before_utc)


def recover(files: DeviceFiles) -> Pair:
    """The usable pair in ``files``, after finishing or undoing what an interrupted
    enrolment or renewal left; :class:`~iotsec.errors.NotFoundError` if there is none."""
    current = load_pair(files.cert, files.key)
    if current is None:
        staged = load_pair(files.new_cert, files.key)
        if staged is not None:  # stopped between the two renames of a renewal
            os.replace(files.new_cert, files.cert)
            sync_directory(files.dir)
            return staged
        enrolled = load_pair(files.cert, files.pending_key)
        if enrolled is not None:  # stopped between writing cert.pem and moving the key
            os.replace(files.pending_key, files.key)
            sync_directory(files.dir)
            return enrolled
        previous = _restore_previous(files)
        if previous is not None:
            return previous
        raise NotFoundError(f"{files.dir} holds no usable certificate and key",
                            hint="enrol the device (iotsec device-agent with a bootstrap "
                            "secret or a claim certificate)")
    staged = load_pair(files.new_cert, files.new_key)
    if staged is not None and _renews(staged, current):
        # Stopped after the new certificate was checked and written: finish the change.
        promote(files, current)
        return staged
    # A staged key without its certificate stays: the renewal that made it may have been
    # answered without the answer arriving, and the next attempt asks again with it.
    for leftover in (files.new_cert, files.pending_key):
        leftover.unlink(missing_ok=True)
    return current


def promote(files: DeviceFiles, current: Pair) -> None:
    """Make the staged pair (``key.new.pem``, ``cert.new.pem``) the one in use, keeping
    ``current`` as the previous pair until :func:`drop_previous`."""
    _write(files.prev_key, key_pem(current.key), PRIVATE_FILE_MODE)
    _write(files.prev_cert, cert_pem(current.cert), _CERT_MODE)
    os.replace(files.new_key, files.key)
    os.replace(files.new_cert, files.cert)
    sync_directory(files.dir)


def install_enrolled(files: DeviceFiles, cert: x509.Certificate) -> None:
    """Make the enrolled certificate and the pending key the pair in use: the certificate
    first, then the key by one rename (:func:`recover` finishes the second step)."""
    _write(files.cert, cert_pem(cert), _CERT_MODE)
    os.replace(files.pending_key, files.key)
    sync_directory(files.dir)


def drop_previous(files: DeviceFiles) -> None:
    """Forget the previous pair (the new one is proven)."""
    files.prev_key.unlink(missing_ok=True)
    files.prev_cert.unlink(missing_ok=True)
    sync_directory(files.dir)


def write_staged_key(files: DeviceFiles, key: DeviceKey, *, pending: bool) -> None:
    """Write a new key before it is used in a request (``key.pending.pem`` for an
    enrolment, ``key.new.pem`` for a renewal), private from the first byte."""
    _write(files.pending_key if pending else files.new_key, key_pem(key), PRIVATE_FILE_MODE)


def write_staged_cert(files: DeviceFiles, cert: x509.Certificate) -> None:
    _write(files.new_cert, cert_pem(cert), _CERT_MODE)
