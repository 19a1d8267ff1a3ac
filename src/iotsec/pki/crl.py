"""Certificate revocation lists (RFC 5280 section 5), built for fleets of millions.

Each revoked certificate's CRL entry is encoded once, when it is revoked, and kept in the
store. Publishing a CRL is then a streamed byte join of those entries, one signature and
three headers: no per-entry Python objects, so a million entries cost seconds, not minutes.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from datetime import datetime

from iotsec.errors import InvalidInputError
from iotsec.pki import der
from iotsec.pki import x509 as enc
from iotsec.pki.ca import Authority

__all__ = ["RevocationReason", "build_crl", "encode_entry"]


class RevocationReason(enum.IntEnum):
    """CRLReason codes (RFC 5280 5.3.1). ``certificateHold`` and ``removeFromCRL`` are not
    offered: a revocation in iotsec is final."""

    unspecified = 0
    keyCompromise = 1
    cACompromise = 2
    affiliationChanged = 3
    superseded = 4
    cessationOfOperation = 5
    privilegeWithdrawn = 9
    aACompromise = 10

    @classmethod
    def parse(cls, text: str) -> RevocationReason:
        stripped = text.strip()
        if re.fullmatch(r"[0-9]{1,2}", stripped):
            if int(stripped) in {m.value for m in cls}:
                return cls(int(stripped))
        else:
            wanted = stripped.replace("-", "").replace("_", "").lower()
            for member in cls:
                if member.name.lower() == wanted:
                    return member
        raise InvalidInputError(f"unknown revocation reason {text[:40]!r}",
                                hint="use one of: " + ", ".join(m.name for m in cls))


def encode_entry(serial: int, revoked_at: datetime, reason: RevocationReason) -> bytes:
    """One revokedCertificates element. RFC 5280 5.3.1: a reasonCode of ``unspecified``
    SHOULD be absent, so that entry carries no extensions at all."""
    parts = [der.integer(serial), der.time(revoked_at)]
    if reason is not RevocationReason.unspecified:
        reason_ext = enc.extension(enc.OID_REASON_CODE, der.enumerated(int(reason)))
        parts.append(der.sequence(reason_ext))
    return der.sequence(*parts)


def build_crl(
    ca: Authority,
    entries: Iterable[bytes],
    *,
    number: int,
    this_update: datetime,
    next_update: datetime,
) -> bytes:
    """Sign a v2 CRL over pre-encoded entries (see :func:`encode_entry`).

    ``entries`` may be a generator over a database cursor: it is consumed once into a single
    buffer, so peak memory is about the size of the CRL plus one fetch batch. Refused when
    ``this_update`` is before the CA's notBefore (:meth:`Authority.check_clock`).
    """
    ca.check_clock(this_update)
    body = bytearray()
    for entry in entries:
        body += entry
    extensions = der.explicit(0, der.sequence(
        enc.authority_key_identifier(ca.key_id),
        enc.extension(enc.OID_CRL_NUMBER, der.integer(number)),
    ))
    key_type = ca.signer.key_type
    head = (
        der.integer(1)  # v2
        + enc.signature_algorithm(key_type)
        + ca.subject
        + der.time(this_update)
        + der.time(next_update)
    )
    # RFC 5280 5.1.2.6: with no revoked certificates the field is absent, not empty.
    revoked_header = bytes((der.SEQUENCE,)) + der.length(len(body)) if body else b""
    content_len = len(head) + len(revoked_header) + len(body) + len(extensions)
    tbs = bytearray(bytes((der.SEQUENCE,)) + der.length(content_len))
    tbs += head
    tbs += revoked_header
    tbs += body
    del body
    tbs += extensions
    tbs_bytes = bytes(tbs)
    del tbs
    signature = der.bit_string(ca.signer.sign(tbs_bytes))
    alg = enc.signature_algorithm(key_type)
    outer_len = len(tbs_bytes) + len(alg) + len(signature)
    return b"".join((bytes((der.SEQUENCE,)), der.length(outer_len), tbs_bytes, alg, signature))
