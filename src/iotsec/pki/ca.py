"""Certificate authorities: the root, the issuing CA beneath it, and what issuance needs of them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from iotsec.errors import CaImportError, ClockBehindError, InputTooLargeError, PkiError
from iotsec.pki import der
from iotsec.pki import x509 as enc
from iotsec.pki.keys import Signer
from iotsec.pki.serial import random_serial

__all__ = [
    "ISSUING_VALIDITY", "MAX_CA_CERT_BYTES", "ORGANIZATION", "ROOT_PATH_LENGTH", "ROOT_VALIDITY",
    "Authority",
    "ca_request", "check_ca_certificate", "create_issuing", "create_root", "cross_certificate",
    "issuing_subject", "load_ca_certificate", "sign_intermediate"
]

ROOT_VALIDITY = timedelta(days=20 * 365)
ISSUING_VALIDITY = timedelta(days=10 * 365)
ORGANIZATION = "iotsec"
#: A root's pathLenConstraint: an issuing CA below it, or a cross-signed successor root
#: with its issuing CA below that.
ROOT_PATH_LENGTH = 2
#: The largest CA certificate (PEM or DER) accepted for import.
MAX_CA_CERT_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Authority:
    """A CA certificate with the signer that holds its key."""

    certificate: x509.Certificate
    der: bytes
    signer: Signer
    subject: bytes
    key_id: bytes
    #: The certificate's validity, read once (each issuance and CRL compares with it).
    not_before: datetime
    not_after: datetime

    @classmethod
    def from_der(cls, der: bytes, signer: Signer) -> Authority:
        cert = x509.load_der_x509_certificate(der)
        if enc.spki_der(cert.public_key()) != enc.spki_der(signer.public_key()):
            raise PkiError("the CA certificate does not match the CA key in custody",
                           hint="the home's keys and database belong to different CAs")
        return cls(certificate=cert, der=der, signer=signer,
                   subject=cert.subject.public_bytes(),
                   key_id=enc.key_identifier(enc.spki_der(cert.public_key())),
                   not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc)

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
    """A self-signed root CA certificate. Path length :data:`ROOT_PATH_LENGTH` (2): it
    signs issuing CAs, and once the cross certificate of the root that succeeds it, under
    which that root's issuing CAs stay one level deeper (leaf, issuing CA, cross
    certificate, this root)."""
    tag = label or secrets.token_hex(4)
    subject = enc.name(f"iotsec Root CA {tag}", ORGANIZATION)
    spki = enc.spki_der(signer.public_key())
    key_id = enc.key_identifier(spki)
    tbs = enc.TbsCertificate(
        serial=random_serial(), issuer=subject, subject=subject, spki=spki,
        not_before=now - timedelta(minutes=5), not_after=now + ROOT_VALIDITY,
        extensions=_ca_extensions(key_id, key_id, ROOT_PATH_LENGTH),
    )
    return enc.build_certificate(tbs, signer)


def issuing_subject(label: str | None = None) -> bytes:
    """The DER name of a new issuing CA: ``iotsec Issuing CA <label>``."""
    return enc.name(f"iotsec Issuing CA {label or secrets.token_hex(4)}", ORGANIZATION)


def sign_intermediate(root: Authority, spki: bytes, subject: bytes, now: datetime) -> bytes:
    """An issuing (intermediate) CA certificate for the key ``spki`` named ``subject``,
    signed by ``root``: path length 0 (it signs only end entities), valid for
    :data:`ISSUING_VALIDITY` but never beyond the root. Refused when ``now`` is before
    the root's notBefore (:meth:`Authority.check_clock`)."""
    root.check_clock(now)
    not_after = min(now + ISSUING_VALIDITY, root.not_after)
    tbs = enc.TbsCertificate(
        serial=random_serial(), issuer=root.subject, subject=subject, spki=spki,
        not_before=now - timedelta(minutes=5), not_after=not_after,
        extensions=_ca_extensions(enc.key_identifier(spki), root.key_id, 0),
    )
    return enc.build_certificate(tbs, root.signer)


def create_issuing(root: Authority, signer: Signer, now: datetime, *,
                   label: str | None = None) -> bytes:
    """An issuing (intermediate) CA under ``root`` for the key of ``signer``
    (:func:`sign_intermediate`)."""
    return sign_intermediate(root, enc.spki_der(signer.public_key()), issuing_subject(label),
                             now)


def cross_certificate(old_root: Authority, new_root: x509.Certificate, now: datetime) -> bytes:
    """The cross certificate of a root rollover: ``new_root``'s subject and key, signed by
    ``old_root`` (RFC 4210 5.3.13's NewWithOld). A relying party that trusts only the old
    root builds leaf -> issuing CA -> this certificate -> old root; one that trusts the
    new root ignores it. Path length 1 (an issuing CA below it), valid no longer than
    either. Refused when ``old_root`` allows fewer than two CA levels below it (roots made
    with path length 1): the path through the cross certificate would not verify."""
    old_root.check_clock(now)
    constraints = old_root.certificate.extensions.get_extension_for_class(
        x509.BasicConstraints).value
    if constraints.path_length is not None and constraints.path_length < 2:
        raise PkiError(f"the root {old_root.certificate.subject.rfc4514_string()} allows "
                       f"{constraints.path_length} CA level(s) below it: a certificate "
                       "chain through a cross certificate from it would not verify",
                       hint="rotate with '--new-root --no-cross' and give devices the new "
                       "root from the trust bundle ('iotsec ca bundle', EST /cacerts)")
    spki = enc.spki_der(new_root.public_key())
    tbs = enc.TbsCertificate(
        serial=random_serial(), issuer=old_root.subject,
        subject=new_root.subject.public_bytes(), spki=spki,
        not_before=now - timedelta(minutes=5),
        not_after=min(new_root.not_valid_after_utc, old_root.not_after),
        extensions=_ca_extensions(enc.key_identifier(spki), old_root.key_id, 1),
    )
    return enc.build_certificate(tbs, old_root.signer)


def ca_request(signer: Signer, subject: bytes) -> bytes:
    """A PKCS#10 request (DER) for a new issuing CA: ``subject`` and the key of
    ``signer``, self-signed by that key, with no attributes (the offline root decides the
    extensions, :func:`sign_intermediate`)."""
    info = der.sequence(der.integer(0), subject, enc.spki_der(signer.public_key()),
                        der.tlv(0xA0, b""))
    return enc.sign_tbs(info, signer)


def load_ca_certificate(data: bytes) -> x509.Certificate:
    """Parse a CA certificate offered for import (PEM or DER, at most
    :data:`MAX_CA_CERT_BYTES`; with PEM the first certificate counts)."""
    if len(data) > MAX_CA_CERT_BYTES:
        raise InputTooLargeError(f"the certificate file is {len(data)} bytes; the limit is "
                                 f"{MAX_CA_CERT_BYTES}", hint="give one PEM or DER certificate")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data.lstrip())
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise CaImportError("the file is not a PEM or DER X.509 certificate") from None


def check_ca_certificate(cert: x509.Certificate, *, issuer: x509.Certificate, spki: bytes,
                         now: datetime) -> None:
    """Refuse a CA certificate to be installed as an issuing CA unless it is a CA
    (basicConstraints cA) allowed to sign certificates and CRLs (keyCertSign, cRLSign),
    is valid at ``now``, certifies the key ``spki`` and was signed by ``issuer``
    (:class:`CaImportError` saying which)."""
    subject = cert.subject.rfc4514_string()[:120]
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise CaImportError(f"{subject!r} is not a CA certificate (no basicConstraints or "
                            "keyUsage)") from None
    except ValueError as exc:
        raise CaImportError(f"{subject!r} has malformed extensions: {exc}") from None
    if not constraints.ca:
        raise CaImportError(f"{subject!r} is not a CA certificate (basicConstraints cA is "
                            "false)")
    if not (usage.key_cert_sign and usage.crl_sign):
        raise CaImportError(f"{subject!r} may not sign certificates and CRLs (keyUsage lacks "
                            "keyCertSign or cRLSign)")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CaImportError(f"{subject!r} is not valid now: it is valid from "
                            f"{_iso(cert.not_valid_before_utc)} to "
                            f"{_iso(cert.not_valid_after_utc)}",
                            hint="ask the root's keeper for a current certificate")
    if enc.spki_der(cert.public_key()) != spki:
        raise CaImportError(f"{subject!r} does not certify the expected key",
                            hint="the certificate belongs to another request or key; "
                            "import the one signed for this key")
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise CaImportError(f"{subject!r} was not issued by the root "
                            f"{issuer.subject.rfc4514_string()[:120]!r}",
                            hint="give the root certificate that signed it") from None
