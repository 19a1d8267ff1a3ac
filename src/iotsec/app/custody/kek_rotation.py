"""Key-encryption key rotation without downtime, and the report of what depends on each KEK.

``rotate_kek`` runs in three steps, each safe to interrupt and to repeat:

1. **Start**: a new KEK is generated and a journal (``kek/rotation.json``) names it as the
   target and lists the KEKs to retire (the previous active one and every KEK a stored
   record depends on). The new KEK is then made active: from that moment every new write
   (a device secret, a file from ``iotsec data encrypt``) uses it, while reads keep working
   with the old ones.
2. **Re-wrap**: every encrypted column
   (:data:`~iotsec.app.custody.keys.ENCRYPTED_COLUMNS`) is walked in key order, in
   batches. A record's *data key* is unwrapped and wrapped again under the
   target; the record's ciphertext is not touched (no bulk decryption). Each record is
   updated with a compare-and-set (``WHERE key = ? AND value = <what was read>``), so a row
   changed meanwhile is left as its writer made it. A batch is one transaction: after a crash
   each record is wholly old or wholly new, and both still open because nothing is retired
   yet.
3. **Retire**: when the store no longer holds a record under any KEK other than the target,
   and no file made by ``iotsec data encrypt`` may still depend on one (files live outside
   the store and are moved by ``iotsec data rewrap``, see :mod:`.kek_files`), the KEKs in
   the journal are retired and the journal is removed. Otherwise the rotation stops, says
   how many records or files still depend on which key, and the next run resumes it with
   the same target (it never starts a second new key). ``force`` retires despite files.

A lock file keeps two rotations of one home from running at once. Each step is an event in
the key-use record.
"""

from __future__ import annotations

import contextlib
import json
import operator
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Connection, LargeBinary, bindparam, func, literal, select, update

from iotsec.app.custody.kek_files import file_counts, files_of
from iotsec.app.custody.keys import ENCRYPTED_COLUMNS, EncryptedColumn
from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.custody.keks import Backend, KekCustody, backend_of
from iotsec.errors import (
    ConflictError,
    InvalidInputError,
    IotsecError,
    KekRotationError,
    KeyCustodyError,
)
from iotsec.filesystem import exclusive_lock, write_private_file
from iotsec.protect.kek import KeyWrapper
from iotsec.protect.records import RecordRewrapper, envelope_head, record_kek_id
from iotsec.store.db import reading, transaction
from iotsec.timeutil import ts

__all__ = [
    "DEFAULT_BATCH", "JOURNAL", "LOCK", "MAX_JOURNAL", "MAX_PASSES", "KekUsage", "KeyReport",
    "RotationResult", "count_dependents", "key_report", "read_journal", "reinstate_kek",
    "retire_kek", "rotate_kek"
]

JOURNAL: Final = "rotation.json"
LOCK: Final = "rotation.lock"
MAX_JOURNAL: Final = 64 * 1024
DEFAULT_BATCH: Final = 5000
#: Re-wrap passes before giving up on records written under an old key meanwhile.
MAX_PASSES: Final = 3
_MAX_FAILURES_LISTED: Final = 20


# --- the report -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KekUsage:
    """How many stored records depend on one KEK, and its state."""

    key_id: str
    backend: str  # file | pkcs11
    state: str  # active | available | retired | missing
    records: int
    columns: dict[str, int]
    #: Files made by 'iotsec data encrypt' that may still depend on it.
    files: int = 0


@dataclass(frozen=True, slots=True)
class KeyReport:
    keks: list[KekUsage]
    malformed: int
    rotation: dict[str, Any] | None

    def records(self, key_id: str) -> int:
        return next((k.records for k in self.keks if k.key_id == key_id), 0)


def _classify(column: EncryptedColumn, stored: bytes) -> str:
    return record_kek_id(column.envelope(stored))


def count_dependents(rt: Runtime, batch: int = 10_000, *, other_than: str | None = None
                     ) -> tuple[dict[str, Counter[str]], int]:
    """Per KEK id, per column: how many records depend on it (read in key order, in
    batches; no key is used). Also the number of values that are not envelopes at all.

    With ``other_than``, the records under that KEK are left out by the query itself (a
    finished rotation's recount then reads nothing); everything else is counted alike."""
    usage: dict[str, Counter[str]] = {}
    malformed = 0
    for column in ENCRYPTED_COLUMNS:
        skip = None if other_than is None else column.marker + envelope_head(other_than)
        counts: Counter[str] = Counter()
        for rows in _batches(rt, column, batch, skip):
            for row in rows:
                try:
                    counts[_classify(column, bytes(row[-1]))] += 1
                except IotsecError:
                    malformed += 1
        for key_id, count in counts.items():
            usage.setdefault(key_id, Counter())[column.name] += count
    return usage, malformed


def key_report(rt: Runtime) -> KeyReport:
    """Every KEK in custody and every KEK the store refers to, with its record count."""
    custody = rt.custody.keks()
    usage, malformed = count_dependents(rt)
    files = file_counts(rt)
    known = custody.describe()
    keks: list[KekUsage] = []
    for info in known:
        state = "retired" if info.retired else "active" if info.active else "available"
        counts = usage.pop(info.key_id, Counter())
        keks.append(KekUsage(info.key_id, info.backend, state, sum(counts.values()),
                             dict(counts), files.pop(info.key_id, 0)))
    for key_id in sorted(usage.keys() | files.keys()):
        counts = usage.get(key_id, Counter())
        keks.append(KekUsage(key_id, backend_of(key_id), "missing", sum(counts.values()),
                             dict(counts), files.get(key_id, 0)))
    return KeyReport(keks, malformed, read_journal(custody))


# --- the journal and the lock -------------------------------------------------------------


def read_journal(custody: KekCustody) -> dict[str, Any] | None:
    path = custody.directory / JOURNAL
    try:
        if path.stat().st_size > MAX_JOURNAL:
            raise KekRotationError(f"{path} is larger than {MAX_JOURNAL} bytes",
                                   hint="it is not an iotsec rotation journal; remove it")
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        raise KekRotationError(f"{path} is not a rotation journal",
                               hint="remove it and run 'iotsec keys rotate kek' again") from None
    if not (isinstance(doc, dict) and doc.get("v") == 1 and isinstance(doc.get("target"), str)
            and isinstance(doc.get("retire"), list)
            and all(isinstance(i, str) for i in doc["retire"])):
        raise KekRotationError(f"{path} is not a rotation journal",
                               hint="remove it and run 'iotsec keys rotate kek' again")
    return doc


def _write_journal(custody: KekCustody, doc: dict[str, Any]) -> None:
    write_private_file(custody.directory / JOURNAL,
                       (json.dumps(doc, sort_keys=True) + "\n").encode("ascii"), overwrite=True)


@contextlib.contextmanager
def _rotation_lock(custody: KekCustody) -> Iterator[None]:
    custody.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with exclusive_lock(custody.directory / LOCK, KekRotationError(
            "another key-encryption key rotation is running", hint="wait for it to finish")):
        yield


# --- the rotation ---------------------------------------------------------------------------


@dataclass(slots=True)
class RotationResult:
    target: str
    resumed: bool
    rewrapped: int = 0
    skipped: int = 0  # changed by someone else between read and write
    failed: list[str] = field(default_factory=list)
    remaining: dict[str, int] = field(default_factory=dict)
    retired: list[str] = field(default_factory=list)
    #: Old KEKs not retired because files may still depend on them (KEK id -> files).
    files: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.remaining and not self.files


def _batches(rt: Runtime, column: EncryptedColumn, size: int, skip: bytes | None = None
             ) -> Iterator[list[Any]]:
    """Rows ``(key, *extra, value)`` of one encrypted column, in key order; with ``skip``, not
    the rows whose value starts with those bytes."""
    last: Any = None
    while True:
        query = select(column.key, *column.extra, column.column).order_by(column.key)
        if last is not None:
            query = query.where(column.key > last)
        if skip is not None:
            query = query.where(func.substr(column.column, 1, len(skip))
                                != literal(skip, LargeBinary))
        with reading(rt.engine) as conn:
            rows = list(conn.execute(query.limit(size)).all())
        if not rows:
            return
        yield rows
        last = rows[-1][0]


class _CompareAndSet:
    """``UPDATE <table> SET <value> = :new WHERE <key> = :key AND <value> = :old`` for many
    rows at once, sent to the driver as SQLAlchemy compiled it for the connection's dialect.

    Going through ``Connection.execute`` would process every row's parameters (a dictionary
    per row, a bind processor per value): with a million rows that costs more than the
    UPDATEs themselves. These parameters need no conversion on any supported driver: the key
    as read, and the old and new values as ``bytes``."""

    __slots__ = ("_statement",)

    def __init__(self, column: EncryptedColumn) -> None:
        self._statement = (update(column.table)
                           .where(column.key == bindparam("b_key"),
                                  column.column == bindparam("b_old"))
                           .values({column.column.name: bindparam("b_new")}))

    def __call__(self, conn: Connection, changes: list[tuple[Any, bytes, bytes]]) -> int:
        """Apply ``(key, old, new)`` changes; the number of rows that still held ``old``."""
        compiled = self._statement.compile(dialect=conn.dialect)
        names = ("b_key", "b_old", "b_new")
        params: list[Any]
        if compiled.positiontup is not None:
            pick = operator.itemgetter(*(names.index(n) for n in compiled.positiontup))
            params = [pick(change) for change in changes]
        else:
            params = [dict(zip(names, change, strict=True)) for change in changes]
        done = conn.exec_driver_sql(compiled.string, params).rowcount
        return len(changes) if done is None or done < 0 else done


def _rewrap_column(rt: Runtime, custody: KekCustody, target: KeyWrapper, column: EncryptedColumn,
                   result: RotationResult, batch: int,
                   progress: Callable[[str, int], None] | None) -> None:
    compare_and_set = _CompareAndSet(column)
    rewrapper = RecordRewrapper(custody, target, table=column.table.name, field=column.field)
    marker, envelope_of, record_id = column.marker, column.envelope, column.record_id
    for rows in _batches(rt, column, batch):
        changes: list[tuple[Any, bytes, bytes]] = []
        for row in rows:
            stored = bytes(row[-1])
            try:
                envelope = envelope_of(stored)
                if not rewrapper.pending(envelope):
                    continue
                new = marker + rewrapper.rewrap(envelope, record_id(row))
            except IotsecError as exc:
                if len(result.failed) < _MAX_FAILURES_LISTED:
                    result.failed.append(f"{column.name} {row[0]}: {exc.code}")
                continue
            changes.append((row[0], stored, new))
        if changes:
            # One transaction per batch: after a crash each record is wholly old or new.
            with transaction(rt.engine) as conn:
                done = compare_and_set(conn, changes)
            result.skipped += len(changes) - done
            result.rewrapped += len(changes)
        if progress is not None:
            progress(column.name, len(rows))


def _event(rt: Runtime, kind: str, outcome: str, subject: str, detail: dict[str, Any]) -> None:
    rt.events.record(Event(at=rt.now(), kind=kind, outcome=outcome, subject=subject,
                           detail=detail))


def _start(rt: Runtime, custody: KekCustody, backend: Backend | None) -> dict[str, Any]:
    usage, _ = count_dependents(rt)
    previous = custody.active_id()
    retire = sorted(({previous} if previous else set()) | set(usage) | set(file_counts(rt)))
    new = custody.generate(backend)
    doc = {"v": 1, "target": new.key_id, "retire": [i for i in retire if i != new.key_id],
           "started_at": ts(rt.now())}
    # Journal first, then activate: a crash in between resumes with the same target.
    _write_journal(custody, doc)
    custody.activate(new.key_id)
    _event(rt, "kek.rotate", "started", new.key_id,
           {"previous": previous, "retire": doc["retire"], "backend": backend_of(new.key_id)})
    return doc


def rotate_kek(rt: Runtime, *, backend: Backend | None = None, batch: int = DEFAULT_BATCH,
               retire: bool = True, destroy: bool = False, force: bool = False,
               progress: Callable[[str, int], None] | None = None) -> RotationResult:
    """Rotate the home's KEK, or resume the rotation a journal records (see the module
    documentation). ``backend`` picks where the new KEK lives (default: the configured
    keystore); ``retire=False`` leaves the old KEKs usable; ``destroy`` deletes them
    instead of retiring them; ``force`` retires them although encrypted files may still
    depend on them."""
    if not 1 <= batch <= 100_000:
        raise InvalidInputError("the batch size is between 1 and 100000")
    custody = rt.custody.keks()
    with _rotation_lock(custody):
        journal = read_journal(custody)
        resumed = journal is not None
        if journal is None:
            journal = _start(rt, custody, backend)
        elif backend is not None and backend_of(journal["target"]) != backend:
            raise KekRotationError(
                f"an unfinished rotation to {journal['target']} is recorded; it is resumed "
                f"as it was started, not with another backend",
                hint="run 'iotsec keys rotate kek' without --backend to finish it")
        target = custody.kek(journal["target"])
        if custody.active_id() != target.key_id:
            custody.activate(target.key_id)
        result = RotationResult(target=target.key_id, resumed=resumed)
        for _ in range(MAX_PASSES):
            for column in ENCRYPTED_COLUMNS:
                _rewrap_column(rt, custody, target, column, result, batch, progress)
            usage, _ = count_dependents(rt, other_than=target.key_id)
            result.remaining = {k: sum(v.values()) for k, v in usage.items()}
            if not result.remaining or result.failed:
                break
        if result.remaining:
            _event(rt, "kek.rotate", "incomplete", target.key_id,
                   {"remaining": result.remaining, "failed": len(result.failed)})
            return result
        if retire and not force:
            files = file_counts(rt)
            # Only a key still usable is held back: one already retired or destroyed (by
            # an earlier --force) cannot be helped by waiting.
            usable = {k.key_id for k in custody.describe() if not k.retired}
            result.files = {k: files[k] for k in journal["retire"]
                            if files.get(k) and k != target.key_id and k in usable}
            if result.files:
                _event(rt, "kek.rotate", "incomplete", target.key_id,
                       {"files": result.files, "hint": "iotsec data rewrap"})
                return result
        if retire:
            for key_id in journal["retire"]:
                _retire(rt, custody, key_id, destroy=destroy)
                result.retired.append(key_id)
        (custody.directory / JOURNAL).unlink(missing_ok=True)
        _event(rt, "kek.rotate", "ok", target.key_id,
               {"rewrapped": result.rewrapped, "retired": result.retired})
        return result


def _retire(rt: Runtime, custody: KekCustody, key_id: str, *, destroy: bool) -> None:
    try:
        custody.retire(key_id, destroy=destroy)
    except KeyCustodyError as exc:
        if exc.code not in ("unknown-kek", "retired-kek"):
            raise
        # Already gone (a repeated run after a crash during retirement): nothing to do.
    _event(rt, "kek.retire", "ok", key_id, {"destroyed": destroy})


def retire_kek(rt: Runtime, key_id: str, *, destroy: bool = False, force: bool = False
               ) -> None:
    """Retire one KEK by hand: refused while any stored record depends on it, or (unless
    ``force``) any file made by ``iotsec data encrypt`` may."""
    custody = rt.custody.keks()
    if key_id == custody.active_id():
        raise ConflictError(f"key-encryption key {key_id!r} is active",
                            hint="rotate first: 'iotsec keys rotate kek'")
    if key_id not in {k.key_id for k in custody.describe()}:
        custody.kek(key_id)  # not in custody: refused before anything is written
    files = file_counts(rt).get(key_id, 0)
    if files and not force:
        where = ", ".join(files_of(rt, key_id, limit=3))
        raise KekRotationError(f"{files} encrypted files may still depend on key-encryption "
                               f"key {key_id!r} (e.g. {where})",
                               hint="move them with 'iotsec data rewrap FILE...', or give "
                               "--force if they are gone")
    with _rotation_lock(custody):
        usage, _ = count_dependents(rt)
        depending = sum(usage.get(key_id, Counter()).values())
        if depending:
            raise KekRotationError(f"{depending} stored records still depend on "
                                   f"key-encryption key {key_id!r}",
                                   hint="rotate first: 'iotsec keys rotate kek'")
        if not destroy:
            custody.kek(key_id)  # it must exist and be usable to be retired
        _retire(rt, custody, key_id, destroy=destroy)


def reinstate_kek(rt: Runtime, key_id: str) -> None:
    """Make a retired KEK usable again (for a file or backup that still depends on it)."""
    rt.custody.keks().reinstate(key_id)
    _event(rt, "kek.reinstate", "ok", key_id, {})
