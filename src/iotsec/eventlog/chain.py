"""The hash chain over the security event log, and its signed checkpoints.

Each entry's hash covers the previous entry's hash and the entry's own fields, so editing,
deleting, inserting or reordering an entry breaks every hash after it. The chain alone
does not stop someone who can write the store, since they can recompute it; a
**checkpoint** can: the chain's position and head hash signed with the audit key, which
lives in key custody and never in the store. Entries up to the newest checkpoint are
therefore protected against anyone without the audit key; entries after it only against
accidents, until the next checkpoint.

How an entry is encoded and hashed, and how new rows are chained, is in
:mod:`iotsec.eventlog.entries` (re-exported here).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from iotsec.eventlog.entries import GENESIS, encode_entry, encode_fields, entry_hash, link_rows

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes

__all__ = [
    "GENESIS", "ChainFault", "ChainReport", "ChainRow", "Checkpoint", "CheckpointPlan", "Fault",
    "Segment", "checkpoint_message", "encode_entry", "entry_hash", "join_segments", "link_rows",
    "plan_checkpoints", "verify_chain", "verify_segment", "verify_signature"
]

_DOMAIN = b"iotsec event-log checkpoint v1\x00"


def _net(value: str | int | None) -> bytes:
    # Checkpoint fields: netstrings (``~`` for a missing one).
    if value is None:
        return b"~"
    data = str(value).encode("utf-8", "surrogateescape")
    return b"%d:%b," % (len(data), data)


class ChainRow(NamedTuple):
    """An entry of the log as stored: its place in the chain and the fields it covers (a
    store row with these columns in this order serves as well)."""

    seq: int
    at: int
    kind: str
    outcome: str
    actor: str | None
    source: str | None
    subject: str | None
    detail: str  # the stored JSON text, as it is
    hash: str
    id: int | None = None


def checkpoint_message(seq: int, head: str, at: int) -> bytes:
    """What the audit key signs for a checkpoint at position ``seq`` with hash ``head``."""
    return _DOMAIN + _net(seq) + _net(head) + _net(at)


def verify_signature(public_key: CertificateIssuerPublicKeyTypes, signature: bytes,
                     message: bytes) -> bool:
    """Whether ``signature`` is the audit key's over ``message`` (the algorithms of
    :class:`iotsec.pki.keys.Signer`: ECDSA with SHA-256 or SHA-384 by curve, RSA PKCS#1 v1.5
    with SHA-256)."""
    # Deferred: appending events (every command that writes) needs no signature code.
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            digest: hashes.HashAlgorithm = (hashes.SHA384() if public_key.curve.key_size == 384
                                            else hashes.SHA256())
            public_key.verify(signature, message, ec.ECDSA(digest))
            return True
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            return True
    except InvalidSignature:
        return False
    return False


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    hash: str
    at: int
    key_label: str
    signature: bytes


class Fault(enum.StrEnum):
    """What verification found wrong, at the first place it went wrong."""

    EDITED = "edited"  # the entry's hash does not match its fields and the previous hash
    MISSING = "missing"  # a position of the chain has no entry (deleted)
    OUT_OF_ORDER = "out-of-order"  # positions repeat or go back (inserted or reordered)
    UNCHAINED = "unchained"  # a row was written outside the chain (no position)
    CHECKPOINT_MISMATCH = "checkpoint-mismatch"  # the chain's hash there is not the signed one
    CHECKPOINT_SIGNATURE = "checkpoint-signature"  # a checkpoint's signature is not valid
    TRUNCATED = "truncated"  # a checkpoint names a position past the end of the chain


@dataclass(frozen=True, slots=True)
class ChainFault:
    fault: Fault
    seq: int | None
    id: int | None
    message: str
    #: Whether a signed checkpoint covers the place: then the store was changed by someone
    #: without the audit key (or the key itself is compromised).
    covered: bool


@dataclass(slots=True)
class ChainReport:
    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    checkpoints: int = 0
    #: Position of the newest checkpoint whose signature and hash verified (0: none).
    checkpointed_seq: int = 0
    unchained: int = 0
    faults: list[ChainFault] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.faults

    @property
    def first(self) -> ChainFault | None:
        return self.faults[0] if self.faults else None


@dataclass(frozen=True, slots=True)
class CheckpointPlan:
    """The checkpoints a verification holds the chain to: by position, which of them carry a
    valid signature, the newest position any of them names, and the faults of the
    checkpoints themselves (a signature that does not verify)."""

    by_seq: dict[int, Checkpoint]
    signed_ok: frozenset[int]
    top: int
    faults: tuple[ChainFault, ...]

    @property
    def count(self) -> int:
        return len(self.by_seq)


def plan_checkpoints(checkpoints: Sequence[Checkpoint],
                     check_signature: Callable[[Checkpoint], bool]) -> CheckpointPlan:
    """Check every checkpoint's signature once, before the chain is walked."""
    signed_ok = frozenset(c.seq for c in checkpoints if check_signature(c))
    top = max((c.seq for c in checkpoints), default=0)
    faults = tuple(
        ChainFault(Fault.CHECKPOINT_SIGNATURE, c.seq, None,
                   f"the checkpoint at position {c.seq} has no valid signature of the audit "
                   f"key {c.key_label!r}", c.seq <= top)
        for c in checkpoints if c.seq not in signed_ok)
    return CheckpointPlan({c.seq: c for c in checkpoints}, signed_ok, top, faults)


@dataclass(slots=True)
class Segment:
    """What walking one stretch of the chain found. Each entry's hash covers the *stored*
    hash of the entry before it, so stretches can be walked apart (and at once) given the
    entry that precedes each, and their findings joined in order by :func:`join_segments`."""

    entries: int = 0
    head_seq: int = 0  # 0: the stretch had no entry
    head_hash: str = GENESIS
    checkpointed_seq: int = 0
    faults: list[ChainFault] = field(default_factory=list)


def verify_segment(rows: Iterable[ChainRow | tuple[Any, ...]], plan: CheckpointPlan, *,
                   previous: str = GENESIS, expected: int = 1,
                   max_faults: int = 20) -> Segment:
    """Walk ``rows`` (sorted by ``seq``), which follow an entry whose stored hash is
    ``previous`` and whose position is ``expected - 1`` (the chain's start by default)."""
    segment = Segment()
    by_seq, signed_ok, top = plan.by_seq, plan.signed_ok, plan.top

    def fault(kind: Fault, seq: int | None, row_id: int | None, message: str) -> None:
        if len(segment.faults) < max_faults:
            segment.faults.append(ChainFault(kind, seq, row_id, message,
                                             seq is not None and seq <= top))

    sha256, encode = hashlib.sha256, encode_fields
    for row in rows:
        seq, at, kind, outcome, actor, source, subject, detail, stored, row_id = row
        segment.entries += 1
        if seq != expected:
            if seq > expected:
                fault(Fault.MISSING, expected, row_id,
                      f"entries {expected}..{seq - 1} are missing (deleted)"
                      if seq > expected + 1 else f"entry {expected} is missing (deleted)")
            else:
                fault(Fault.OUT_OF_ORDER, seq, row_id,
                      f"entry {seq} (row id {row_id}) repeats or goes back in the chain "
                      "(inserted or reordered)")
        computed = sha256((previous + encode(
            (seq, at, kind, outcome, actor, source, subject, detail))).encode("ascii")
        ).hexdigest()
        if computed != stored:
            fault(Fault.EDITED, seq, row_id,
                  f"entry {seq} (row id {row_id}, {kind}) does not match its hash: it, "
                  "or the chain before it, was changed")
        # Go on from the stored hash: one edited entry is reported once, not at every
        # entry after it.
        previous = stored or ""
        if seq in by_seq:
            point = by_seq[seq]
            if point.hash != stored or computed != stored:
                fault(Fault.CHECKPOINT_MISMATCH, seq, row_id,
                      f"the chain at entry {seq} is not what the checkpoint signed")
            elif seq in signed_ok:
                segment.checkpointed_seq = seq
        expected = max(expected, seq) + 1
        segment.head_seq, segment.head_hash = seq, stored
    return segment


def join_segments(plan: CheckpointPlan, segments: Iterable[Segment], *, unchained: int = 0,
                  max_faults: int = 20) -> ChainReport:
    """The report over consecutive stretches of the chain walked by :func:`verify_segment`.
    ``unchained`` is the number of rows of the log that have no position at all."""
    report = ChainReport(unchained=unchained, checkpoints=plan.count)
    faults = list(plan.faults)
    for segment in segments:
        report.entries += segment.entries
        if segment.head_seq:
            report.head_seq, report.head_hash = segment.head_seq, segment.head_hash
        report.checkpointed_seq = max(report.checkpointed_seq, segment.checkpointed_seq)
        faults.extend(segment.faults)
    if plan.top > report.head_seq:
        faults.append(ChainFault(
            Fault.TRUNCATED, report.head_seq + 1, None,
            f"a checkpoint signed position {plan.top}, but the chain ends at "
            f"{report.head_seq}: entries were deleted from its end", True))
    if unchained:
        faults.append(ChainFault(
            Fault.UNCHAINED, None, None,
            f"{unchained} row(s) of the event log are outside the chain (written around it)",
            False))
    report.faults = faults[:max_faults]
    return report


def verify_chain(rows: Iterable[ChainRow | tuple[Any, ...]], checkpoints: Sequence[Checkpoint], *,
                 check_signature: Callable[[Checkpoint], bool], unchained: int = 0,
                 max_faults: int = 20) -> ChainReport:
    """Walk the whole chain in position order (``rows`` sorted by ``seq``) against the
    signed ``checkpoints``; report the first faults found (at most ``max_faults``).
    ``unchained`` is the number of rows of the log that have no position at all."""
    plan = plan_checkpoints(checkpoints, check_signature)
    return join_segments(plan, [verify_segment(rows, plan, max_faults=max_faults)],
                         unchained=unchained, max_faults=max_faults)
