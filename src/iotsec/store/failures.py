"""What a failed database operation means, for the operator: a full disk, a read-only or
corrupt database are named as such, whichever path met the driver's error (the unit of
work through SQLAlchemy, or a read on the driver itself, :mod:`iotsec.store.reader`)."""

from __future__ import annotations

from pathlib import Path

from iotsec.errors import ConflictError, IotsecError, StoreError

__all__ = ["driver_failure", "lock_conflict", "unique_violation", "unit_failure"]

#: PostgreSQL's SQLSTATEs of a transaction that met another one's locks and was chosen to
#: give way: a deadlock, a serialization failure, a lock not available. What failed may
#: succeed when it runs again (SQLite waits for its one lock instead).
_LOCK_CONFLICTS = frozenset({"40P01", "40001", "55P03"})


def lock_conflict(orig: BaseException | None) -> bool:
    """Did the statement give way to another transaction's locks (and may be run again)?"""
    return getattr(orig, "sqlstate", None) in _LOCK_CONFLICTS


#: A key that is stored already: PostgreSQL's SQLSTATE, SQLite's extended error names.
_UNIQUE = frozenset({"23505", "SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"})


def unique_violation(orig: BaseException | None) -> bool:
    """Did the statement fail because a row with the same key is stored already (a primary
    key or a unique constraint; not a foreign key)?"""
    return (getattr(orig, "sqlstate", None) in _UNIQUE
            or getattr(orig, "sqlite_errorname", None) in _UNIQUE)

#: What a failed database operation means, by SQLite's error name (the primary result
#: code, without an extended suffix such as ``_DBMOVED``) or PostgreSQL's SQLSTATE: the
#: message and the hint an operator can act on.
KNOWN_FAILURES: dict[str, tuple[str, str]] = {
    "SQLITE_FULL": ("the disk holding the database is full",
                    "free space on it, then run the command again"),
    "53100": ("the disk holding the database is full",
              "free space on the database server's disk, then run the command again"),
    "SQLITE_READONLY": ("the database is read-only",
                        "iotsec writes to its store (events, CRLs) even for commands that "
                        "only show something: give it write access to the home"),
    "25006": ("the database is read-only",
              "connect to a writable PostgreSQL server (not a read replica)"),
    "SQLITE_CANTOPEN": ("the database file cannot be opened",
                        "check that the home exists and is writable: SQLite creates its -wal "
                        "and -shm files beside the database"),
    "SQLITE_NOTADB": ("the database file is corrupt (it is not an SQLite database)",
                      "restore the home's iotsec.db from a backup"),
    "SQLITE_CORRUPT": ("the database file is corrupt",
                       "restore the home's iotsec.db from a backup"),
    "XX001": ("the database is corrupt (PostgreSQL reports data corruption)",
              "restore the database from a backup"),
    "SQLITE_IOERR": ("the disk holding the database failed (I/O error)",
                     "check the disk and the system log, then run the command again"),
    "SQLITE_BUSY": ("the database stayed locked by another process",
                    "run the command again when the other one has finished"),
}



#: Free bytes under which a failed write on an SQLite file is put down to a full disk.
_NEARLY_FULL = 256 * 1024


def _disk_full(sqlite_file: Path | None) -> bool:
    """Is the disk holding the SQLite file (nearly) full? SQLite reports a full disk as a
    plain I/O error when it cannot grow its -shm or -wal file."""
    if sqlite_file is None:
        return False
    import shutil  # deferred (start-up time): only a failed write looks at the disk

    try:
        return shutil.disk_usage(sqlite_file.parent).free < _NEARLY_FULL
    except OSError:
        return False


def driver_failure(orig: BaseException | None, fallback: str, hint: str, *,
                   sqlite_file: Path | None = None) -> StoreError:
    """The :class:`StoreError` for the driver's error ``orig`` (``sqlite_file``: the store's
    SQLite file, whose disk is looked at when SQLite reports an I/O error); anything not
    known gets ``fallback`` with the driver's class."""
    name = str(getattr(orig, "sqlite_errorname", "") or getattr(orig, "sqlstate", "") or "")
    primary = "_".join(name.split("_")[:2]) if name.startswith("SQLITE_") else name
    if name == "SQLITE_IOERR_SHMSIZE" or (primary == "SQLITE_IOERR"
                                          and _disk_full(sqlite_file)):
        primary = "SQLITE_FULL"
    known = KNOWN_FAILURES.get(primary)
    if known is not None:
        return StoreError(known[0], hint=known[1])
    return StoreError(f"{fallback} ({type(orig).__name__})", hint=hint)


def unit_failure(orig: BaseException | None, *, integrity: bool,
                 sqlite_file: Path | None = None) -> IotsecError:
    """What a database error that ends a unit of work means to its caller (whichever path
    ran it: SQLAlchemy's unit of work, or a write on the driver itself,
    :mod:`iotsec.store.writer`): a unique violation that it did not anticipate
    (``integrity``) is a conflict, anything else a store error."""
    if integrity:
        return ConflictError("the change conflicts with what is already stored",
                             hint="reload the object and try again")
    return driver_failure(orig, "the database refused the operation",
                          "check that the database is reachable and migrated "
                          "('iotsec init' migrates it)", sqlite_file=sqlite_file)
