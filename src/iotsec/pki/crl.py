"""Certificate revocation lists (RFC 5280 section 5), built for fleets of millions.

Each revoked certificate's CRL entry is encoded once, when it is revoked, and kept in the
store. Publishing a CRL is then a streamed byte join of those entries, one signature and
three headers: no per-entry Python objects, so a million entries cost seconds, not minutes.

The same builder signs the three kinds of CRL iotsec publishes (:class:`CrlScope`): the
complete CRL (with freshestCRL, RFC 5280 5.2.6, naming where its delta CRLs are), a delta
CRL (deltaCRLIndicator, 5.2.4, critical, naming the complete CRL it completes) and a
partition CRL (issuingDistributionPoint, 5.2.5, critical, naming the partition's URL).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from iotsec.errors import InvalidInputError
from iotsec.pki import der
from iotsec.pki import x509 as enc
from iotsec.pki.ca import Authority
from iotsec.pki.reasons import RevocationReason

__all__ = [
    "CERTIFICATE_HOLD",
    "OID_DELTA_CRL_INDICATOR",
    "OID_FRESHEST_CRL",
    "OID_ISSUING_DISTRIBUTION_POINT",
    "CrlScope",
    "RevocationReason",
    "build_crl",
    "crl_partition",
    "encode_entry",
    "encode_hold_entry",
    "scope_extensions"
]

OID_DELTA_CRL_INDICATOR = "2.5.29.27"
OID_ISSUING_DISTRIBUTION_POINT = "2.5.29.28"
OID_FRESHEST_CRL = "2.5.29.46"
# A URL that goes into a distribution point name: printable ASCII, as an IA5String holds.
_URL = re.compile(r"[\x21-\x7e]{1,2000}")


def crl_partition(serial: int, partitions: int) -> int:
    """The CRL partition of the certificate ``serial`` among ``partitions``: the serial
    modulo their number. Serials are random (RFC 5280 4.1.2.2 with 64+ random bits), so
    partitions fill evenly, and the partition is known before the certificate is signed."""
    if partitions < 1 or serial < 0:
        raise InvalidInputError("CRL partitions need a positive count and serial",
                                hint="set IOTSEC_CRL_PARTITIONS to 2 or more")
    return serial % partitions


def encode_entry(serial: int, revoked_at: datetime, reason: RevocationReason) -> bytes:
    """One revokedCertificates element. RFC 5280 5.3.1: a reasonCode of ``unspecified``
    SHOULD be absent, so that entry carries no extensions at all."""
    parts = [der.integer(serial), der.time(revoked_at)]
    if reason is not RevocationReason.unspecified:
        reason_ext = enc.extension(enc.OID_REASON_CODE, der.enumerated(int(reason)))
        parts.append(der.sequence(reason_ext))
    return der.sequence(*parts)


#: CRLReason certificateHold (RFC 5280 5.3.1): only on the broker's own CRL, never on a
#: published one (see :class:`CrlScope`).
CERTIFICATE_HOLD = 6


def encode_hold_entry(serial: int, since: datetime) -> bytes:
    """A revokedCertificates element with reason certificateHold: a suspension the next
    CRL of the same scope lifts by leaving it out."""
    reason_ext = enc.extension(enc.OID_REASON_CODE, der.enumerated(CERTIFICATE_HOLD))
    return der.sequence(der.integer(serial), der.time(since), der.sequence(reason_ext))


def _url(uri: str) -> bytes:
    if not _URL.fullmatch(uri):
        raise InvalidInputError(f"not a distribution point URL: {uri[:60]!r}",
                                hint="use an http:// or https:// URL in printable ASCII")
    return uri.encode("ascii")


def _point_name(uri: str, *more: str) -> bytes:
    """DistributionPointName ``fullName [0] GeneralNames`` holding the URIs ``uri`` and
    ``more``, as the ``distributionPoint [0]`` of a DistributionPoint or an
    IssuingDistributionPoint. Each name's bytes equal those in a certificate's CDP
    (:func:`iotsec.pki.x509.crl_distribution_point`), which OpenSSL compares when it checks
    a CRL's scope (a match of any name of the one with any of the other)."""
    names = b"".join(der.implicit_primitive(6, _url(u)) for u in (uri, *more))
    return der.explicit(0, der.explicit(0, names))


@dataclass(frozen=True, slots=True)
class CrlScope:
    """What a CRL covers, and the extensions that say so.

    - ``freshest_url``: a complete CRL whose delta CRLs are published there (freshestCRL,
      RFC 5280 5.2.6, non-critical).
    - ``delta_of``: a delta CRL completing the complete CRL of that number
      (deltaCRLIndicator's BaseCRLNumber, RFC 5280 5.2.4, critical).
    - ``partition_url``: a partition CRL, whose issuingDistributionPoint (RFC 5280 5.2.5,
      critical) names that URL, as the CDP of the certificates it covers does;
      ``only_user_certs`` sets onlyContainsUserCerts (no CA certificate is in the
      partition). ``partition_aliases`` are further names of the same partition in its
      issuingDistributionPoint (the URL certificates named before the pointers named
      their CA).
    """

    freshest_url: str | None = None
    delta_of: int | None = None
    partition_url: str | None = None
    only_user_certs: bool = False
    #: The broker's own CRL (never published): an issuingDistributionPoint holding only
    #: onlyContainsUserCerts makes it a scope of its own, with its own number sequence. It
    #: lists the public entries plus certificateHold entries for suspended devices.
    broker_only: bool = False
    partition_aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.delta_of is not None and self.delta_of < 0:
            raise InvalidInputError("a base CRL number is never negative",
                                    hint="name the number of a published complete CRL")
        if self.broker_only and (self.partition_url is not None or self.delta_of is not None
                                 or self.freshest_url is not None):
            raise InvalidInputError("the broker's CRL is a complete CRL of its own scope",
                                    hint="set broker_only alone")
        if (self.only_user_certs or self.partition_aliases) and self.partition_url is None:
            raise InvalidInputError("onlyContainsUserCerts and aliases need a partition URL",
                                    hint="set partition_url as well")


def scope_extensions(scope: CrlScope) -> tuple[bytes, ...]:
    """The crlExtensions that ``scope`` adds after the AKI and the CRL number."""
    out: list[bytes] = []
    if scope.delta_of is not None:
        out.append(enc.extension(OID_DELTA_CRL_INDICATOR, der.integer(scope.delta_of),
                                 critical=True))
    if scope.partition_url is not None:
        fields = [_point_name(scope.partition_url, *scope.partition_aliases)]
        if scope.only_user_certs:
            # onlyContainsUserCerts [1] IMPLICIT BOOLEAN: DER writes TRUE as 0xFF.
            fields.append(der.implicit_primitive(1, b"\xff"))
        out.append(enc.extension(OID_ISSUING_DISTRIBUTION_POINT, der.sequence(*fields),
                                 critical=True))
    if scope.broker_only:
        out.append(enc.extension(OID_ISSUING_DISTRIBUTION_POINT,
                                 der.sequence(der.implicit_primitive(1, b"\xff")),
                                 critical=True))
    if scope.freshest_url is not None:
        point = der.sequence(_point_name(scope.freshest_url))
        out.append(enc.extension(OID_FRESHEST_CRL, der.sequence(point)))
    return tuple(out)


def build_crl(
    ca: Authority,
    entries: Iterable[bytes],
    *,
    number: int,
    this_update: datetime,
    next_update: datetime,
    scope: CrlScope | None = None,
) -> bytes:
    """Sign a v2 CRL over pre-encoded entries (see :func:`encode_entry`).

    ``entries`` may be a generator over a database cursor: it is consumed once into a single
    buffer, so peak memory is about the size of the CRL plus one fetch batch. Refused when
    ``this_update`` is before the CA's notBefore (:meth:`Authority.check_clock`). ``scope``
    makes it a complete CRL with deltas, a delta CRL or a partition CRL (:class:`CrlScope`).
    """
    ca.check_clock(this_update)
    extra = scope_extensions(scope) if scope is not None else ()
    if scope is not None and scope.delta_of is not None and scope.delta_of >= number:
        # RFC 5280 5.2.4 with 5.2.3: a delta CRL comes after the complete CRL it completes,
        # in the one number sequence they share.
        raise InvalidInputError(f"delta CRL number {number} does not follow its base "
                                f"{scope.delta_of}", hint="take the next number of the CA's "
                                "CRL sequence")
    body = bytearray()
    for entry in entries:
        body += entry
    extensions = der.explicit(0, der.sequence(
        enc.authority_key_identifier(ca.key_id),
        enc.extension(enc.OID_CRL_NUMBER, der.integer(number)),
        *extra,
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
