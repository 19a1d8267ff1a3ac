"""CRLReason codes (RFC 5280 5.3.1): what a revocation records and a CRL entry carries.

Kept apart from the CRL builder (:mod:`iotsec.pki.crl`, which re-exports it) so that code
reading certificate records does not import the DER and X.509 encoders for an enum.
"""

from __future__ import annotations

import enum
import re

from iotsec.errors import InvalidInputError

__all__ = ["RevocationReason"]


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
