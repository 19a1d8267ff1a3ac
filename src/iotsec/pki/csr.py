"""Parsing and checking certificate signing requests (PKCS#10, RFC 2986).

A CSR only proves possession of a key. Nothing else in it is trusted: the subject and
the extensions of the certificate come from the registry and the profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from iotsec.errors import CsrError, InputTooLargeError, MalformedInputError, WeakKeyError
from iotsec.pki.x509 import spki_der

__all__ = [
    "MAX_CSR_BYTES", "MIN_RSA_BITS", "RSA_EXPONENT", "CheckedCsr", "check_key_strength",
    "parse_csr"
]

#: A CSR with an RSA-8192 key and a few extensions is under 3 KiB in PEM. 64 KiB is generous.
MAX_CSR_BYTES = 64 * 1024
MIN_RSA_BITS = 2048
#: The one RSA public exponent accepted (F4).
RSA_EXPONENT = 65537
_ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
#: The ECDSA signature algorithms (RFC 5758 3.2) and their digests: a CSR signed with one of
#: these by an EC key is verified with the key parsed once (:func:`_signature_ok`).
_ECDSA: Final = {
    x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256: ec.ECDSA(hashes.SHA256()),
    x509.SignatureAlgorithmOID.ECDSA_WITH_SHA384: ec.ECDSA(hashes.SHA384()),
    x509.SignatureAlgorithmOID.ECDSA_WITH_SHA512: ec.ECDSA(hashes.SHA512()),
}


@dataclass(frozen=True, slots=True)
class CheckedCsr:
    """A CSR whose signature verified and whose key is strong enough."""

    public_key: CertificatePublicKeyTypes
    spki: bytes
    #: The CSR's subject as parsed (None for a request made here, without a CSR).
    name: x509.Name | None = None

    @property
    def requested_subject(self) -> str:
        """The CSR's subject as RFC 4514 text ("" without a CSR): what the device asked
        for, never what it is given."""
        return "" if self.name is None else self.name.rfc4514_string()


def parse_csr(data: bytes) -> CheckedCsr:
    """Parse a PEM or DER CSR, verify its self-signature and the strength of its key."""
    if len(data) > MAX_CSR_BYTES:
        raise InputTooLargeError(f"the CSR is {len(data)} bytes; the limit is {MAX_CSR_BYTES}",
                                 hint="send a single PEM or DER certificate signing request")
    if not data.strip():
        raise MalformedInputError("the CSR is empty", hint="give a PEM or DER PKCS#10 request")
    stripped = data.lstrip()
    try:
        if stripped.startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(stripped)
        else:
            csr = x509.load_der_x509_csr(data)
    except (ValueError, x509.InvalidVersion):
        raise MalformedInputError(
            "the CSR is not a valid PEM or DER PKCS#10 request (garbage or truncated)",
            hint="create one with e.g. 'openssl req -new -key device.key -subj /CN=ID'",
        ) from None
    try:
        public_key = csr.public_key()
        signature_ok = _signature_ok(csr, public_key)
        name = csr.subject
    except (ValueError, x509.UnsupportedGeneralNameType) as exc:
        raise MalformedInputError(f"the CSR cannot be decoded: {exc}",
                                  hint="regenerate the CSR with a standard tool") from None
    except Exception as exc:  # unsupported algorithms raise various types
        raise CsrError(f"the CSR uses an unsupported algorithm ({type(exc).__name__})",
                       hint="use an ECDSA P-256/P-384 or RSA-2048+ key") from None
    if not signature_ok:
        raise CsrError("the CSR's signature does not verify",
                       hint="the request was altered or signed with another key; regenerate it")
    check_key_strength(public_key)
    return CheckedCsr(public_key=public_key, spki=spki_der(public_key), name=name)


def _signature_ok(csr: x509.CertificateSigningRequest,
                  public_key: CertificatePublicKeyTypes) -> bool:
    """Whether ``csr``'s self-signature verifies under ``public_key`` (its own, parsed).

    An ECDSA signature by an EC key is checked with that key object, as
    ``is_signature_valid`` would check it after parsing the key again; every other pairing
    (RSA, Ed25519, a signature algorithm that does not fit the key) is left to
    ``is_signature_valid``, which refuses the mismatches."""
    algorithm = _ECDSA.get(csr.signature_algorithm_oid)
    if algorithm is None or not isinstance(public_key, ec.EllipticCurvePublicKey):
        return csr.is_signature_valid
    try:
        public_key.verify(csr.signature, csr.tbs_certrequest_bytes, algorithm)
    except InvalidSignature:
        return False
    return True


def check_key_strength(public_key: CertificatePublicKeyTypes) -> None:
    """Refuse keys weaker than RSA-2048 / P-256, and key types devices cannot use for TLS."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise WeakKeyError(f"the CSR's RSA key has {public_key.key_size} bits; "
                               f"at least {MIN_RSA_BITS} are required",
                               hint="generate an RSA-2048+ or ECDSA P-256 key")
        exponent = public_key.public_numbers().e
        if exponent != RSA_EXPONENT:
            # CA/Browser Forum BR 6.1.6 and NIST SP 800-89 ask for an odd exponent of at
            # least 65537; small ones (3) make padding and broadcast attacks practical.
            # Every current tool uses exactly 65537, so nothing else is accepted.
            raise WeakKeyError(f"the CSR's RSA public exponent is {exponent}; only "
                               f"{RSA_EXPONENT} is accepted (CA/Browser Forum and NIST SP "
                               "800-89 require at least 65537)",
                               hint="generate the key with the default exponent, e.g. "
                               "'openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072'")
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, _ALLOWED_CURVES):
            raise WeakKeyError(f"the CSR's curve {public_key.curve.name} is not accepted",
                               hint="use P-256, P-384 or P-521")
        return
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return
    raise WeakKeyError(f"the CSR's key type {type(public_key).__name__} is not accepted",
                       hint="use an ECDSA P-256/P-384, Ed25519 or RSA-2048+ key")
