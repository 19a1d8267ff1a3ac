"""What is handed out with a certificate: the issuing chain, and for a key made here (for
devices that cannot make their own) the key, a PKCS#12 and the chain."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from iotsec.app.pki.authorities import chain_certificates, pem_of, trusted_certificates
from iotsec.app.pki.cert_records import CertificateRecord
from iotsec.app.pki.issuance import issue_batch
from iotsec.app.runtime import Runtime
from iotsec.errors import InvalidInputError
from iotsec.pki import x509 as enc
from iotsec.pki.csr import CheckedCsr
from iotsec.pki.keys import KeyType

__all__ = [
    "MIN_P12_PASSPHRASE", "DeviceKey", "KeygenBundle", "chain_pem", "check_p12_passphrase",
    "issue_with_keygen", "keygen_bundle", "trust_bundle_pem"
]

MIN_P12_PASSPHRASE = 8
#: The private keys ``--keygen`` makes (see :class:`~iotsec.pki.keys.KeyType`).
DeviceKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class KeygenBundle:
    certificate: CertificateRecord
    key_pem: bytes
    pkcs12: bytes
    chain_pem: str


def issue_with_keygen(rt: Runtime, device_id: str, *, p12_passphrase: bytes,
                      key_type: KeyType = KeyType.ECDSA_P256,
                      days: int | None = None, key: DeviceKey | None = None,
                      save_key: Callable[[bytes], None] | None = None,
                      profile: str | None = None) -> KeygenBundle:
    """Generate the device's key here (for devices that cannot), issue, and hand both back.

    The private key is returned to the caller and not kept by iotsec. ``key`` certifies a
    key made earlier instead (one saved by an interrupted run). ``save_key`` receives the
    key (PKCS#8 PEM) after the certificate is signed and before it is committed: when it
    fails, or the process dies in it, nothing was issued, so a valid certificate whose
    private key was never saved cannot exist.
    """
    check_p12_passphrase(p12_passphrase)
    key = key_type.generate() if key is None else key
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    spki = enc.spki_der(key.public_key())
    before_commit = None if save_key is None else (lambda: save_key(key_pem))
    made = CheckedCsr(public_key=key.public_key(), spki=spki)
    record = issue_batch(rt, [(device_id, made)], days=days, before_commit=before_commit,
                         profile=profile)[0]
    return keygen_bundle(rt, record, key, p12_passphrase)


def check_p12_passphrase(p12_passphrase: bytes) -> None:
    """Refuse a PKCS#12 passphrase shorter than :data:`MIN_P12_PASSPHRASE`."""
    if len(p12_passphrase) < MIN_P12_PASSPHRASE:
        raise InvalidInputError(f"the PKCS#12 passphrase needs at least {MIN_P12_PASSPHRASE} "
                                "characters")


def keygen_bundle(rt: Runtime, record: CertificateRecord, key: DeviceKey,
                  p12_passphrase: bytes) -> KeygenBundle:
    """The files handed out for ``record`` and its private ``key``: the key, a PKCS#12
    (key, certificate and issuing CA) under ``p12_passphrase``, and the chain."""
    check_p12_passphrase(p12_passphrase)
    cert = x509.load_der_x509_certificate(record.der)
    issuing = rt.authority("issuing")
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                  .kdf_rounds(100_000)
                  .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                  .hmac_hash(hashes.SHA256())
                  .build(p12_passphrase))
    p12 = pkcs12.serialize_key_and_certificates(
        name=(record.device_id or record.subject).encode("utf-8"), key=key, cert=cert,
        cas=[issuing.certificate], encryption_algorithm=encryption)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return KeygenBundle(certificate=record, key_pem=key_pem, pkcs12=p12,
                        chain_pem=chain_pem(rt))


def chain_pem(rt: Runtime, *, cross: bool = False) -> str:
    """The issuing chain, intermediate first, then the root; with ``cross``, the cross
    certificates to an older root still trusted before the root (see
    :func:`~iotsec.app.pki.authorities.chain_certificates`)."""
    return pem_of(chain_certificates(rt, cross=cross))


def trust_bundle_pem(rt: Runtime) -> str:
    """Every CA certificate trusted now: the active and retiring issuing CAs, the cross
    certificates and the roots (what a relying party needs during a rollover)."""
    return pem_of(trusted_certificates(rt))
