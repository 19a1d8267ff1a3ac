"""Where iotsec's CRLs and CA certificates are published, as the certificates and CRLs it
signs name them.

Every CRL URL derives from the public URL of the complete CRL: ``IOTSEC_CRL_URL`` (e.g.
``http://pki.example.com/crl``), else ``<IOTSEC_PUBLIC_URL>/crl`` (the public plain-HTTP
listener's). Its delta CRLs are at ``<that>/delta`` and the CRL of partition ``k`` at
``<that>/p/<k>``, the paths ``iotsec serve`` answers. Every pointer names the CA that signs
the CRL by its store id (``?ca=<id>``), so a certificate of a retiring CA keeps naming its
own CA's CRLs after ``iotsec ca rotate`` (ADR 0017); the un-suffixed paths still answer and
mean the active CA. The certificate of a CA is at ``<IOTSEC_PUBLIC_URL>/ca/<id>.der``
(AIA caIssuers). Without either setting no URL is known: CRLs carry no freshestCRL and
certificates no CRL distribution point.
"""

from __future__ import annotations

from iotsec.config import Settings

__all__ = ["ca_certificate_url", "complete_crl_url", "delta_crl_url",
           "legacy_partition_crl_url", "partition_crl_url", "partitions_enabled"]


def _base(settings: Settings) -> str | None:
    if settings.crl_url is not None:
        return settings.crl_url.rstrip("/")
    public = settings.public_base
    return f"{public}/crl" if public else None


def _of(url: str, authority_id: int) -> str:
    return f"{url}{'&' if '?' in url else '?'}ca={authority_id}"


def complete_crl_url(settings: Settings, authority_id: int) -> str | None:
    """The public URL of the complete CRL of the CA ``authority_id``, if one is known."""
    base = _base(settings)
    return None if base is None else _of(base, authority_id)


def delta_crl_url(settings: Settings, authority_id: int) -> str | None:
    """The public URL of the delta CRLs of the CA ``authority_id`` (the freshestCRL of
    its complete CRLs), if one is known."""
    base = _base(settings)
    return None if base is None else _of(base + "/delta", authority_id)


def partition_crl_url(settings: Settings, partition: int, authority_id: int) -> str | None:
    """The public URL of the CRL of ``partition`` of the issuing CA ``authority_id`` (the
    CDP of its certificates and the issuingDistributionPoint of its CRL), if one is
    known."""
    base = _base(settings)
    return None if base is None else _of(f"{base}/p/{partition}", authority_id)


def legacy_partition_crl_url(settings: Settings, partition: int) -> str | None:
    """The URL of ``partition`` without a CA id, which certificates issued before the
    pointers named their CA carry: partition CRLs name it too, so those certificates stay
    in their scope."""
    base = _base(settings)
    return None if base is None else f"{base}/p/{partition}"


def ca_certificate_url(settings: Settings, authority_id: int) -> str | None:
    """The public URL of the certificate of the CA ``authority_id`` (AIA caIssuers), if
    ``IOTSEC_PUBLIC_URL`` is set."""
    public = settings.public_base
    return f"{public}/ca/{authority_id}.der" if public else None


def partitions_enabled(settings: Settings) -> bool:
    """Whether new device certificates are assigned a CRL partition: more than one
    partition, and a public URL their CDP can name."""
    return settings.crl_partitions > 1 and _base(settings) is not None
