"""Issuing end-entity certificates: device client certificates and server certificates.

Subject and SANs come from the registry identity and the profile, never from the CSR:
CN = device id, SAN URI ``urn:iotsec:device:<id>`` plus the profile's DNS names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from iotsec.errors import PkiError
from iotsec.pki import x509 as enc
from iotsec.pki.ca import Authority
from iotsec.pki.profiles import CertProfile, check_days
from iotsec.pki.serial import random_serial

__all__ = [
    "BACKDATE", "IssuedCertificate", "device_uri", "issue_device", "issue_server", "validity"
]

#: Back-date notBefore a little: device clocks drift, and a certificate "not yet valid"
#: for a minute after issuance breaks provisioning lines.
BACKDATE = timedelta(minutes=1)


def device_uri(device_id: str) -> str:
    return f"urn:iotsec:device:{device_id}"


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    serial: int
    der: bytes
    not_before: datetime
    not_after: datetime
    subject_cn: str
    #: SHA-256 of the certified SubjectPublicKeyInfo (how the store finds a key's holders).
    spki_sha256: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


def validity(ca: Authority, now: datetime, days: int) -> tuple[datetime, datetime]:
    """The validity window: ``days`` from now, never past the issuing CA's own expiry.
    Refused when ``now`` is before the CA's notBefore (:meth:`Authority.check_clock`)."""
    check_days(days)
    ca.check_clock(now)
    now = now.replace(microsecond=0)
    if ca.not_after <= now + timedelta(hours=1):
        raise PkiError("the issuing CA has expired or expires within the hour",
                       hint="rotate the issuing CA before issuing more certificates")
    # The back-dating never reaches before the CA's own notBefore.
    return max(now - BACKDATE, ca.not_before), min(now + timedelta(days=days), ca.not_after)


@lru_cache(maxsize=64)
def _fixed_extensions(ca_key_id: bytes, ekus: tuple[str, ...]) -> tuple[bytes, bytes, bytes, bytes]:
    return (enc.basic_constraints(ca=False), enc.key_usage(enc.DIGITAL_SIGNATURE),
            enc.extended_key_usage(*ekus), enc.authority_key_identifier(ca_key_id))


def _revocation_pointers(crl_url: str | None, ocsp_url: str | None,
                         ca_issuers_url: str | None) -> tuple[bytes, ...]:
    """The CRL distribution point and AIA extensions for the URLs given."""
    found: tuple[bytes, ...] = (enc.crl_distribution_point(crl_url),) if crl_url else ()
    if ocsp_url or ca_issuers_url:
        found += (enc.authority_info_access(ocsp=ocsp_url, ca_issuers=ca_issuers_url),)
    return found


def issue_device(
    ca: Authority,
    *,
    device_id: str,
    spki: bytes,
    profile: CertProfile,
    now: datetime,
    days: int | None = None,
    serial: int | None = None,
    crl_url: str | None = None,
    attributes: Mapping[str, str] | None = None,
    ocsp_url: str | None = None,
    ca_issuers_url: str | None = None,
) -> IssuedCertificate:
    """Sign a client certificate for ``device_id`` over the public key ``spki`` (DER).

    With ``crl_url``, the certificate names it as its CRL distribution point; with
    ``ocsp_url`` or ``ca_issuers_url``, it carries them in an Authority Information Access
    extension. A profile that says there is no revocation information (RFC 9608) gives
    noRevAvail instead of the CRL distribution point and the OCSP pointer (caIssuers
    stays: it is how a relying party finds the issuer, not a revocation source). DNS names
    the profile takes from device attributes come from ``attributes``."""
    not_before, not_after = validity(ca, now, profile.check_validity(days))
    serial = random_serial() if serial is None else serial
    basic, usage, eku, aki = _fixed_extensions(ca.key_id, profile.extended_key_usage)
    extensions: tuple[bytes, ...] = (
        basic, usage, eku,
        enc.subject_key_identifier(enc.key_identifier(spki)),
        aki,
        enc.subject_alt_name(uris=(device_uri(device_id),),
                             dns_names=profile.dns_names(device_id, attributes)),
    )
    if profile.no_revocation:
        extensions += (enc.no_rev_avail(), *_revocation_pointers(None, None, ca_issuers_url))
    else:
        extensions += _revocation_pointers(crl_url, ocsp_url, ca_issuers_url)
    tbs = enc.TbsCertificate(serial=serial, issuer=ca.subject, subject=enc.name(device_id),
                             spki=spki, not_before=not_before, not_after=not_after,
                             extensions=extensions)
    return IssuedCertificate(serial=serial, der=enc.build_certificate(tbs, ca.signer),
                             not_before=not_before, not_after=not_after, subject_cn=device_id,
                             spki_sha256=hashlib.sha256(spki).hexdigest())


def issue_server(
    ca: Authority,
    *,
    spki: bytes,
    common_name: str,
    dns_names: tuple[str, ...],
    ips: tuple[str, ...],
    now: datetime,
    days: int = 397,
    crl_url: str | None = None,
    ocsp_url: str | None = None,
    ca_issuers_url: str | None = None,
) -> IssuedCertificate:
    """Sign a TLS server certificate (serverAuth) for iotsec's own endpoints (with the
    revocation pointers of :func:`issue_device`)."""
    not_before, not_after = validity(ca, now, days)
    serial = random_serial()
    extensions = (
        enc.basic_constraints(ca=False),
        enc.key_usage(enc.DIGITAL_SIGNATURE),
        enc.extended_key_usage(enc.OID_SERVER_AUTH),
        enc.subject_key_identifier(enc.key_identifier(spki)),
        enc.authority_key_identifier(ca.key_id),
        enc.subject_alt_name(dns_names=dns_names, ips=ips),
        *_revocation_pointers(crl_url, ocsp_url, ca_issuers_url),
    )
    tbs = enc.TbsCertificate(serial=serial, issuer=ca.subject, subject=enc.name(common_name),
                             spki=spki, not_before=not_before, not_after=not_after,
                             extensions=extensions)
    return IssuedCertificate(serial=serial, der=enc.build_certificate(tbs, ca.signer),
                             not_before=not_before, not_after=not_after, subject_cn=common_name,
                             spki_sha256=hashlib.sha256(spki).hexdigest())
