"""``iotsec ocsp check``: ask an OCSP responder about one certificate and verify the answer.

The certificate is named by its serial (looked up in the home's store, with its CA) or
given as a file (its issuer then from ``--issuer``, else from the store). The request
carries a fresh nonce; the answer must echo it, be signed by the CA or by a responder it
delegated to, and be current (:func:`iotsec.pki.ocsp_client.verify_response`).

Where it is asked: ``--url``; else the OCSP URL in the certificate's AIA extension; else
``IOTSEC_PUBLIC_URL``'s ``/ocsp``; else the home's own responder, in this process (the very
code ``iotsec serve`` answers with).
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import AuthorityInformationAccessOID
from sqlalchemy import select

from iotsec.app.pki.ocsp import answer
from iotsec.app.runtime import Runtime, utcnow
from iotsec.errors import (
    InvalidInputError,
    MalformedInputError,
    NotFoundError,
    OcspResponseError,
    OcspUnavailableError,
)
from iotsec.pki import x509 as enc
from iotsec.pki.ocsp import CertId
from iotsec.pki.ocsp_client import (
    MAX_RESPONSE_BYTES,
    CheckedStatus,
    build_request,
    new_nonce,
    verify_response,
)
from iotsec.pki.serial import format_serial, parse_serial
from iotsec.store import models as m
from iotsec.store.db import reading

__all__ = ["LOCAL", "TIMEOUT", "OcspCheck", "check_status", "load_certificate"]

#: Seconds a responder has to answer.
TIMEOUT = 10.0
#: What ``OcspCheck.url`` says when the home's own responder answered in-process.
LOCAL = "local"


@dataclass(frozen=True, slots=True)
class OcspCheck:
    """A verified answer and where it came from."""

    checked: CheckedStatus
    url: str


def load_certificate(data: bytes, what: str) -> x509.Certificate:
    """A certificate from PEM or DER bytes."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise MalformedInputError(f"{what} is not a PEM or DER certificate",
                                  hint="give the certificate file as PEM or DER") from None


def _from_store(rt: Runtime, serial: str) -> tuple[x509.Certificate, x509.Certificate]:
    c, a = m.certificates.c, m.authorities.c
    key = format_serial(parse_serial(serial))
    with reading(rt.engine) as conn:
        row = conn.execute(select(c.der, a.cert_der).join_from(
            m.certificates, m.authorities, c.authority_id == a.id).where(c.serial == key)).first()
    if row is None:
        raise NotFoundError(f"no certificate with serial {key} in this home",
                            hint="give the certificate with --cert FILE (and --issuer FILE)")
    return x509.load_der_x509_certificate(row.der), x509.load_der_x509_certificate(row.cert_der)


def _issuer_from_store(rt: Runtime, cert: x509.Certificate) -> x509.Certificate:
    with reading(rt.engine) as conn:
        ders = conn.execute(select(m.authorities.c.cert_der)).scalars().all()
    for der in ders:
        candidate = x509.load_der_x509_certificate(der)
        if candidate.subject == cert.issuer:
            try:
                cert.verify_directly_issued_by(candidate)
            except (ValueError, TypeError, InvalidSignature):  # not this one
                continue
            return candidate
    raise NotFoundError("the certificate's issuer is not a CA of this home",
                        hint="give the issuing CA's certificate with --issuer FILE")


def _aia_ocsp(cert: x509.Certificate) -> str | None:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for desc in aia:
        if desc.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
                desc.access_location, x509.UniformResourceIdentifier):
            return desc.access_location.value
    return None


def _checked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(f"{url[:200]!r} is not an http:// or https:// URL",
                                hint="give the responder as --url http://HOST[:PORT]/ocsp")
    return url


def _post(url: str, request: bytes) -> bytes:
    parts = urlsplit(_checked_url(url))
    conn_type = http.client.HTTPSConnection if parts.scheme == "https" else \
        http.client.HTTPConnection
    conn = conn_type(parts.hostname or "", parts.port, timeout=TIMEOUT)
    try:
        conn.request("POST", parts.path or "/", body=request,
                     headers={"Content-Type": "application/ocsp-request",
                              "Accept": "application/ocsp-response"})
        response = conn.getresponse()
        body = response.read(MAX_RESPONSE_BYTES + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise OcspUnavailableError(f"the OCSP responder {url} cannot be reached: "
                                   f"{type(exc).__name__}: {exc}"[:300]) from None
    finally:
        conn.close()
    ctype = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if response.status != 200 or ctype != "application/ocsp-response":
        raise OcspResponseError(f"the OCSP responder {url} answered HTTP {response.status} "
                                f"({ctype or 'no content type'}), not an OCSP response")
    return body


def check_status(rt: Runtime | None, *, serial: str | None = None,
                 cert_data: bytes | None = None, issuer_data: bytes | None = None,
                 url: str | None = None, nonce: bool = True,
                 now: datetime | None = None) -> OcspCheck:
    """Ask about one certificate (``serial`` in ``rt``'s store, or the PEM/DER
    ``cert_data``) and return the verified answer."""
    if url is not None:
        _checked_url(url)
    if (serial is None) == (cert_data is None):
        raise InvalidInputError("name the certificate by its SERIAL or give --cert FILE, "
                                "not both", hint="e.g. 'iotsec ocsp check 1A2B...'")
    if serial is not None:
        if rt is None:
            raise InvalidInputError("a serial is looked up in the home's store",
                                    hint="give --cert FILE and --issuer FILE instead")
        cert, issuer = _from_store(rt, serial)
    else:
        assert cert_data is not None
        cert = load_certificate(cert_data, "--cert")
        if issuer_data is not None:
            issuer = load_certificate(issuer_data, "--issuer")
        elif rt is not None:
            issuer = _issuer_from_store(rt, cert)
        else:
            raise InvalidInputError("the certificate's issuer is unknown",
                                    hint="give the issuing CA's certificate with --issuer")
    cert_id = CertId.for_certificate(issuer.subject.public_bytes(),
                                     enc.spki_der(issuer.public_key()), cert.serial_number)
    value = new_nonce() if nonce else None
    request = build_request(cert_id, value)
    target = url or _aia_ocsp(cert) or (
        f"{rt.settings.public_base}/ocsp" if rt is not None and rt.settings.public_base
        else None)
    if target is None:
        if rt is None:
            raise InvalidInputError("no OCSP responder to ask",
                                    hint="give --url http://HOST[:PORT]/ocsp")
        body, target = answer(rt, request).der, LOCAL
    else:
        body = _post(target, request)
    moment = now or (rt.now() if rt is not None else utcnow())
    return OcspCheck(verify_response(body, ca=issuer, cert_id=cert_id, nonce=value,
                                     now=moment), target)
