"""The record of an encrypted file's KEK (:mod:`iotsec.app.custody.kek_files`) as the
commands that run without SQLAlchemy write it (``iotsec data encrypt``, ADR 0033): the
same row, and its event, in one unit of work on a :class:`~iotsec.app.direct_home.
DirectHome`."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from iotsec.app.direct_home import DirectHome
from iotsec.eventlog.event import Event
from iotsec.timeutil import ts

__all__ = ["PATH_WIDTH", "path_text", "record_file_direct"]

PATH_WIDTH: Final = 1024  # the length of encrypted_files.path

_DELETE: Final = "DELETE FROM encrypted_files WHERE id = :id"
_INSERT: Final = ("INSERT INTO encrypted_files (id, kek_id, path, created_at) "
                  "VALUES (:id, :kek_id, :path, :created_at)")


def path_text(path: str) -> str:
    """What the record keeps of ``path``: absolute (``-`` for a stream), its last
    :data:`PATH_WIDTH` characters."""
    text = path if path == "-" else str(Path(path).absolute())
    return text[-PATH_WIDTH:]


def record_file_direct(home: DirectHome, header_sha256: str, kek_id: str, path: str,
                       event: Event) -> None:
    """:func:`iotsec.app.custody.kek_files.record_file` on a direct home: the file with
    this header depends on ``kek_id``; ``event`` is appended to the chain in the same
    transaction."""
    with home.unit() as writer:
        writer.execute(_DELETE, {"id": header_sha256})
        writer.execute(_INSERT, {"id": header_sha256, "kek_id": kek_id,
                                 "path": path_text(path), "created_at": ts(home.now())})
        home.append(writer, [event])
