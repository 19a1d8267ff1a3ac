"""Where iotsec's CRLs are published, as the certificates and CRLs it signs name them.

Every URL derives from the public URL of the complete CRL: ``IOTSEC_CRL_URL`` (e.g.
``http://pki.example.com/crl``), else ``<IOTSEC_PUBLIC_URL>/crl`` (the public plain-HTTP
listener's). Its delta CRLs are at ``<that>/delta`` and the CRL of partition ``k`` at
``<that>/p/<k>``, the paths ``iotsec serve`` answers. The root CA's CRLs add ``?ca=root``.
Without either setting no URL is known: CRLs carry no freshestCRL and certificates no CRL
distribution point.
"""

from __future__ import annotations

from iotsec.config import Settings

__all__ = ["complete_crl_url", "delta_crl_url", "partition_crl_url", "partitions_enabled"]


def _base(settings: Settings) -> str | None:
    if settings.crl_url is not None:
        return settings.crl_url.rstrip("/")
    public = settings.public_base
    return f"{public}/crl" if public else None


def _with_role(url: str, role: str) -> str:
    return url if role == "issuing" else f"{url}?ca={role}"


def complete_crl_url(settings: Settings, role: str = "issuing") -> str | None:
    """The public URL of the complete CRL of the CA of ``role``, if one is known."""
    base = _base(settings)
    return None if base is None else _with_role(base, role)


def delta_crl_url(settings: Settings, role: str = "issuing") -> str | None:
    """The public URL of the delta CRLs of the CA of ``role`` (the freshestCRL of its
    complete CRLs), if one is known."""
    base = _base(settings)
    return None if base is None else _with_role(base + "/delta", role)


def partition_crl_url(settings: Settings, partition: int) -> str | None:
    """The public URL of the issuing CA's CRL of ``partition`` (the CDP of its certificates
    and the issuingDistributionPoint of its CRL), if one is known."""
    base = _base(settings)
    return None if base is None else f"{base}/p/{partition}"


def partitions_enabled(settings: Settings) -> bool:
    """Whether new device certificates are assigned a CRL partition: more than one
    partition, and a public URL their CDP can name."""
    return settings.crl_partitions > 1 and _base(settings) is not None
