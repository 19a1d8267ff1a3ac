"""Certificate authorities: the root, the issuing CA beneath it, and what issuance needs of them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from iotsec.errors import ClockBehindError, PkiError
from iotsec.pki import x509 as enc
from iotsec.pki.keys import Signer
from iotsec.pki.serial import random_serial

__all__ = [
    "ISSUING_VALIDITY", "ORGANIZATION", "ROOT_VALIDITY", "Authority", "create_issuing",
    "create_root"
]

ROOT_VALIDITY = timedelta(days=20 * 365)
ISSUING_VALIDITY = timedelta(days=10 * 365)
ORGANIZATION = "iotsec"


@dataclass(frozen=True, slots=True)
class Authority:
    """A CA certificate with the signer that holds its key."""

    certificate: x509.Certificate
    der: bytes
    signer: Signer
    subject: bytes
    key_id: bytes

    @classmethod
    def from_der(cls, der: bytes, signer: Signer) -> Authority:
        cert = x509.load_der_x509_certificate(der)
        if enc.spki_der(cert.public_key()) != enc.spki_der(signer.public_key()):
            raise PkiError("the CA certificate does not match the CA key in custody",
                           hint="the home's keys and database belong to different CAs")
        return cls(certificate=cert, der=der, signer=signer,
                   subject=cert.subject.public_bytes(),
                   key_id=enc.key_identifier(enc.spki_der(cert.public_key())))

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    def check_clock(self, now: datetime) -> None:
        """Refuse to sign at ``now`` when it lies before this CA's own notBefore.

        A clock running behind is the one clock fault a CA can see by itself: it cannot
        be earlier than the CA's creation. Signing anyway would issue certificates that
        expire before their CA existed and CRLs from the past (:class:`ClockBehindError`).
        """
        if now < self.not_before:
            raise ClockBehindError(
                f"the clock is behind: it says {_iso(now)}, before the notBefore "
                f"{_iso(self.not_before)} of the CA {self.certificate.subject.rfc4514_string()}"
                "; nothing was signed")


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ca_extensions(key_id: bytes, issuer_key_id: bytes,
                   path_length: int | None) -> tuple[bytes, ...]:
    return (
        enc.basic_constraints(ca=True, path_length=path_length),
        enc.key_usage(enc.DIGITAL_SIGNATURE, enc.KEY_CERT_SIGN, enc.CRL_SIGN),
        enc.subject_key_identifier(key_id),
        enc.authority_key_identifier(issuer_key_id),
    )


def create_root(signer: Signer, now: datetime, *, label: str | None = None) -> bytes:
    """A self-signed root CA certificate (path length 1: it only signs issuing CAs)."""
    tag = label or secrets.token_hex(4)
    subject = enc.name(f"iotsec Root CA {tag}", ORGANIZATION)
    spki = enc.spki_der(signer.public_key())
    key_id = enc.key_identifier(spki)
    tbs = enc.TbsCertificate(
        serial=random_serial(), issuer=subject, subject=subject, spki=spki,
        not_before=now - timedelta(minutes=5), not_after=now + ROOT_VALIDITY,
        extensions=_ca_extensions(key_id, key_id, 1),
    )
    return enc.build_certificate(tbs, signer)


def create_issuing(root: Authority, signer: Signer, now: datetime, *,
                   label: str | None = None) -> bytes:
    """An issuing (intermediate) CA under ``root``; path length 0: it signs only end entities.
    Refused when ``now`` is before the root's notBefore (:meth:`Authority.check_clock`)."""
    root.check_clock(now)
    tag = label or secrets.token_hex(4)
    spki = enc.spki_der(signer.public_key())
    not_after = min(now + ISSUING_VALIDITY, root.not_after)
    tbs = enc.TbsCertificate(
        serial=random_serial(), issuer=root.subject,
        subject=enc.name(f"iotsec Issuing CA {tag}", ORGANIZATION), spki=spki,
        not_before=now - timedelta(minutes=5), not_after=not_after,
        extensions=_ca_extensions(enc.key_identifier(spki), root.key_id, 0),
    )
    return enc.build_certificate(tbs, root.signer)
