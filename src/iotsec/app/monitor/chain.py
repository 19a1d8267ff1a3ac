"""Signed checkpoints of the event chain, and its verification.

A checkpoint signs the chain's position and head hash with the audit key, a key in custody
(a file key encrypted under the home's passphrase, or a key in the PKCS#11 token) that is
made at the first checkpoint and never stored in the database. ``iotsec serve`` makes one
every ``IOTSEC_EVENT_CHECKPOINT_SECONDS`` when events were added; ``iotsec events
checkpoint`` makes one at once (for hosts without a server: run it from a timer).

Verification walks the whole chain in position order and checks every checkpoint's
signature with the public key of the key in custody, never with anything in the store.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from sqlalchemy import Connection, func, insert, select

from iotsec.app.events import chain_head, lock_chain
from iotsec.app.monitor.chain_walk import PARALLEL_FROM, walk_chain
from iotsec.app.runtime import Runtime
from iotsec.errors import KeyCustodyError, NotFoundError
from iotsec.eventlog.chain import (
    ChainReport,
    Checkpoint,
    checkpoint_message,
    join_segments,
    plan_checkpoints,
    verify_signature,
)
from iotsec.pki.keys import KeyType, Signer
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import ts

__all__ = ["AUDIT_KEY", "CheckpointResult", "checkpoint", "checkpoint_loop", "verify"]

log = logging.getLogger("iotsec.events")

#: The label of the audit key in custody.
AUDIT_KEY = "audit-log"
@dataclass(frozen=True, slots=True)
class CheckpointResult:
    seq: int
    hash: str
    #: False when the newest checkpoint already covered every event (nothing was signed).
    made: bool


def _audit_signer(rt: Runtime) -> Signer:
    keys = rt.keys
    if keys.exists(AUDIT_KEY):
        return keys.load(AUDIT_KEY)
    return keys.generate(AUDIT_KEY, KeyType.ECDSA_P256)


def _routine_since(conn: Connection, seq: int) -> bool:
    """Whether every event after position ``seq`` is the audit key's own use (the record
    of the previous checkpoint's signature): then there is nothing new to sign."""
    e = m.events.c
    other = conn.execute(
        select(func.count()).select_from(m.events).where(
            e.seq > seq, ~((e.kind == "key.use") & (e.subject == AUDIT_KEY)))).scalar_one()
    return int(other) == 0


def checkpoint(rt: Runtime) -> CheckpointResult:
    """Sign the chain's current head, unless the newest checkpoint covers every event but
    the record of its own signature."""
    rt.events.flush()
    signer = _audit_signer(rt)
    with transaction(rt.engine) as conn:
        lock_chain(conn)
        seq, head = chain_head(conn)
        last = conn.execute(select(m.event_checkpoints.c.seq, m.event_checkpoints.c.hash)
                            .order_by(m.event_checkpoints.c.seq.desc()).limit(1)).first()
        if seq == 0 or (last is not None and last.seq <= seq and _routine_since(conn, last.seq)):
            return CheckpointResult(seq=int(last.seq) if last else 0,
                                    hash=str(last.hash) if last else head, made=False)
        at = ts(rt.now())
        signature = signer.sign(checkpoint_message(seq, head, at))
        conn.execute(insert(m.event_checkpoints).values(
            seq=seq, hash=head, at=at, key_label=AUDIT_KEY, signature=signature))
    return CheckpointResult(seq=seq, hash=head, made=True)


def checkpoint_loop(rt: Runtime, stop: threading.Event) -> None:
    """For ``iotsec serve``: :func:`checkpoint` every ``event_checkpoint_seconds``."""
    interval = rt.settings.event_checkpoint_seconds
    while interval > 0 and not stop.wait(interval):
        try:
            checkpoint(rt)
        except Exception:  # keep going; the failure is in the log
            log.exception("could not sign an event-log checkpoint")


def verify(rt: Runtime, *, parallel_from: int = PARALLEL_FROM) -> ChainReport:
    """Verify the whole chain and every checkpoint (as
    :func:`iotsec.eventlog.chain.verify_chain` does); a chain of ``parallel_from`` entries
    or more is walked in stretches at once (:mod:`iotsec.app.monitor.chain_walk`)."""
    rt.events.flush()
    with reading(rt.engine) as conn:
        points = [Checkpoint(r.seq, r.hash, r.at, r.key_label, r.signature)
                  for r in conn.execute(select(m.event_checkpoints)
                                        .order_by(m.event_checkpoints.c.seq))]
        unchained = int(conn.execute(select(func.count()).select_from(m.events)
                                     .where(m.events.c.seq.is_(None))).scalar_one())
    public_keys: dict[str, CertificateIssuerPublicKeyTypes | None] = {}

    def check(point: Checkpoint) -> bool:
        if point.key_label not in public_keys:
            try:
                public_keys[point.key_label] = rt.keys.load(point.key_label).public_key()
            except (KeyCustodyError, NotFoundError):
                public_keys[point.key_label] = None
        key = public_keys[point.key_label]
        return key is not None and verify_signature(
            key, point.signature, checkpoint_message(point.seq, point.hash, point.at))

    plan = plan_checkpoints(points, check)
    return join_segments(plan, walk_chain(rt.engine, plan, parallel_from=parallel_from),
                         unchained=unchained)
