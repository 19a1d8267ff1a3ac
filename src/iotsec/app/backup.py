"""``iotsec backup create``: one encrypted file holding a consistent copy of a home.

The backup holds every table of the store, read in one snapshot while the home keeps
serving (a read transaction on SQLite, REPEATABLE READ on PostgreSQL), and every file of the
home but the SQLite database itself: the CA and firmware key files, the KEK files, the CA
passphrase file, ``keystore.json``, the server's TLS files and the OTA repository. Keys kept
in a PKCS#11 token stay in the token: a token is backed up with its own tools.
The format is :mod:`iotsec.store.backup_format`; restoring is :mod:`iotsec.app.restore`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Final

from iotsec import __version__
from iotsec.app.events import Event
from iotsec.app.runtime import open_runtime
from iotsec.app.store_location import DATABASE_FILE
from iotsec.config import Settings
from iotsec.errors import BackupError, InvalidInputError
from iotsec.filesystem import private_output
from iotsec.store import backup_format as fmt
from iotsec.store.migrate import HEAD
from iotsec.store.snapshot import TABLES, consistent_snapshot, read_batches
from iotsec.store.writer_queue import LOCK_SUFFIX
from iotsec.timeutil import ts

__all__ = ["NOT_BACKED_UP", "BackupResult", "create_backup", "home_files"]

#: Files of a home that a backup leaves out: the SQLite store (its tables are in the backup),
#: its writers' lock file and the record of another database (a restore decides where its
#: store goes).
NOT_BACKED_UP: Final = frozenset({"iotsec.db", "iotsec.db-wal", "iotsec.db-shm",
                                  "iotsec.db-journal", "iotsec.db" + LOCK_SUFFIX,
                                  DATABASE_FILE})
#: Encoded rows per ``R`` record before it is written (well under the record limit).
_ROWS_RECORD_BYTES: Final = 8 * 1024 * 1024


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    created_at: datetime
    tables: dict[str, int]
    files: list[str]
    skipped: list[str]
    keystore: str
    ca_passphrase_included: bool


def home_files(home: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """The regular files of ``home`` to back up (relative POSIX path, path), sorted, and
    what is skipped (symbolic links, sockets...: never followed)."""
    files: list[tuple[str, Path]] = []
    skipped: list[str] = []

    def walk(directory: Path, prefix: PurePosixPath | None) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            rel = prefix / entry.name if prefix else PurePosixPath(entry.name)
            if prefix is None and entry.name in NOT_BACKED_UP:
                continue
            if entry.is_dir(follow_symlinks=False):
                walk(Path(entry.path), rel)
            elif entry.is_file(follow_symlinks=False):
                files.append((fmt.safe_relative_path(str(rel)).as_posix(), Path(entry.path)))
            else:
                skipped.append(str(rel))

    walk(home, None)
    return files, skipped


def _check_output(home: Path, output: Path) -> Path:
    target = output.expanduser().absolute()
    if target.resolve().is_relative_to(home):
        raise InvalidInputError(f"{output} is inside the home {home}",
                                hint="write the backup outside the home (it would back "
                                "itself up)")
    return target


def _file_pieces(path: Path, size: int) -> Iterator[bytes]:
    """The content of ``path`` in record-sized pieces, refused if it changes size."""
    piece = fmt.MAX_BODY[fmt.DATA]
    read = 0
    with path.open("rb") as fh:
        while read < size:
            data = fh.read(min(piece, size - read))
            if not data:
                break
            read += len(data)
            yield data
        if read != size or fh.read(1):
            raise BackupError(f"{path} changed while it was being backed up",
                              hint="run the backup again")


def create_backup(settings: Settings, output: Path, passphrase: bytes, *,
                  now: datetime | None = None) -> BackupResult:
    """Write a backup of the home to ``output`` (a new file, mode 0600; nothing is left
    behind if the backup fails)."""
    fmt.check_passphrase(passphrase)
    rt = open_runtime(settings)
    try:
        settings = rt.settings
        home = settings.resolved_home
        target = _check_output(home, output)
        moment = (now or rt.now()).replace(microsecond=0)
        passphrase_included = settings.passphrase_file.is_file()
        info = fmt.BackupInfo(created_at=ts(moment), schema_revision=HEAD,
                              dialect="postgresql" if rt.engine.dialect.name == "postgresql"
                              else "sqlite", iotsec_version=__version__,
                              keystore=settings.keystore,
                              ca_passphrase_included=passphrase_included)
        tables: list[fmt.TableDigest] = []
        digests: list[fmt.FileDigest] = []
        with private_output(target) as fh, consistent_snapshot(rt.engine) as conn:
            writer = fmt.BackupWriter(fh, passphrase)
            writer.model(fmt.HEADER, info)
            for table in TABLES:
                writer.model(fmt.TABLE, fmt.TableStart(
                    name=table.name, columns=[c.name for c in table.columns]))
                digest = fmt.RowDigest()
                pending: list[bytes] = []
                size = 0
                for batch in read_batches(conn, table):
                    for row in batch:
                        encoded = fmt.encode_row(row)
                        digest.add(encoded)
                        pending.append(encoded)
                        size += len(encoded)
                        if size >= _ROWS_RECORD_BYTES or len(pending) >= fmt.MAX_BATCH_ROWS:
                            writer.rows(pending)
                            pending, size = [], 0
                if pending:
                    writer.rows(pending)
                tables.append(fmt.TableDigest(name=table.name, rows=digest.rows,
                                              sha256=digest.hexdigest()))
            # The key files are read inside the store's snapshot: keys are never replaced,
            # so every key the snapshot's rows name is on disk by now.
            files, skipped = home_files(home)
            for rel, path in files:
                st = path.stat()
                writer.model(fmt.FILE, fmt.FileStart(path=rel, mode=stat.S_IMODE(st.st_mode),
                                                     size=st.st_size))
                sha = hashlib.sha256()
                for piece in _file_pieces(path, st.st_size):
                    sha.update(piece)
                    writer.record(fmt.DATA, piece)
                digests.append(fmt.FileDigest(path=rel, size=st.st_size, sha256=sha.hexdigest()))
            writer.model(fmt.MANIFEST, fmt.Manifest(tables=tables, files=digests,
                                                    skipped=skipped))
            writer.finish()
            written = writer.size
        rt.events.record(Event(at=moment, kind="backup.create", outcome="ok",
                               subject=target.name,
                               detail={"tables": {t.name: t.rows for t in tables},
                                       "files": len(digests), "bytes": written}))
        return BackupResult(path=target, size=written, created_at=moment,
                            tables={t.name: t.rows for t in tables},
                            files=[d.path for d in digests], skipped=skipped,
                            keystore=settings.keystore,
                            ca_passphrase_included=passphrase_included)
    finally:
        rt.close()
