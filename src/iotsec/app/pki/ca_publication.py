"""What the pointers in a certificate name, by its CA's store id: the CA's complete CRL
(``/crl?ca=<id>``), its delta CRL (``/crl/delta?ca=<id>``), its partition CRLs
(``/crl/p/<k>?ca=<id>``) and its certificate (``/ca/<id>.der``), for any CA that is not
expired (active, retiring or retired: RFC 5280 5 asks a CRL issuer to keep publishing while
its certificates may be relied on). A serving process keeps each answer in memory like the
active CA's (:func:`iotsec.app.pki.crl.served`), under a key naming the id.
"""

from __future__ import annotations

from iotsec.app.pki.authorities import AuthorityRecord, authority_crl, get_authority
from iotsec.app.pki.crl import PublishedCrl, current_delta_crl, load_served
from iotsec.app.pki.partition_crl import current_partition_crl, partition_key
from iotsec.app.runtime import Runtime, Slot
from iotsec.errors import NotFoundError

__all__ = ["ca_certificate", "complete_key", "delta_key", "load_served_complete",
           "load_served_delta_of", "load_served_partition_of", "served_ca_certificate"]

_CERTS: Slot[dict[int, bytes]] = Slot("publication.ca-certificates")


def complete_key(authority_id: int) -> str:
    """The key the complete CRL of CA ``authority_id`` is kept under for ``served``."""
    return f"id:{authority_id}"


def delta_key(authority_id: int) -> str:
    """The key the delta CRL of CA ``authority_id`` is kept under for ``served``."""
    return f"delta:id:{authority_id}"


def _publishing(rt: Runtime, authority_id: int) -> AuthorityRecord:
    """CA ``authority_id``, refused when it publishes no CRL: unknown, a cross
    certificate (its subject's CRL is the new root's), or expired."""
    record = get_authority(rt, authority_id, counts=False)
    if record.role == "cross":
        raise NotFoundError(f"CA {authority_id} is a cross certificate: the CRLs of its "
                            "subject are the new root's",
                            hint="ask for the root's CRL ('iotsec ca list' shows its id)")
    if record.expired(rt.now()):
        raise NotFoundError(f"CA {authority_id} expired on {record.not_after:%Y-%m-%d}: it "
                            "publishes no CRL any more (its certificates expired with it)")
    return record


def load_served_complete(rt: Runtime, authority_id: int) -> PublishedCrl:
    """The complete CRL of CA ``authority_id`` (:func:`authority_crl`), kept for
    ``served(rt, complete_key(authority_id))``."""
    return load_served(rt, complete_key(authority_id), lambda: authority_crl(rt, authority_id))


def load_served_delta_of(rt: Runtime, authority_id: int) -> PublishedCrl:
    """The delta CRL of CA ``authority_id``, kept for ``served(rt, delta_key(...))``."""
    def load() -> PublishedCrl:
        _publishing(rt, authority_id)
        return current_delta_crl(rt, authority_id=authority_id)
    return load_served(rt, delta_key(authority_id), load)


def load_served_partition_of(rt: Runtime, partition: int, authority_id: int) -> PublishedCrl:
    """The CRL of ``partition`` of the issuing CA ``authority_id``, kept for
    ``served(rt, partition_key(partition, authority_id))``."""
    def load() -> PublishedCrl:
        _publishing(rt, authority_id)
        return current_partition_crl(rt, partition, authority_id=authority_id)
    return load_served(rt, partition_key(partition, authority_id), load)


def served_ca_certificate(rt: Runtime, authority_id: int) -> bytes | None:
    """The DER certificate of CA ``authority_id`` if this process read it before (a CA
    certificate never changes under its id). No I/O."""
    return (rt.get(_CERTS) or {}).get(authority_id)


def ca_certificate(rt: Runtime, authority_id: int) -> bytes:
    """The DER certificate of CA ``authority_id`` (any state: a certificate is public),
    kept for :func:`served_ca_certificate`."""
    der = get_authority(rt, authority_id, counts=False).der
    held = rt.get_or_put(_CERTS, dict)
    if len(held) > 10_000:
        held.clear()
    held[authority_id] = der
    return der
