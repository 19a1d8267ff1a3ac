"""The delegated OCSP responder certificate (RFC 6960 4.2.2.2): issued by a CA to a key of
its own, for signing OCSP answers only.

It carries the OCSPSigning extended key usage (what makes a client accept its answers for
the CA) and id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1: clients do not ask about the
responder itself), and it lives :data:`RESPONDER_VALIDITY`: a stolen responder key signs
lies for a few days at most, which is why nocheck is tolerable.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from cryptography.x509.oid import NameOID

from iotsec.pki import der
from iotsec.pki import x509 as enc
from iotsec.pki.ca import ORGANIZATION, Authority
from iotsec.pki.issue import IssuedCertificate
from iotsec.pki.ocsp import OID_NOCHECK, OID_OCSP_SIGNING
from iotsec.pki.serial import random_serial

__all__ = ["RENEW_BEFORE", "RESPONDER_VALIDITY", "issue_responder"]

#: How long a responder certificate lives.
RESPONDER_VALIDITY = timedelta(days=4)
#: A responder certificate is replaced when less than this is left of it; it is at least
#: the longest answer lifetime (IOTSEC_OCSP_VALIDITY), so an answer never outlives the
#: certificate that vouches for its signature.
RENEW_BEFORE = timedelta(days=2)


def issue_responder(ca: Authority, *, spki: bytes, now: datetime) -> IssuedCertificate:
    """Sign a responder certificate for the key ``spki`` (DER), valid from a minute ago
    for :data:`RESPONDER_VALIDITY` (never past the CA's own notAfter)."""
    ca.check_clock(now)
    now = now.replace(microsecond=0)
    not_before = max(now - timedelta(minutes=1), ca.not_before)
    not_after = min(now + RESPONDER_VALIDITY, ca.not_after)
    names = ca.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    # A CN is at most 64 characters (RFC 5280 appendix A).
    common_name = f"{str(names[0].value) if names else 'iotsec CA'}"[:48] + " OCSP responder"
    extensions = (
        enc.basic_constraints(ca=False),
        enc.key_usage(enc.DIGITAL_SIGNATURE),
        enc.extended_key_usage(OID_OCSP_SIGNING),
        enc.subject_key_identifier(enc.key_identifier(spki)),
        enc.authority_key_identifier(ca.key_id),
        enc.extension(OID_NOCHECK, der.null()),
    )
    serial = random_serial()
    tbs = enc.TbsCertificate(serial=serial, issuer=ca.subject,
                             subject=enc.name(common_name, ORGANIZATION), spki=spki,
                             not_before=not_before, not_after=not_after,
                             extensions=extensions)
    return IssuedCertificate(serial=serial, der=enc.build_certificate(tbs, ca.signer),
                             not_before=not_before, not_after=not_after,
                             subject_cn=common_name,
                             spki_sha256=hashlib.sha256(spki).hexdigest())
