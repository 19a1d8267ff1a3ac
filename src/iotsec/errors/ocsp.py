"""Errors: OCSP (RFC 6960), as a responder refuses a request and as a client refuses an
answer."""

from __future__ import annotations

from iotsec.errors.base import PkiError

__all__ = ["OcspRequestError", "OcspResponseError", "OcspRotationBusyError",
           "OcspUnavailableError"]


class OcspRequestError(PkiError):
    """An OCSP request that is not one RFC 6960 allows (bad DER, too large, too many
    certificates, an unsupported hash algorithm, an oversized nonce): the responder answers
    ``malformedRequest``."""

    status = 400
    code = "ocsp-request"
    default_hint = ("send a DER OCSPRequest (RFC 6960 4.1) with SHA-1 or SHA-256 CertIDs, "
                    "e.g. from 'openssl ocsp' or 'iotsec ocsp check'")


class OcspResponseError(PkiError):
    """An OCSP answer a client must not trust: not a successful response, a bad signature, a
    responder the CA did not authorise, a nonce or a time window that does not match."""

    status = 502
    code = "ocsp-response"
    default_hint = ("check the responder URL (--url) and that it answers for the CA that "
                    "issued the certificate")


class OcspUnavailableError(PkiError):
    """The OCSP responder could not be reached."""

    status = 502
    code = "ocsp-unavailable"
    default_hint = "check the responder URL (--url) and that 'iotsec serve' runs"


class OcspRotationBusyError(PkiError):
    """Another serving process is replacing the OCSP responder certificate right now (the
    responder answers ``tryLater``)."""

    status = 503
    code = "ocsp-rotation-busy"
    default_hint = "ask again in a moment"
