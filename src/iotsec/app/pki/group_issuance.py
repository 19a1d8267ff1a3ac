"""Group commit for one certificate per request in a serving process.

Requests that arrive while a commit is in flight are handled together in the next
transaction; each caller is answered only after that transaction committed, so a
certificate handed out is always in the store with its ``key.use`` and ``cert.issued``
events. The requests of a group are independent: one refused is answered with its own
error while the others are issued. If the transaction fails (or the process dies before
its commit), no request of the group is answered with a certificate. On PostgreSQL a
transaction may be chosen to give way to another's locks (a deadlock between two serving
processes' groups): a unit of work that gave way alone runs again in a later group, and so
does every request of a group whose whole transaction gave way, at most
:data:`MAX_RETRIES` times each.

A group holds two kinds of requests:

- an **issuance** (:meth:`IssuanceGroups.issue`, the API's issuance route): issued as
  :func:`iotsec.app.pki.issuance.issue_batch` issues a batch. Every check that can refuse
  an issuance runs before it writes anything, so it needs no savepoint. A CSR that does not
  parse or verify is refused before it joins a group.
- a **unit of work** (:meth:`IssuanceGroups.run`, EST's enrolment): a function of the
  group's connection that may write before it refuses (an enrolment consumes its
  credential and registers its device before the certificate is issued). It runs in a
  savepoint of its own: when it raises, what it wrote is rolled back and it is answered
  with its error (a unique violation as a conflict), and the group goes on.

A group is held on the driver's own connection (:func:`iotsec.store.db.driver_transaction`)
when each of its requests runs only driver statements (every issuance does; a unit of work
says so with ``on_driver``); otherwise it is a SQLAlchemy unit of work.

The CA signatures made meanwhile (their ``key.use`` events) and the events the requests
return are appended to the event chain last, in the group's transaction.

One caller at a time leads: it takes what is waiting (at most :data:`MAX_GROUP`), runs it,
commits, answers the group, and hands the lead to the oldest request still waiting.
A lone request runs at once, in a group of one: nothing waits for company.

A request may also be awaited on an event loop (:meth:`IssuanceGroups.issue_async`,
:meth:`IssuanceGroups.run_async`, used by the HTTP edges): no thread waits for it. Such a
request cannot lead (the loop must not run a transaction), so the groups it joins are led
by the group commit's own thread, which runs groups while requests wait (the waiting
threads' requests as well) and is woken once per group, not per request. Its answers reach
each event loop in one callback per group (``call_soon_threadsafe``), after the commit.
A request whose waiter is cancelled before its group took it is withdrawn (nothing of it
is written); once taken, it is committed or refused with its group, and its answer is
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from iotsec.app.events import Event, append_events
from iotsec.app.pki.cert_records import CertificateRecord, record_from_row
from iotsec.app.pki.issuance import issue_prepared, record_shared
from iotsec.app.runtime import Runtime, Slot
from iotsec.errors import IotsecError
from iotsec.identity.registry import parse_device_id
from iotsec.pki.csr import CheckedCsr, parse_csr
from iotsec.store.db import driver_transaction, transaction, unit_error
from iotsec.store.direct import Savepoints, core
from iotsec.store.direct import Unit as StoreUnit
from iotsec.store.failures import lock_conflict

__all__ = ["IDLE_SECONDS", "MAX_GROUP", "IssuanceGroups", "Unit", "groups_of", "issue_grouped",
           "issue_grouped_async", "run_grouped", "run_grouped_async", "run_grouped_on_driver"]

log = logging.getLogger("iotsec.app.pki.group_issuance")
_T = TypeVar("_T")
_Shared = dict[str, list[tuple[str, str | None]]]
#: The most requests one transaction handles.
MAX_GROUP = 256
#: How often a request that gave way to another transaction's locks (a PostgreSQL
#: deadlock between two serving processes' groups: a unit of work alone, or the group's
#: whole transaction) runs again, each time in a later group, before it is answered with
#: the error.
MAX_RETRIES = 3
#: Seconds the group commit's thread waits for work before it ends (a new one starts when
#: a request awaited on an event loop finds nobody leading).
IDLE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Unit(Generic[_T]):
    """What a unit of work of a group gives back: its result, and the event rows
    (:meth:`iotsec.app.events.Event.row`) to append to the chain with it."""

    result: _T
    events: list[dict[str, Any]] = field(default_factory=list)


#: A request's work: a function of the group's connection and moment.
Work = Callable[[StoreUnit, datetime], Unit[Any]]


@dataclass(eq=False)
class _Request:
    work: Work
    #: In a savepoint of its own (it may write before it refuses).
    alone: bool
    #: Runs only driver statements (:class:`iotsec.store.direct.Direct`), so that it may
    #: run on the driver's own connection.
    on_driver: bool
    #: Set when a waiting thread's request is answered or handed the lead; None for a
    #: request awaited on an event loop.
    done: threading.Event | None = None
    #: The event loop and future of a request awaited there.
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[Any] | None = None
    lead: bool = False
    #: Times it gave way to another transaction's locks and was put back (MAX_RETRIES).
    retries: int = 0
    answered: bool = False
    result: Any = None
    error: BaseException | None = None


class IssuanceGroups:
    """The group commit of one runtime (see the module's notes)."""

    def __init__(self, rt: Runtime, *, before_commit: Callable[[], None] | None = None) -> None:
        self._rt = rt
        self._lock = threading.Lock()
        self._waiting: list[_Request] = []
        self._leading = False
        #: The group commit's own thread (None when it has ended), whether it leads, and
        #: what wakes it.
        self._runner: threading.Thread | None = None
        self._runner_leads = False
        self._wake = threading.Condition(self._lock)
        #: Runs in the group's transaction before its commit (tests: a crash there).
        self.before_commit = before_commit

    def issue(self, device_id: str, csr: bytes | CheckedCsr, *, days: int | None = None,
              profile: str | None = None, allow_shared_key: bool = False,
              actor: str | None = None) -> CertificateRecord:
        """Issue one certificate, in the next group; returns once it is committed."""
        request = self._issuance(device_id, csr, days=days, profile=profile,
                                 allow_shared_key=allow_shared_key, actor=actor)
        return self._issued(self._submit(request))

    async def issue_async(self, device_id: str, csr: bytes | CheckedCsr, *,
                          days: int | None = None, profile: str | None = None,
                          allow_shared_key: bool = False,
                          actor: str | None = None) -> CertificateRecord:
        """:meth:`issue` awaited on the running event loop: no thread waits for it."""
        request = self._issuance(device_id, csr, days=days, profile=profile,
                                 allow_shared_key=allow_shared_key, actor=actor)
        return self._issued(await self._submit_async(request))

    def _issuance(self, device_id: str, csr: bytes | CheckedCsr, *, days: int | None,
                  profile: str | None, allow_shared_key: bool, actor: str | None) -> _Request:
        checked = csr if isinstance(csr, CheckedCsr) else parse_csr(csr)
        device = parse_device_id(device_id)
        rt = self._rt

        def work(conn: StoreUnit, moment: datetime) -> Unit[tuple[dict[str, Any], _Shared]]:
            values, shared = issue_prepared(conn, rt, device, checked, moment, days=days,
                                            profile=profile,
                                            allow_shared_key=allow_shared_key)
            issued = Event(moment, "cert.issued", "success", actor=actor,
                           subject=str(values["serial"]),
                           detail={"device": values["device_id"], "profile": values["profile"],
                                   "not_after": values["not_after"]})
            return Unit((values, shared), [issued.row()])

        return _Request(work, alone=False, on_driver=True)

    def _issued(self, outcome: tuple[dict[str, Any], _Shared]) -> CertificateRecord:
        values, shared = outcome
        if shared:
            record_shared(self._rt, [values], shared)
        return record_from_row(values)

    def run(self, work: Callable[[Connection, datetime], Unit[_T]]) -> _T:
        """Run ``work`` in the next group, in a savepoint of its own; returns its result
        once the group committed, or raises what it raised (a database error as
        :func:`iotsec.store.db.transaction` maps it). ``work`` must not open a unit of work
        of its own."""
        result: _T = self._submit(_Request(lambda conn, moment: work(core(conn), moment),
                                           alone=True, on_driver=False))
        return result

    def run_on_driver(self, work: Callable[[StoreUnit, datetime], Unit[_T]]) -> _T:
        """:meth:`run` for a ``work`` that runs only driver statements
        (:class:`iotsec.store.direct.Direct`): its group may be held on the driver's own
        connection, without SQLAlchemy's unit of work around it."""
        result: _T = self._submit(_Request(work, alone=True, on_driver=True))
        return result

    async def run_async(self, work: Callable[[StoreUnit, datetime], Unit[_T]]) -> _T:
        """:meth:`run_on_driver` awaited on the running event loop: no thread waits for
        it. ``work`` runs in the group commit's thread."""
        result: _T = await self._submit_async(_Request(work, alone=True, on_driver=True))
        return result

    def _submit(self, request: _Request) -> Any:
        self._rt.authority("issuing")  # a first load reads the store: not in the group
        request.done = threading.Event()
        with self._lock:
            self._waiting.append(request)
            if not self._leading:
                self._leading = request.lead = True
        # ``done`` is set when the request is answered, or when it is handed the lead (it
        # is then the oldest waiting, and leads the group that answers it).
        while True:
            if request.lead:
                request.lead = False
                self._lead()
            if request.answered:
                break
            request.done.wait()
            request.done.clear()
        if request.error is not None:
            raise request.error
        return request.result

    async def _submit_async(self, request: _Request) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        request.loop, request.future = loop, future
        with self._lock:
            self._waiting.append(request)
            if not self._leading:
                self._leading = True
                self._to_runner()
        try:
            return await future
        except asyncio.CancelledError:
            with self._lock:
                # Not taken by a group yet: withdrawn, nothing of it written. Taken: it is
                # committed or refused with its group; nobody waits for the answer.
                if request in self._waiting:
                    self._waiting.remove(request)
            raise

    def _to_runner(self) -> None:
        """Hand the lead to the group commit's thread (started if it has ended). The lock
        is held."""
        self._runner_leads = True
        if self._runner is None:
            self._runner = threading.Thread(target=self._serve, name="iotsec-group-commit",
                                            daemon=True)
            self._runner.start()
        else:
            self._wake.notify()

    def _serve(self) -> None:
        """The group commit's thread: leads while it is handed the lead, runs groups while
        requests wait, and ends after :data:`IDLE_SECONDS` without work."""
        while True:
            with self._lock:
                while not self._runner_leads:
                    if not self._wake.wait(IDLE_SECONDS) and not self._runner_leads:
                        self._runner = None
                        return
            while True:
                with self._lock:
                    group = self._waiting[:MAX_GROUP]
                    del self._waiting[:MAX_GROUP]
                    if not group:
                        self._runner_leads = self._leading = False
                        break
                try:
                    self._run(group)
                except BaseException as exc:
                    # Only a non-Exception gets here (_run answered the group with it). The
                    # thread keeps leading: the requests waiting must not be left unled.
                    log.error("a group of the group commit ended with %s", type(exc).__name__)

    def _lead(self) -> None:
        with self._lock:
            group = self._waiting[:MAX_GROUP]
            del self._waiting[:MAX_GROUP]
        try:
            self._run(group)
        finally:
            with self._lock:
                successor = self._waiting[0] if self._waiting else None
                if successor is None:
                    self._leading = False
                elif successor.done is None:
                    # Awaited on an event loop: it cannot lead; the group's thread does.
                    self._to_runner()
                else:
                    successor.lead = True
                    successor.done.set()

    def _run(self, group: list[_Request]) -> None:
        rt = self._rt
        moment = rt.now()
        done: list[tuple[_Request, Any]] = []
        refused: list[tuple[_Request, BaseException]] = []
        again: list[_Request] = []
        try:
            # A first load (or a reload) of the CA reads the store: before the group's
            # transaction. Each waiting thread's request loaded it too before it joined.
            rt.authority("issuing")
            unit_of_work = (driver_transaction if all(r.on_driver for r in group)
                            else transaction)
            with rt.events.held() as signatures, unit_of_work(rt.engine) as conn:
                rows: list[dict[str, Any]] = []
                parts = Savepoints(conn)
                for request in group:
                    try:
                        unit = self._one(conn, parts, request, moment)
                    except _Again:
                        again.append(request)
                        continue
                    except _Refused as refusal:
                        refused.append((request, refusal.error))
                        continue
                    done.append((request, unit.result))
                    rows += unit.events
                # In the chain with the changes, last in the unit of work (the chain lock):
                # the CA key's uses (key.use), then the requests' own events.
                append_events(conn, [*signatures.take(), *rows])
                if self.before_commit is not None:
                    self.before_commit()
        except BaseException as exc:
            if _gave_way(exc) and all(r.retries < MAX_RETRIES for r in group):
                # The group's transaction itself gave way to another's locks (in an
                # issuance, which has no savepoint, or at the chain's lock or the commit):
                # nothing of it was written, and each of its requests runs again, first in
                # the next group, as a unit that gave way alone does.
                for request in group:
                    request.retries += 1
                with self._lock:
                    self._waiting[0:0] = group
                return
            _answer([(request, None, exc) for request in group])
            if not isinstance(exc, Exception):
                raise
            return
        if again:
            # First in the next group, in their order; nothing of them was written. Whoever
            # leads next (the thread that leads now, or the oldest waiting) runs them.
            with self._lock:
                self._waiting[0:0] = again
        _answer([*((request, None, error) for request, error in refused),
                 *((request, result, None) for request, result in done)])

    def _one(self, conn: StoreUnit, parts: Savepoints, request: _Request, moment: datetime
             ) -> Unit[Any]:
        """One request in the group's transaction. A refusal raises :class:`_Refused` and
        leaves nothing written: an issuance refuses (an IotsecError) before it writes; a
        unit of work, whatever it raises, is rolled back to its savepoint (the next part of
        ``parts``)."""
        if not request.alone:
            try:
                return request.work(conn, moment)
            except IotsecError as exc:
                raise _Refused(exc) from exc
        parts.begin()
        try:
            unit = request.work(conn, moment)
        except Exception as exc:
            # A failure to roll back (the database ended the transaction) is not this
            # request's refusal: it propagates, and fails the group.
            parts.rollback()
            if isinstance(exc, DBAPIError):
                if lock_conflict(exc.orig) and request.retries < MAX_RETRIES:
                    # Another group's transaction holds what it needs (on PostgreSQL, a
                    # group's locks are held until it commits: two processes' groups may
                    # deadlock). Rolled back to its savepoint, it runs in a later group.
                    request.retries += 1
                    raise _Again from exc
                raise _Refused(unit_error(exc, self._rt.engine)) from exc
            raise _Refused(exc) from exc
        return unit


def _answer(answers: list[tuple[_Request, Any, BaseException | None]]) -> None:
    """Answer each request with its result or error: a waiting thread by its event, the
    requests awaited on an event loop by one callback per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Request, Any, BaseException | None]]]
    by_loop = {}
    for answer in answers:
        request, result, error = answer
        request.result, request.error = result, error
        request.answered = True
        if request.done is not None:
            request.done.set()
        elif request.loop is not None:
            by_loop.setdefault(request.loop, []).append(answer)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to answer
            loop.call_soon_threadsafe(_settle, settled)


def _settle(answers: list[tuple[_Request, Any, BaseException | None]]) -> None:
    """On the requests' event loop: resolve their futures (a cancelled one is left)."""
    for request, result, error in answers:
        future = request.future
        if future is None or future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _gave_way(exc: BaseException) -> bool:
    """Is ``exc`` (or the database error the unit of work raised it for) PostgreSQL's
    choice that this transaction give way to another's locks?"""
    cause = exc if isinstance(exc, DBAPIError) else exc.__cause__
    return isinstance(cause, DBAPIError) and lock_conflict(cause.orig)


class _Again(Exception):
    """A request of a group that gave way to another transaction's locks: rolled back to
    its savepoint, it runs again in a later group."""


class _Refused(Exception):
    """A request of a group refused alone: ``error`` is its answer."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


_GROUPS: Slot[IssuanceGroups] = Slot("pki.issuance-groups")


def groups_of(rt: Runtime) -> IssuanceGroups:
    """The runtime's group commit, which every grouped issuance and unit of work joins."""
    return rt.get_or_put(_GROUPS, lambda: IssuanceGroups(rt))


def issue_grouped(rt: Runtime, device_id: str, csr: bytes, *, days: int | None = None,
                  profile: str | None = None, allow_shared_key: bool = False,
                  actor: str | None = None) -> CertificateRecord:
    """:func:`iotsec.app.pki.issuance.issue_from_csr` for a serving process: concurrent
    calls share one transaction (group commit), each answered after its commit."""
    return groups_of(rt).issue(device_id, csr, days=days, profile=profile,
                             allow_shared_key=allow_shared_key, actor=actor)


def run_grouped(rt: Runtime, work: Callable[[Connection, datetime], Unit[_T]]) -> _T:
    """Run ``work`` in the runtime's group commit (:meth:`IssuanceGroups.run`): concurrent
    units of work (and issuances) share one transaction, each answered after its commit."""
    return groups_of(rt).run(work)


async def issue_grouped_async(rt: Runtime, device_id: str, csr: bytes, *,
                              days: int | None = None, profile: str | None = None,
                              allow_shared_key: bool = False,
                              actor: str | None = None) -> CertificateRecord:
    """:func:`issue_grouped` awaited on the running event loop (no thread waits for it)."""
    return await groups_of(rt).issue_async(device_id, csr, days=days, profile=profile,
                                           allow_shared_key=allow_shared_key, actor=actor)


async def run_grouped_async(rt: Runtime, work: Callable[[StoreUnit, datetime], Unit[_T]]
                            ) -> _T:
    """:func:`run_grouped_on_driver` awaited on the running event loop
    (:meth:`IssuanceGroups.run_async`)."""
    return await groups_of(rt).run_async(work)


def run_grouped_on_driver(rt: Runtime, work: Callable[[StoreUnit, datetime], Unit[_T]]) -> _T:
    """:func:`run_grouped` for a ``work`` that runs only driver statements
    (:meth:`IssuanceGroups.run_on_driver`)."""
    return groups_of(rt).run_on_driver(work)
