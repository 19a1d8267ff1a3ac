"""Which key-encryption key each file made by ``iotsec data encrypt`` depends on.

A file lives outside the store, so a KEK rotation cannot re-wrap it; retiring its KEK would
make it unreadable. Each encryption (and each ``iotsec data rewrap``) is recorded here,
keyed by the SHA-256 of the file's header, and the rotation counts these records before it
retires anything. The count is what *may* still depend on a KEK: a file deleted since is
still counted (``--force`` retires anyway), a file copied is counted once. The same record
written without SQLAlchemy: :mod:`iotsec.app.custody.file_records`.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, func, insert, select

from iotsec.app.custody.file_records import path_text
from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import ts

__all__ = ["file_counts", "files_of", "move_file", "record_file"]


def _upsert(conn: Connection, header_sha256: str, kek_id: str, path: str, now: int) -> None:
    conn.execute(delete(m.encrypted_files).where(m.encrypted_files.c.id == header_sha256))
    conn.execute(insert(m.encrypted_files).values(id=header_sha256, kek_id=kek_id,
                                                  path=path_text(path), created_at=now))


def record_file(rt: Runtime, header_sha256: str, kek_id: str, path: str,
                event: Event | None = None) -> None:
    """Remember that the file with this header (at ``path``, ``-`` for a stream) depends on
    ``kek_id``; ``event`` is appended to the chain in the same transaction."""
    with transaction(rt.engine) as conn:
        _upsert(conn, header_sha256, kek_id, path, ts(rt.now()))
        if event is not None:
            rt.events.record_in(conn, event)


def move_file(rt: Runtime, old_header_sha256: str, new_header_sha256: str, kek_id: str,
              path: str) -> None:
    """A file was re-wrapped: its old header no longer exists, its new one uses ``kek_id``."""
    with transaction(rt.engine) as conn:
        conn.execute(delete(m.encrypted_files)
                     .where(m.encrypted_files.c.id == old_header_sha256))
        _upsert(conn, new_header_sha256, kek_id, path, ts(rt.now()))


def file_counts(rt: Runtime) -> dict[str, int]:
    """Per KEK id, how many encrypted files may still depend on it."""
    c = m.encrypted_files.c
    with reading(rt.engine) as conn:
        return {kek_id: count for kek_id, count in conn.execute(
            select(c.kek_id, func.count()).group_by(c.kek_id))}


def files_of(rt: Runtime, kek_id: str, limit: int = 20) -> list[str]:
    """Where some of the files under ``kek_id`` were written (for an error message)."""
    c = m.encrypted_files.c
    with reading(rt.engine) as conn:
        return list(conn.execute(select(c.path).where(c.kek_id == kek_id)
                                 .order_by(c.created_at, c.path).limit(limit)).scalars())
