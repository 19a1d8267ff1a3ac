"""Partition CRLs (``IOTSEC_CRL_PARTITIONS``), for fleets too large for one CRL download.

Each device certificate issued while partitioning is on is assigned a partition,
``serial mod N`` (:func:`iotsec.pki.crl.crl_partition`), kept in its row; its CDP names
that partition's URL of its CA (``<IOTSEC_CRL_URL>/p/<k>?ca=<id>``). The partition's CRL
carries a critical issuingDistributionPoint (RFC 5280 5.2.5) with the same name (and the
URL without the CA id, which certificates issued before the pointers named their CA carry)
and onlyContainsUserCerts,
and lists only that partition's revocations, so a relying party downloads about 1/N of
the complete CRL. Each partition is a scope of its own, with its own CRL number sequence
(a row of ``partition_crls``, created on first use and locked while it is re-signed, so
concurrent servers never publish two CRLs with one number).

The complete CRL stays: it lists every revocation and is what the broker uses.
Certificates issued before partitioning was turned on have no partition and no partition
CDP: they are on the complete CRL only. A certificate keeps its partition, so the number
of partitions may be raised later, never lowered.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Row, exists, insert, select, update

from iotsec.app.pki.crl import (
    FETCH_BATCH,
    CrlAuthority,
    PublishedCrl,
    crl_authority,
    load_served,
)
from iotsec.app.pki.crl_urls import legacy_partition_crl_url, partition_crl_url
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError, InvalidInputError, NotFoundError
from iotsec.pki.crl import CrlScope, build_crl
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = ["MAX_PARTITION", "current_partition_crl", "load_served_partition", "partition_key"]

#: The highest partition number there can be (``IOTSEC_CRL_PARTITIONS`` is at most 4096).
MAX_PARTITION = 4095


def partition_key(partition: int, authority_id: int | None = None) -> str:
    """The key a serving process keeps the partition's CRL under (see ``served``): of the
    active issuing CA, or of the CA ``authority_id``."""
    return f"p{partition}:{'issuing' if authority_id is None else authority_id}"


def _check(rt: Runtime, partition: int, ca: CrlAuthority) -> tuple[str, str]:
    """The partition's URL of CA ``ca`` and its URL without a CA id."""
    count = rt.settings.crl_partitions
    if count <= 1:
        raise NotFoundError("CRL partitioning is off",
                            hint="set IOTSEC_CRL_PARTITIONS to the number of partitions "
                            "(with IOTSEC_CRL_URL), or fetch the complete CRL")
    if not 0 <= partition < count:
        raise NotFoundError(f"no CRL partition {partition}",
                            hint=f"partitions are numbered 0 to {count - 1}")
    if ca.role != "issuing":
        raise NotFoundError(f"CA {ca.id} is not an issuing CA: it has no CRL partitions",
                            hint="name an issuing CA ('iotsec ca list'), or fetch its "
                            "complete CRL")
    url = partition_crl_url(rt.settings, partition, ca.id)
    legacy = legacy_partition_crl_url(rt.settings, partition)
    if url is None or legacy is None:
        raise InvalidInputError("CRL partitions need the public CRL URL",
                                hint="set IOTSEC_CRL_URL (certificates name their partition "
                                "under it)")
    return url, legacy


def _published(row: Row[Any]) -> PublishedCrl:
    return PublishedCrl(der=row.der, number=row.number, this_update=from_ts(row.this_update),
                        next_update=from_ts(row.next_update))


def _fresh(conn: Connection, row: Row[Any] | None, authority_id: int, partition: int,
           now: int, refresh: int) -> bool:
    if row is None or row.der is None or row.stale or not (
            row.this_update <= now < row.this_update + refresh):
        return False
    c = m.certificates.c
    return not conn.execute(select(exists().where(
        c.authority_id == authority_id, c.crl_partition == partition,
        c.revoked_at > row.this_update, c.revoked_at <= now))).scalar()


def _entries(conn: Connection, authority_id: int, partition: int, now: int) -> Iterator[bytes]:
    c = m.certificates.c
    result = conn.execute(
        select(c.crl_entry).where(c.authority_id == authority_id, c.crl_partition == partition,
                                  c.revoked_at <= now, c.not_after > now)
        .execution_options(stream_results=True, max_row_buffer=FETCH_BATCH))
    yield from result.scalars()


def _ensure_row(rt: Runtime, authority_id: int, partition: int) -> None:
    """Create the partition's CRL row on first use (another server may do it at the same
    moment: one insert wins, the other finds the row)."""
    p = m.partition_crls.c
    with reading(rt.engine) as conn:
        found = conn.execute(select(p.number).where(
            p.authority_id == authority_id, p.partition == partition)).first()
    if found is not None:
        return
    try:
        with transaction(rt.engine) as conn:
            conn.execute(insert(m.partition_crls).values(
                authority_id=authority_id, partition=partition, number=0, this_update=0,
                next_update=0, stale=True, der=None))
    except ConflictError:
        pass


def current_partition_crl(rt: Runtime, partition: int, *, force: bool = False,
                          authority_id: int | None = None) -> PublishedCrl:
    """The issuing CA's CRL of ``partition``, re-signed only when needed (or when
    ``force``). ``authority_id`` names the CA instead of the active issuing CA."""
    ca = crl_authority(rt, "issuing", authority_id)
    url, legacy = _check(rt, partition, ca)
    refresh = rt.settings.crl_refresh_hours * 3600
    moment = rt.now().replace(microsecond=0)
    now = ts(moment)
    p = m.partition_crls.c
    query = select(m.partition_crls).where(p.authority_id == ca.id, p.partition == partition)
    if not force:
        with reading(rt.engine) as conn:
            row = conn.execute(query).first()
            if _fresh(conn, row, ca.id, partition, now, refresh):
                assert row is not None
                return _published(row)
    authority = ca.load()
    _ensure_row(rt, ca.id, partition)
    with transaction(rt.engine) as conn:
        row = conn.execute(query.with_for_update()).first()
        assert row is not None  # rows are never deleted
        if not force and _fresh(conn, row, ca.id, partition, now, refresh):
            return _published(row)
        number = row.number + 1
        next_update = moment + timedelta(hours=rt.settings.crl_lifetime_hours)
        der = build_crl(authority, _entries(conn, ca.id, partition, now), number=number,
                        this_update=moment, next_update=next_update,
                        scope=CrlScope(partition_url=url, only_user_certs=True,
                                       partition_aliases=(legacy,)))
        conn.execute(update(m.partition_crls).where(
            p.authority_id == ca.id, p.partition == partition).values(
            number=number, this_update=now, next_update=ts(next_update), stale=False, der=der))
    return PublishedCrl(der=der, number=number, this_update=moment, next_update=next_update)


def load_served_partition(rt: Runtime, partition: int,
                          authority_id: int | None = None) -> PublishedCrl:
    """:func:`current_partition_crl`, kept for
    ``served(rt, partition_key(partition, authority_id))``."""
    return load_served(rt, partition_key(partition, authority_id),
                       lambda: current_partition_crl(rt, partition, authority_id=authority_id))


