"""``cert issue --keygen -o DIR``: the device's key, certificate, chain and PKCS#12 in a
directory, written so that no crash can leave a valid certificate whose key was lost.

The key file is written (atomically, 0600) after the certificate is signed and before it is
committed, so a process killed at any moment leaves one of:

* nothing, or a key file and no certificate: the run died before the commit;
* a key file and its committed certificate, without the certificate file: it died after.

The certificate file is written last, so its absence marks a run that did not finish. Run
again with the same arguments and the run resumes: the key left behind is certified, or,
when its certificate was committed, that certificate is written out again; either way the
device ends up with exactly one certificate. The certificate is never written to disk before
the commit: a signed certificate the store does not know of could not be revoked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from iotsec.app.pki.bundles import DeviceKey, check_p12_passphrase, issue_with_keygen, keygen_bundle
from iotsec.app.pki.cert_records import CertificateRecord, list_certificates
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError, InvalidInputError
from iotsec.filesystem import atomic_write, read_bounded, write_private_file
from iotsec.identity.registry import parse_device_id
from iotsec.pki import x509 as enc
from iotsec.pki.keys import KeyType

__all__ = ["MAX_KEY_FILE", "KeygenFiles", "issue_keygen_files", "keygen_paths"]

#: More than any PEM private key ``--keygen`` writes (an RSA-3072 PKCS#8 is about 2.5 KiB).
MAX_KEY_FILE = 64 * 1024


@dataclass(frozen=True, slots=True)
class KeygenFiles:
    """What ``--keygen`` wrote: the certificate, the files by role (``key``,
    ``certificate``, ``chain``, ``pkcs12``), and whether it finished an interrupted run."""

    certificate: CertificateRecord
    files: dict[str, Path]
    resumed: bool


def keygen_paths(out: Path, device_id: str) -> dict[str, Path]:
    """The files ``--keygen`` writes for ``device_id`` into ``out``."""
    return {"key": out / f"{device_id}.key", "certificate": out / f"{device_id}.crt",
            "chain": out / "chain.pem", "pkcs12": out / f"{device_id}.p12"}


def issue_keygen_files(rt: Runtime, device_id: str, out: Path, *, p12_passphrase: bytes,
                       key_type: KeyType = KeyType.ECDSA_P256,
                       days: int | None = None, profile: str | None = None) -> KeygenFiles:
    """Issue a certificate with a key generated here and write the files into ``out``,
    or finish a run that was interrupted there (see the module docstring)."""
    device_id = parse_device_id(device_id)
    check_p12_passphrase(p12_passphrase)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{out} exists and is not a directory",
                                hint="give a new or empty directory with -o")
    paths = keygen_paths(out, device_id)
    if paths["certificate"].exists():
        raise InvalidInputError(f"{paths['certificate']} already exists; nothing was issued",
                                hint="choose another directory with -o")
    leftover = _leftover_key(paths["key"], key_type)
    if leftover is None:
        clash = [p for p in (paths["chain"], paths["pkcs12"]) if p.exists()]
        if clash:
            raise InvalidInputError(f"{clash[0]} already exists; nothing was issued",
                                    hint="choose another directory with -o")

        def save_key(pem: bytes) -> None:
            write_private_file(paths["key"], pem)

        bundle = issue_with_keygen(rt, device_id, p12_passphrase=p12_passphrase,
                                   key_type=key_type, days=days, save_key=save_key,
                                   profile=profile)
    else:
        record = _certificate_of(rt, device_id, leftover, paths["key"])
        bundle = (keygen_bundle(rt, record, leftover, p12_passphrase) if record is not None
                  else issue_with_keygen(rt, device_id, p12_passphrase=p12_passphrase,
                                         key_type=key_type, days=days, key=leftover,
                                         profile=profile))
    # A resumed run replaces the PKCS#12 and chain of the run it finishes: that run's
    # passphrase was never shown.
    write_private_file(paths["pkcs12"], bundle.pkcs12, overwrite=True)
    atomic_write(paths["chain"], bundle.chain_pem.encode("ascii"))
    atomic_write(paths["certificate"], bundle.certificate.pem.encode("ascii"))
    return KeygenFiles(certificate=bundle.certificate, files=paths,
                       resumed=leftover is not None)


def _leftover_key(path: Path, key_type: KeyType) -> DeviceKey | None:
    """The private key an interrupted run left in ``path``, or ``None`` if there is none."""
    if not path.exists():
        return None
    refusal = InvalidInputError(
        f"{path} exists but is not an {key_type.value} private key left by an interrupted "
        "'--keygen'; nothing was issued", hint="remove it or choose another directory with -o")
    try:
        key = serialization.load_pem_private_key(read_bounded(path, MAX_KEY_FILE), None)
        if isinstance(key, DeviceKey) and KeyType.of(key) is key_type:
            return key
    except (ValueError, TypeError, InvalidInputError):
        pass
    raise refusal


def _certificate_of(rt: Runtime, device_id: str, key: DeviceKey,
                    path: Path) -> CertificateRecord | None:
    """The committed certificate of ``device_id`` for ``key``, if the interrupted run got
    that far; refused when that certificate can no longer be used."""
    spki = enc.spki_der(key.public_key())
    now = rt.now()
    for record in list_certificates(rt, device_id=device_id, limit=100_000):
        if enc.spki_der(x509.load_der_x509_certificate(record.der).public_key()) != spki:
            continue
        if record.status(now) != "valid":
            raise ConflictError(
                f"the key in {path} belongs to certificate {record.serial}, which is "
                f"{record.status(now)}; nothing was issued",
                hint="remove the key file to issue a certificate with a new key")
        return record
    return None
