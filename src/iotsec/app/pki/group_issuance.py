"""Group commit for one certificate per request in a serving process.

Requests that arrive while a commit is in flight are issued together in the next
transaction, as :func:`iotsec.app.pki.issuance.issue_batch` issues a batch; each caller is
answered only after that transaction committed, so a certificate handed out is always in
the store with its ``key.use`` and ``cert.issued`` events. Unlike a batch's, the requests
of a group are independent: one refused (a device that is not registered or may not hold
certificates, a key another identity holds, a profile that refuses the key) is answered
with its own error while the others are issued. Every check that can refuse an issuance
runs before it writes anything, so no savepoint is needed. A CSR that does not parse or
verify is refused before it joins a group. If the transaction fails (or
the process dies before its commit), no request of the group is answered with a
certificate.

One caller at a time leads: it takes what is waiting (at most :data:`MAX_GROUP`), issues
it, commits, answers the group, and hands the lead to the oldest request still waiting.
A lone request is issued at once, in a group of one: nothing waits for company.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from iotsec.app.events import Event, append_events
from iotsec.app.pki.cert_records import CertificateRecord, record_from_row
from iotsec.app.pki.issuance import issue_prepared, record_shared
from iotsec.app.runtime import Runtime, Slot
from iotsec.errors import IotsecError
from iotsec.identity.registry import parse_device_id
from iotsec.pki.csr import CheckedCsr, parse_csr
from iotsec.store.db import transaction

__all__ = ["MAX_GROUP", "IssuanceGroups", "issue_grouped"]

_Shared = dict[str, list[tuple[str, str | None]]]
#: The most requests one transaction issues.
MAX_GROUP = 256


@dataclass(eq=False)
class _Request:
    device_id: str
    csr: CheckedCsr
    days: int | None
    profile: str | None
    allow_shared_key: bool
    actor: str | None
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    record: CertificateRecord | None = None
    error: BaseException | None = None


class IssuanceGroups:
    """The group commit of one runtime (see the module's notes)."""

    def __init__(self, rt: Runtime, *, before_commit: Callable[[], None] | None = None) -> None:
        self._rt = rt
        self._lock = threading.Lock()
        self._waiting: list[_Request] = []
        self._leading = False
        #: Runs in the group's transaction before its commit (tests: a crash there).
        self.before_commit = before_commit

    def issue(self, device_id: str, csr: bytes | CheckedCsr, *, days: int | None = None,
              profile: str | None = None, allow_shared_key: bool = False,
              actor: str | None = None) -> CertificateRecord:
        """Issue one certificate, in the next group; returns once it is committed."""
        checked = csr if isinstance(csr, CheckedCsr) else parse_csr(csr)
        request = _Request(parse_device_id(device_id), checked, days, profile,
                           allow_shared_key, actor)
        self._rt.authority("issuing")  # a first load reads the store: not in the group
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
            if request.record is not None or request.error is not None:
                break
            request.done.wait()
            request.done.clear()
        if request.error is not None:
            raise request.error
        assert request.record is not None
        return request.record

    def _lead(self) -> None:
        with self._lock:
            group = self._waiting[:MAX_GROUP]
            del self._waiting[:MAX_GROUP]
        try:
            self._run(group)
        finally:
            with self._lock:
                if self._waiting:
                    successor = self._waiting[0]
                    successor.lead = True
                    successor.done.set()
                else:
                    self._leading = False

    def _run(self, group: list[_Request]) -> None:
        rt = self._rt
        moment = rt.now()
        issued: list[tuple[_Request, dict[str, Any], _Shared]] = []
        refused: list[tuple[_Request, IotsecError]] = []
        try:
            with rt.events.held() as signatures, transaction(rt.engine) as conn:
                for request in group:
                    # A refusal raises before the request wrote anything (see _issue):
                    # the group goes on without it.
                    try:
                        values, shared = issue_prepared(
                            conn, rt, request.device_id, request.csr, moment,
                            days=request.days, profile=request.profile,
                            allow_shared_key=request.allow_shared_key)
                    except IotsecError as exc:
                        refused.append((request, exc))
                        continue
                    issued.append((request, values, shared))
                append_events(conn, [*signatures.take(), *(
                    Event(moment, "cert.issued", "success", actor=r.actor,
                          subject=str(v["serial"]), detail={
                              "device": v["device_id"], "profile": v["profile"],
                              "not_after": v["not_after"]}).row() for r, v, _ in issued)])
                if self.before_commit is not None:
                    self.before_commit()
        except BaseException as exc:
            for request in group:
                request.error = exc
                request.done.set()
            if not isinstance(exc, Exception):
                raise
            return
        for request, error in refused:
            request.error = error
            request.done.set()
        for request, values, shared in issued:
            request.record = record_from_row(values)
            request.done.set()
            if shared:
                record_shared(rt, [values], shared)


_GROUPS: Slot[IssuanceGroups] = Slot("pki.issuance-groups")


def issue_grouped(rt: Runtime, device_id: str, csr: bytes, *, days: int | None = None,
                  profile: str | None = None, allow_shared_key: bool = False,
                  actor: str | None = None) -> CertificateRecord:
    """:func:`iotsec.app.pki.issuance.issue_from_csr` for a serving process: concurrent
    calls share one transaction (group commit), each answered after its commit."""
    groups = rt.get_or_put(_GROUPS, lambda: IssuanceGroups(rt))
    return groups.issue(device_id, csr, days=days, profile=profile,
                        allow_shared_key=allow_shared_key, actor=actor)
