"""Registering many devices at once, from a CSV file or a stream of validated requests.

An import is all or nothing: one transaction, written in bounded batches as the input is
read, so memory stays the same whatever the size of the file. Every row is validated as
it is read (id, groups, attributes); an id that is already registered, or that appears
twice in the input, refuses the whole import with an error naming its line, and nothing
is written. The device rows, their group links and their roles (the default role
``device`` when it exists) go in with the store's bulk path: ``COPY`` on PostgreSQL; on
SQLite the batch's devices, each row with its group and role names, by
:func:`iotsec.store.bulk.insert_rows` (staged through a temporary table, ADR 0049), and the
links made from those names by one statement per table in the store
(:func:`iotsec.store.bulk.links_from_names`; a batch's names are taken whole, without
the split, when none of its rows holds two of a kind). One ``device.imported`` event on
the chain, in the same transaction, records the import.

Duplicates are found by the store, not by a set of every id seen (which would grow with
the file): each batch is written under a savepoint, and when its insert breaks the
devices' primary key the savepoint is undone and the offending id is looked up, on a
separate connection, among the devices committed before the import began (registered
already) or else among the rows this import wrote (a duplicate in the file).

The foreign keys of the group links and role bindings are checked once per key, not once
per row (ADR 0037): each group and role a batch names is locked until the import ends (or
created by it), each device is a row the batch has just inserted; on PostgreSQL the
server's own per-row checks are then skipped for the links where the role may
(:func:`iotsec.store.bulk.references_checked`), and on SQLite the import's transaction runs
with the connection's foreign-key enforcement off (``transaction(...,
references_vouched=True)``, ADR 0047).

On PostgreSQL a CSV file is read and validated by a thread of its own, at most two batches
ahead of the one being written (:func:`_read_ahead`): the server's work on a batch then
overlaps with reading the next, and memory stays bounded.
"""

from __future__ import annotations

import csv
import json
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from operator import itemgetter
from typing import TextIO, cast

from sqlalchemy import Connection, select

from iotsec.app.events import Event
from iotsec.app.identity.bindings import (
    DEFAULT_ROLE,
    bump_policy_version,
    policy_changed,
    require_roles,
)
from iotsec.app.runtime import Runtime
from iotsec.errors import (
    ConflictError,
    InvalidInputError,
    IotsecError,
    NotFoundError,
    StoreError,
)
from iotsec.identity.registry import (
    DeviceState,
    is_device_id,
    parse_attributes,
    parse_device_id,
    parse_group_name,
)
from iotsec.store import models as m
from iotsec.store.bulk import (
    BulkConflict,
    insert_rows,
    last_rowid,
    links_from_names,
    lock_keys,
    names_written,
    references_checked,
)
from iotsec.store.db import reading, transaction
from iotsec.timeutil import ts

__all__ = ["IMPORT_BATCH", "MAX_FIELD", "ImportRow", "csv_rows", "import_csv", "import_rows"]

#: Rows written per batch (and held in memory at once).
IMPORT_BATCH = 10_000
#: The longest CSV field read (a longer one refuses the import, naming its line).
MAX_FIELD = 64 * 1024
#: Entries kept in each parse cache before it is emptied (memory stays bounded).
_CACHE = 4096

#: (line, device id, groups, attributes as JSON, roles or None for the default role): one
#: validated row of an import.
ImportRow = tuple[int, str, tuple[str, ...], str, tuple[str, ...] | None]


class _Parsed:
    """Validated groups and attributes, by their text in the file: most fleets repeat a
    few group lists and attribute sets on every line."""

    def __init__(self) -> None:
        self.groups: dict[str, tuple[str, ...]] = {}
        self.attributes: dict[str, str] = {}

    def groups_of(self, text: str) -> tuple[str, ...]:
        found = self.groups.get(text)
        if found is None:
            found = tuple(sorted({parse_group_name(g) for g in text.split(";") if g}))
            if len(self.groups) >= _CACHE:
                self.groups.clear()
            self.groups[text] = found
        return found

    def attributes_of(self, text: str) -> str:
        found = self.attributes.get(text)
        if found is None:
            found = json.dumps(parse_attributes([a for a in text.split(";") if a]),
                               sort_keys=True)
            if len(self.attributes) >= _CACHE:
                self.attributes.clear()
            self.attributes[text] = found
        return found


def csv_rows(stream: TextIO) -> Iterator[ImportRow]:
    """The rows of a CSV file ``id,groups,attributes`` (groups and ``key=value``
    attributes separated by ``;``; other columns are ignored), validated as they are read.
    A bad row raises :class:`InvalidInputError` naming its line."""
    # The limit is the csv module's, process-wide: iotsec reads no other CSV.
    csv.field_size_limit(MAX_FIELD)
    reader = csv.reader(stream)
    line = 1
    try:
        header = next(reader, None)
        if not header or "id" not in header:
            raise InvalidInputError("the CSV has no 'id' column",
                                    hint="the first line must be a header: id,groups,attributes")
        i_id = header.index("id")
        i_groups = header.index("groups") if "groups" in header else -1
        i_attrs = header.index("attributes") if "attributes" in header else -1
        parsed = _Parsed()
        # The caches' own look-ups, bound once: most lines repeat a text already parsed.
        known_groups, known_attributes = parsed.groups.get, parsed.attributes.get
        for fields in reader:
            if not fields:
                continue  # a blank line
            line = reader.line_num
            n = len(fields)
            try:
                device_id = fields[i_id].strip() if i_id < n else ""
                if not is_device_id(device_id):
                    parse_device_id(device_id)  # raises, saying what is wrong with it
                groups: tuple[str, ...] = ()
                if 0 <= i_groups < n:
                    text = fields[i_groups]
                    known = known_groups(text)
                    groups = parsed.groups_of(text) if known is None else known
                attributes = "{}"
                if 0 <= i_attrs < n:
                    text = fields[i_attrs]
                    given = known_attributes(text)
                    attributes = parsed.attributes_of(text) if given is None else given
            except IotsecError as exc:
                raise InvalidInputError(f"line {line}: {exc}", hint=exc.hint) from None
            yield (line, device_id, groups, attributes, None)
    except UnicodeDecodeError:
        raise InvalidInputError(f"the file is not UTF-8 text (after line {line})",
                                hint="save the CSV as UTF-8") from None
    except csv.Error as exc:
        raise InvalidInputError(f"line {reader.line_num}: the CSV cannot be read: {exc}",
                                hint=f"fields are at most {MAX_FIELD} characters") from None


#: An import row's id, groups, attributes and roles (see :data:`ImportRow`).
_ID, _GROUPS, _ATTRIBUTES, _ROLES = (itemgetter(i) for i in (1, 2, 3, 4))


class _Writer:
    """Writes batches of one import inside its transaction."""

    def __init__(self, rt: Runtime, conn: Connection, now: int, unit: str) -> None:
        self.rt, self.conn, self.now, self.unit = rt, conn, now, unit
        self.known_groups: set[str] = set()
        self.checked_roles: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.default: tuple[str, ...] | None = None
        self.bound = False

    def _ensure_groups(self, names: set[str]) -> None:
        missing = names - self.known_groups
        if not missing:
            return
        wanted = sorted(missing)
        # The groups already there are locked until the import ends (no one can delete
        # one its links need); the new ones are this transaction's own.
        have = lock_keys(self.conn, m.groups.c.name, wanted)
        insert_rows(self.conn, m.groups, ("name", "created_at"),
                    [(n, self.now) for n in wanted if n not in have])
        if len(self.known_groups) + len(wanted) > _CACHE * 16:
            self.known_groups.clear()
        self.known_groups.update(wanted)

    def _roles(self, roles: tuple[str, ...] | None) -> tuple[str, ...]:
        if roles is None:
            if self.default is None:
                # Bound when it exists ('iotsec init' creates it); locked, as below.
                self.default = ((DEFAULT_ROLE,) if lock_keys(
                    self.conn, m.roles.c.name, (DEFAULT_ROLE,)) else ())
            return self.default
        checked = self.checked_roles.get(roles)
        if checked is None:
            checked = tuple(require_roles(self.conn, roles))
            # Locked until the import ends, so that no one deletes a role its bindings
            # name; one gone since require_roles saw it is refused as it would have been.
            locked = lock_keys(self.conn, m.roles.c.name, checked)
            gone = [r for r in checked if r not in locked]
            if gone:
                raise NotFoundError(f"role {gone[0]!r} does not exist",
                                    hint="create it with 'iotsec role add' "
                                         "(see 'iotsec role list')")
            self.checked_roles[roles] = checked
        return checked

    def write(self, batch: Sequence[ImportRow]) -> None:
        # Columns taken by map() and zip(), in C: the rows of a large import are many.
        ids = list(map(_ID, batch))
        if len(set(ids)) != len(ids):
            self._refuse_repeated(batch)
        # A batch's rows share a few lists of names: each is joined once.
        group_lists = set(map(_GROUPS, batch))
        self._ensure_groups(set().union(*group_lists))
        default = self._roles(None)  # most rows: a file's, which name no roles
        named = list(map(_ROLES, batch))
        roles = ([default] * len(batch) if named.count(None) == len(named)
                 else [default if r is None else self._roles(r) for r in named])
        group_text = {names: " ".join(names) for names in group_lists}
        role_text = {names: " ".join(names) for names in set(roles)}
        # What every row of the batch holds alike is given once, not row by row.
        same: dict[str, object] = {"state": DeviceState.PENDING.value,
                                   "created_at": self.now, "updated_at": self.now}
        columns: tuple[str, ...] = ("id", "attributes", "group_names")
        texts = map(group_text.__getitem__, map(_GROUPS, batch))
        if len(role_text) == 1:
            same["role_names"] = next(iter(role_text.values()))
            rows: list[tuple[object, ...]] = list(zip(ids, map(_ATTRIBUTES, batch), texts,
                                                      strict=True))
        else:
            columns += ("role_names",)
            rows = list(zip(ids, map(_ATTRIBUTES, batch), texts,
                            map(role_text.__getitem__, roles), strict=True))
        before = last_rowid(self.conn, m.devices)
        savepoint = self.conn.begin_nested()
        try:
            # Each row carries its group and role names as the links below will have them
            # (both sorted), so the database's triggers that keep them (migration 0028)
            # find nothing to change.
            insert_rows(self.conn, m.devices, columns, rows, same=same)
        except BulkConflict:
            savepoint.rollback()
            self._refuse(batch)
            raise
        savepoint.commit()
        # Counted in C (map) rather than row by row in Python: the links each kind of name
        # makes, and the most names one row holds.
        group_counts = list(map(len, map(_GROUPS, batch)))
        role_counts = list(map(len, roles))
        if any(role_counts):
            self.bound = True
        # Every foreign key of the links holds, checked once per key and not per row: each
        # device was inserted just above by this transaction (unseen by anyone else), each
        # group and role is locked by _ensure_groups and _roles. The store's per-row checks
        # can then be skipped (see references_checked, and the transaction's
        # references_vouched on SQLite); the policy change the bindings make is announced
        # by bump_policy_version at the end, as before.
        # Each device row above carries the names these links give it: the triggers that
        # keep them (migration 0028) are told so for the whole import (names_written in
        # _import_batches) and need not look each device up again.
        if before is not None:
            self._links_from_names(before, group_counts, role_counts)
            return
        with references_checked(self.conn):
            insert_rows(self.conn, m.device_groups, ("device_id", "group_name"),
                        [(r[1], g) for r in batch for g in r[2]])
            if any(role_counts):
                insert_rows(self.conn, m.device_roles, ("device_id", "role_name"),
                            [(r[1], role) for r, held in zip(batch, roles, strict=True)
                             for role in held])

    def _links_from_names(self, before: int, group_counts: Sequence[int],
                          role_counts: Sequence[int]) -> None:
        """SQLite: the links of the devices just inserted (rowids above ``before``), made
        in the store from the names each device row carries, and counted against what the
        batch names (a shortfall would mean rows this import did not write). Where no row
        of the batch holds two names of a kind, its links take the names whole."""
        groups, roles = sum(group_counts), sum(role_counts)
        made = (links_from_names(self.conn, source=m.devices, after=before,
                                 names="group_names", link=m.device_groups,
                                 key="device_id", name="group_name",
                                 single=max(group_counts, default=0) <= 1),
                links_from_names(self.conn, source=m.devices, after=before,
                                 names="role_names", link=m.device_roles,
                                 key="device_id", name="role_name",
                                 single=max(role_counts, default=0) <= 1))
        if made != (groups, roles):
            raise StoreError(f"the import made {made[0]} group links and {made[1]} role "
                             f"bindings where its rows name {groups} and {roles}; nothing "
                             "was imported", hint="import again")

    def _refuse_repeated(self, batch: Sequence[ImportRow]) -> None:
        """Raise the error that names the first row of ``batch`` whose id an earlier row of
        it holds too."""
        seen: dict[str, int] = {}
        for line, device_id, *_ in batch:
            earlier = seen.setdefault(device_id, line)
            if earlier != line:
                raise InvalidInputError(
                    f"{self.unit} {line}: device {device_id!r} appears twice in the import "
                    f"(also on {self.unit} {earlier}); nothing was imported",
                    hint="remove the duplicate and import again")

    def _refuse(self, batch: Sequence[ImportRow]) -> None:
        """Raise the error that names the first row of ``batch`` whose id is taken."""
        ids = [r[1] for r in batch]
        taken: set[str] = set()
        for i in range(0, len(ids), 500):
            taken.update(self.conn.execute(select(m.devices.c.id).where(
                m.devices.c.id.in_(ids[i:i + 500]))).scalars())
        first = next((r for r in batch if r[1] in taken), None)
        if first is None:
            return  # not an id: the caller re-raises the store's conflict
        line, device_id = first[0], first[1]
        # Another connection sees only what was committed before this import.
        with reading(self.rt.engine) as other:
            registered = other.execute(select(m.devices.c.id).where(
                m.devices.c.id == device_id)).first() is not None
        if registered:
            raise ConflictError(f"{self.unit} {line}: device {device_id!r} is already "
                                "registered; nothing was imported",
                                hint="remove the registered ids and import again")
        raise InvalidInputError(f"{self.unit} {line}: device {device_id!r} appears twice in "
                                "the import; nothing was imported",
                                hint="remove the duplicate and import again")


def _batches(rows: Iterable[ImportRow], batch_size: int) -> Iterator[list[ImportRow]]:
    it = iter(rows)
    while batch := list(islice(it, batch_size)):
        yield batch


def import_rows(rt: Runtime, rows: Iterable[ImportRow], *,
                progress: Callable[[int], None] | None = None,
                batch_size: int = IMPORT_BATCH, actor: str | None = None,
                unit: str = "line") -> int:
    """Register the devices of ``rows`` in one transaction, written in batches of
    ``batch_size`` as they are read: all or nothing. ``unit`` names a row's position in
    errors ("line" of a file). One ``device.imported`` event (the count, the first and
    last ids) in the same transaction. Returns the number of devices registered."""
    if batch_size < 1:
        raise InvalidInputError("the batch size must be at least 1")
    return _import_batches(rt, _batches(rows, batch_size), progress=progress, actor=actor,
                           unit=unit)


def _import_batches(rt: Runtime, batches: Iterator[list[ImportRow]], *,
                    progress: Callable[[int], None] | None, actor: str | None,
                    unit: str) -> int:
    moment = rt.now()
    total = 0
    first = last = ""
    try:
        # The import writes each device's group and role names with its row, equal to
        # the links it writes for it (_Writer.write), and no other links: it vouches for
        # them once for its whole transaction (on SQLite, the triggers are dropped and made
        # again once, not per batch).
        with (transaction(rt.engine, references_vouched=True) as conn,
              names_written(conn)):
            writer = _Writer(rt, conn, ts(moment), unit)
            for batch in batches:
                writer.write(batch)
                total += len(batch)
                first, last = first or batch[0][1], batch[-1][1]
                if progress:
                    progress(len(batch))
            if writer.bound:
                bump_policy_version(conn)
            if total:
                rt.events.record_in(conn, Event(moment, "device.imported", "success",
                                                actor=actor, detail={"count": total,
                                                                     "first": first,
                                                                     "last": last}))
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # stops a reader thread when the import stopped early
    if total:
        policy_changed(rt)
    return total


#: Batches read ahead of the one being written (memory stays bounded by this).
_AHEAD = 2
_DONE = object()


def _read_ahead(rows: Iterable[ImportRow], batch_size: int) -> Iterator[list[ImportRow]]:
    """The batches of ``rows``, read and validated by a thread of their own up to
    :data:`_AHEAD` batches ahead, so that reading the file overlaps with the store's work
    on the batch before (the driver lets other threads run while it waits for the store).
    An error raised while reading (a bad line) is raised here, in order, after the batches
    before it; when the caller stops early the thread stops too."""
    ready: queue.Queue[object] = queue.Queue(maxsize=_AHEAD)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            batch: list[ImportRow] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= batch_size:
                    if not put(batch):
                        return
                    batch = []
            if batch and not put(batch):
                return
            put(_DONE)
        except BaseException as exc:  # handed to the caller, which raises it
            put(exc)

    reader = threading.Thread(target=read, name="iotsec-import-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(list[ImportRow], item)
    finally:
        stop.set()
        # A reader blocked on its input (standard input) is not waited for: it is a daemon
        # and touches nothing but its input and the queue.
        reader.join(timeout=1.0)


def import_csv(rt: Runtime, stream: TextIO, *, progress: Callable[[int], None] | None = None,
               batch_size: int = IMPORT_BATCH, actor: str | None = None) -> int:
    """Register the devices of a CSV file (see :func:`csv_rows`), streamed: all or
    nothing. On PostgreSQL the file is read and validated ahead, by a thread of its own,
    while the server writes the batch before; on SQLite the writes run in this process
    and hold the interpreter most of the time, so reading ahead gains nothing there (as
    measured) and the file is read in turn."""
    if batch_size < 1:
        raise InvalidInputError("the batch size must be at least 1")
    rows = csv_rows(stream)
    batches = (_read_ahead(rows, batch_size) if rt.engine.dialect.name == "postgresql"
               else _batches(rows, batch_size))
    return _import_batches(rt, batches, progress=progress, actor=actor, unit="line")
