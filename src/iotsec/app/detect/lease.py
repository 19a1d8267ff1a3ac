"""The detector lease: one row that names the serving process which follows the broker's
logs and runs the schedules. The holder renews it every few seconds; when it stops (a
crash, a kill), another process takes it once it has expired. Every change of holder
increases ``token``; the holder's writes check it in their own transaction (a fencing
token), so a process that lost the lease while paused cannot commit what it read."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError, IotsecError
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = ["LEASE", "LeaseInfo", "LeaseLostError", "acquire", "check_held", "holder_name",
           "lease_info", "release"]

LEASE = "detector"


class LeaseLostError(ConflictError):
    """The lease is no longer this process's: what it read is not committed."""

    code = "lease-lost"


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    holder: str
    token: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime


def holder_name() -> str:
    """This process, as the lease names it: host, pid and a random part (a pid is reused)."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(rt: Runtime, holder: str, ttl: float) -> int | None:
    """Take or renew the lease for ``ttl`` seconds; its token, or None while another
    process holds it."""
    now = ts(rt.now())
    expires = now + max(int(ttl), 1)
    lease = m.detect_lease.c
    try:
        with transaction(rt.engine) as conn:
            row = conn.execute(select(lease.holder, lease.token, lease.expires_at)
                               .where(lease.name == LEASE).with_for_update()).first()
            if row is None:
                conn.execute(insert(m.detect_lease).values(
                    name=LEASE, holder=holder, token=1, acquired_at=now, renewed_at=now,
                    expires_at=expires))
                return 1
            if row.holder == holder:
                conn.execute(update(m.detect_lease).where(lease.name == LEASE).values(
                    renewed_at=now, expires_at=expires))
                return int(row.token)
            if row.expires_at >= now:
                return None
            token = int(row.token) + 1
            conn.execute(update(m.detect_lease).where(lease.name == LEASE).values(
                holder=holder, token=token, acquired_at=now, renewed_at=now,
                expires_at=expires))
            return token
    except IotsecError:
        # Another process inserted the row first, or the store is busy: try next time.
        return None


def check_held(conn: Connection, holder: str, token: int, now: int, ttl: float) -> None:
    """Within ``conn``'s transaction: renew the lease, or raise :class:`LeaseLostError`
    when it is no longer ``holder``'s with ``token`` (the transaction is then rolled
    back)."""
    lease = m.detect_lease.c
    done = conn.execute(update(m.detect_lease).where(
        lease.name == LEASE, lease.holder == holder, lease.token == token,
        lease.expires_at >= now).values(renewed_at=now, expires_at=now + max(int(ttl), 1)))
    if done.rowcount != 1:
        raise LeaseLostError("the detector lease was taken over by another process",
                             hint="nothing is lost: the new holder reads from the same place")


def release(rt: Runtime, holder: str) -> None:
    """Give the lease up (on a clean stop), so another process takes it at once."""
    lease = m.detect_lease.c
    try:
        with transaction(rt.engine) as conn:
            conn.execute(update(m.detect_lease).where(
                lease.name == LEASE, lease.holder == holder).values(expires_at=0))
    except IotsecError:
        pass  # it expires by itself


def lease_info(rt: Runtime) -> LeaseInfo | None:
    lease = m.detect_lease.c
    with reading(rt.engine) as conn:
        row = conn.execute(select(m.detect_lease).where(lease.name == LEASE)).first()
    if row is None:
        return None
    return LeaseInfo(row.holder, int(row.token), from_ts(row.acquired_at),
                     from_ts(row.renewed_at), from_ts(row.expires_at))
