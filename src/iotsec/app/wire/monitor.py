"""Wire models of monitoring: the event chain's verification and its checkpoints."""

from __future__ import annotations

from iotsec.app.wire.base import Wire
from iotsec.eventlog.chain import ChainFault, ChainReport

__all__ = ["ChainFaultOut", "ChainReportOut", "CheckpointOut"]


class ChainFaultOut(Wire):
    """One thing wrong with the event chain, where it was found."""

    fault: str
    seq: int | None
    id: int | None
    message: str
    #: A signed checkpoint covers the place: the change was made without the audit key.
    covered: bool

    @classmethod
    def from_domain(cls, f: ChainFault) -> ChainFaultOut:
        return cls(fault=f.fault.value, seq=f.seq, id=f.id, message=f.message,
                   covered=f.covered)


class ChainReportOut(Wire):
    """The result of verifying the event chain."""

    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    checkpoints: int
    checkpointed_seq: int
    unchained: int
    faults: list[ChainFaultOut]

    @classmethod
    def from_domain(cls, r: ChainReport) -> ChainReportOut:
        return cls(ok=r.ok, entries=r.entries, head_seq=r.head_seq, head_hash=r.head_hash,
                   checkpoints=r.checkpoints, checkpointed_seq=r.checkpointed_seq,
                   unchained=r.unchained,
                   faults=[ChainFaultOut.from_domain(f) for f in r.faults])


class CheckpointOut(Wire):
    """A checkpoint of the event chain (``made``: signed now, or already there)."""

    seq: int
    hash: str
    made: bool
