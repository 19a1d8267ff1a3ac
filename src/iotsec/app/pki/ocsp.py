"""The OCSP responder (RFC 6960, RFC 5019 profile): what ``/ocsp`` answers.

**Which CA.** A CertID names its issuer by the hash of its name and key; the responder
looks it up among *all* the CAs in the store (root and issuing, active or not). A CertID
of a CA it does not have is answered ``unauthorized`` (RFC 6960 2.3).

**Which status.** ``revoked`` (with time and reason) when the store records a revocation
that has taken effect; ``good`` for a certificate of that CA that is not (a certificate
superseded with a grace period is good until its revocation takes effect, and its answer's
nextUpdate is never later than that moment); for the root, the issuing CAs it signed are
``good``; ``unknown`` for a serial the CA never issued. RFC 6960 2.2 would also allow
``revoked`` for a serial never issued (the "extended revoked" definition); iotsec follows
RFC 5019 and the plain reading of RFC 6960: ``unknown``, which a relying party must not
take as good.

**Pre-signed answers.** An answer without a nonce (RFC 5019's kind, what most relying
parties ask) is signed once and kept in the serving process's memory, keyed by the exact
request; it is served from memory, on the event loop, while half of its validity
(``IOTSEC_OCSP_VALIDITY_HOURS``) has not passed, no revocation was recorded in this process,
and its status was read from the store less than ``IOTSEC_HOT_CACHE_SECONDS`` ago. Every
such period, the statuses of the answers asked for during the last one are read again in
one batch (the cost follows what relying parties ask, not how many answers are held); an
answer not asked for meanwhile is checked alone when it is asked for again. An answer whose
status changed is signed afresh; one whose status did not is reused. So a revocation made
by another process (another worker, ``iotsec cert revoke``) reaches the answers within
``IOTSEC_HOT_CACHE_SECONDS``. A request with a nonce is signed fresh.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any

from cryptography import x509
from sqlalchemy import select

from iotsec.app.pki.ocsp_responder import ocsp_signer
from iotsec.app.pki.revocation import revocation_mark
from iotsec.app.runtime import Runtime, Slot
from iotsec.errors import ClockBehindError, IotsecError, OcspRequestError, OcspRotationBusyError
from iotsec.pki import x509 as enc
from iotsec.pki.ca import Authority
from iotsec.pki.crl import RevocationReason
from iotsec.pki.ocsp import (
    HASHES,
    CertId,
    CertStatus,
    OcspRequest,
    ResponseStatus,
    SingleAnswer,
    build_response,
    error_response,
    issuer_hashes,
    parse_request,
)
from iotsec.pki.serial import format_serial
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import from_ts, ts

__all__ = ["MAX_HELD", "OcspAnswer", "answer", "answer_from_memory", "known_authorities",
           "prepare_responders"]

log = logging.getLogger("iotsec.ocsp")

#: Pre-signed answers one serving process keeps at most (about 1 to 3 KiB each).
MAX_HELD = 50_000
_BATCH = 500


@dataclass(frozen=True, slots=True)
class OcspAnswer:
    """An OCSPResponse and what its HTTP headers say (RFC 5019 6.2)."""

    der: bytes
    #: Shared caches may keep it (no nonce, a successful answer) until this moment.
    next_update: datetime | None = None
    #: Last-Modified, Expires and ETag of a cacheable answer.
    fixed: tuple[tuple[bytes, bytes], ...] = ()

    @classmethod
    def cacheable(cls, der: bytes, this_update: datetime, next_update: datetime
                  ) -> OcspAnswer:
        etag = hashlib.sha256(der).hexdigest()[:32]
        return cls(der, next_update, (
            (b"last-modified", format_datetime(this_update, usegmt=True).encode("ascii")),
            (b"expires", format_datetime(next_update, usegmt=True).encode("ascii")),
            (b"etag", f'"{etag}"'.encode("ascii"))))

    def headers(self, now: datetime) -> list[tuple[bytes, bytes]]:
        """The response headers: ``Content-Type``, ``Cache-Control`` (``max-age`` up to
        nextUpdate for a cacheable answer, else ``no-store``) and the fixed ones."""
        if self.next_update is None:
            return [_CONTENT_TYPE, (b"cache-control", b"no-store")]
        max_age = max(0, int((self.next_update - now).total_seconds()))
        return [_CONTENT_TYPE,
                (b"cache-control", b"max-age=%d, public, no-transform, must-revalidate"
                 % max_age), *self.fixed]


_CONTENT_TYPE = (b"content-type", b"application/ocsp-response")


def _error(status: ResponseStatus) -> OcspAnswer:
    return OcspAnswer(error_response(status))


# --- the CAs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ca:
    id: int
    der: bytes
    key_label: str
    subject: bytes
    #: Serials of the CA certificates this CA signed (the root's issuing CAs).
    children: frozenset[int]


@dataclass(slots=True)
class _Directory:
    by_hash: dict[tuple[str, bytes, bytes], _Ca]
    loaded_at: float
    authorities: dict[int, Authority] = field(default_factory=dict)


_CAS: Slot[_Directory] = Slot("ocsp.authorities")


def _load_directory(rt: Runtime) -> _Directory:
    a = m.authorities.c
    with reading(rt.engine) as conn:
        rows = conn.execute(select(a.id, a.parent_id, a.cert_der, a.key_label)).all()
    certs = {int(r.id): x509.load_der_x509_certificate(r.cert_der) for r in rows}
    children: dict[int, set[int]] = {}
    for r in rows:
        if r.parent_id is not None and int(r.parent_id) != int(r.id):
            children.setdefault(int(r.parent_id), set()).add(certs[int(r.id)].serial_number)
    by_hash = {}
    for r in rows:
        cert = certs[int(r.id)]
        subject = cert.subject.public_bytes()
        spki = enc.spki_der(cert.public_key())
        ca = _Ca(int(r.id), bytes(r.cert_der), r.key_label, subject,
                 frozenset(children.get(int(r.id), ())))
        for name in HASHES.values():
            by_hash[(name, *issuer_hashes(subject, spki, name))] = ca
    return _Directory(by_hash, time.monotonic())


def known_authorities(rt: Runtime) -> int:
    """How many CAs the responder answers for (read from the store now)."""
    directory = rt.put(_CAS, _load_directory(rt))
    return len({ca.id for ca in directory.by_hash.values()})


def _find(rt: Runtime, cert_id: CertId) -> _Ca | None:
    key = (cert_id.hash_name, cert_id.issuer_name_hash, cert_id.issuer_key_hash)
    directory = rt.get(_CAS)
    if directory is None:
        directory = rt.put(_CAS, _load_directory(rt))
    found = directory.by_hash.get(key)
    # A CA made since (a rotation in another process) is found at the next read; unknown
    # issuers read the store at most once per hot_cache_seconds (and at least a second).
    if found is None and time.monotonic() - directory.loaded_at > max(
            rt.settings.hot_cache_seconds, 1.0):
        directory = rt.put(_CAS, _load_directory(rt))
        found = directory.by_hash.get(key)
    return found


def _authority(rt: Runtime, ca: _Ca) -> Authority:
    directory = rt.get(_CAS)
    assert directory is not None
    held = directory.authorities.get(ca.id)
    if held is None:
        held = Authority.from_der(ca.der, rt.keys.load(ca.key_label))
        directory.authorities[ca.id] = held
    return held


# --- statuses ------------------------------------------------------------------------

#: (status, revoked_at or None, reason code or None) of one certificate in the store.
_State = tuple[CertStatus, int | None, int | None]


def _states(rt: Runtime, wanted: Sequence[tuple[_Ca, int]], now: int) -> list[_State]:
    c = m.certificates.c
    keys = sorted({format_serial(serial) for _, serial in wanted})
    rows: dict[str, Any] = {}
    with reading(rt.engine) as conn:
        for i in range(0, len(keys), _BATCH):
            for found in conn.execute(select(c.serial, c.authority_id, c.revoked_at,
                                             c.revocation_reason)
                                      .where(c.serial.in_(keys[i:i + _BATCH]))):
                rows[found.serial] = found
    out: list[_State] = []
    for ca, serial in wanted:
        row = rows.get(format_serial(serial))
        if row is not None and row.authority_id == ca.id:
            if row.revoked_at is not None and row.revoked_at <= now:
                out.append((CertStatus.revoked, row.revoked_at, row.revocation_reason))
            else:
                # A revocation set for later (a superseded certificate's grace period)
                # is kept: it bounds the answer's nextUpdate.
                out.append((CertStatus.good, row.revoked_at, None))
        elif serial in ca.children:
            out.append((CertStatus.good, None, None))
        else:
            out.append((CertStatus.unknown, None, None))
    return out


def _single(cert_id: CertId, state: _State, moment: datetime, until: datetime) -> SingleAnswer:
    status, revoked_at, reason = state
    if status is CertStatus.good and revoked_at is not None:
        until = min(until, from_ts(revoked_at))
    return SingleAnswer(cert_id, status, this_update=moment, next_update=until,
                        revoked_at=from_ts(revoked_at) if status is CertStatus.revoked
                        and revoked_at is not None else None,
                        reason=RevocationReason(reason) if reason is not None else None)


# --- the pre-signed answers -----------------------------------------------------------


@dataclass(slots=True)
class _Held:
    answer: OcspAnswer
    ca: _Ca
    serial: int
    state: _State
    refresh_at: datetime
    #: The check against the store that last found its status unchanged.
    epoch: int


@dataclass(slots=True)
class _Cache:
    held: dict[bytes, _Held] = field(default_factory=dict)
    #: Requests answered (or signed) since the last check: what the next one reads again.
    touched: set[bytes] = field(default_factory=set)
    epoch: int = 0
    checked_at: float = -1e9  # time.monotonic() of the last check against the store
    checked_clock: datetime | None = None
    mark: int = -1
    lock: threading.Lock = field(default_factory=threading.Lock)


_CACHE: Slot[_Cache] = Slot("ocsp.cache")


def _current(rt: Runtime, cache: _Cache, now: datetime) -> bool:
    """Whether the held answers were checked against the store recently enough."""
    ttl = rt.settings.hot_cache_seconds
    checked = cache.checked_clock
    return (ttl > 0 and cache.mark == revocation_mark() and checked is not None
            and 0 <= time.monotonic() - cache.checked_at < ttl
            and checked <= now < checked + timedelta(seconds=ttl))


def answer_from_memory(rt: Runtime, body: bytes, now: datetime | None = None
                       ) -> OcspAnswer | None:
    """The pre-signed answer to exactly this request, while it may be given at ``now``
    (default ``rt.now()``; see the module's description); ``None``: ask :func:`answer`.
    No I/O."""
    cache = rt.get(_CACHE)
    if cache is None:
        return None
    held = cache.held.get(body)
    if held is None:
        return None
    now = now or rt.now()
    if held.epoch != cache.epoch or now >= held.refresh_at or not _current(rt, cache, now):
        return None
    cache.touched.add(body)
    return held.answer


def _recheck(rt: Runtime, cache: _Cache, now: datetime) -> None:
    """Start a new check period: read again, in one batch, the statuses of the answers
    asked for in the last one; those unchanged stay servable from memory, those changed
    are dropped. An answer nobody asked for stays held, unverified, and is checked alone
    when it is asked for again (and reused if its status has not changed)."""
    mark = revocation_mark()
    started, clock = time.monotonic(), rt.now()
    # The event loop adds to the touched set while this runs in a worker thread: take it
    # whole and start a new one (list() of a set is one step under the GIL).
    touched, cache.touched = cache.touched, set()
    held_now = [(body, cache.held.get(body)) for body in list(touched)]
    items = [(body, held) for body, held in held_now if held is not None]
    states = _states(rt, [(h.ca, h.serial) for _, h in items], ts(now))
    cache.epoch += 1
    for (body, held), state in zip(items, states, strict=True):
        if state != held.state or now >= held.refresh_at:
            cache.held.pop(body, None)
        else:
            held.epoch = cache.epoch
    cache.checked_at, cache.checked_clock, cache.mark = started, clock, mark


def _sign(rt: Runtime, request: OcspRequest, cas: Sequence[_Ca], states: Sequence[_State],
          moment: datetime) -> tuple[bytes, datetime]:
    authority = _authority(rt, cas[0])
    signer = ocsp_signer(rt, cas[0].id, authority)
    until = min(moment + timedelta(hours=rt.settings.ocsp_validity_hours), signer.not_after)
    answers = [_single(cert_id, state, moment, until)
               for cert_id, state in zip(request.cert_ids, states, strict=True)]
    der = build_response(signer.signer, answers, produced_at=moment, nonce=request.nonce,
                         certs=signer.certs)
    return der, min(a.next_update for a in answers)


def _answer(rt: Runtime, body: bytes) -> OcspAnswer:
    try:
        request = parse_request(body)
    except OcspRequestError:
        return _error(ResponseStatus.malformedRequest)
    cas = [_find(rt, cert_id) for cert_id in request.cert_ids]
    if any(ca is None for ca in cas) or len({ca.id for ca in cas if ca is not None}) > 1:
        # One signer answers for one CA: a request spanning CAs is asked of each apart.
        return _error(ResponseStatus.unauthorized)
    found = [ca for ca in cas if ca is not None]
    moment = rt.now().replace(microsecond=0)
    cacheable = request.nonce is None and len(request.cert_ids) == 1
    cache = rt.get_or_put(_CACHE, _Cache)
    if not cacheable:
        states = _states(rt, list(zip(found, (c.serial for c in request.cert_ids),
                                      strict=True)), ts(moment))
        der, _ = _sign(rt, request, found, states, moment)
        return OcspAnswer(der)
    with cache.lock:
        # The exact time, not ``moment`` (whole seconds, for the answer): the check period
        # started at an exact time, and a truncated clock would find it not started yet.
        if not _current(rt, cache, rt.now()):
            _recheck(rt, cache, moment)
        held = cache.held.get(body)
        states = _states(rt, [(found[0], request.cert_ids[0].serial)], ts(moment)) \
            if held is None or held.epoch != cache.epoch else [held.state]
        if held is not None and moment < held.refresh_at and states[0] == held.state:
            held.epoch = cache.epoch
            cache.touched.add(body)
            return held.answer
        der, until = _sign(rt, request, found, states, moment)
        half = timedelta(hours=rt.settings.ocsp_validity_hours) / 2
        done = OcspAnswer.cacheable(der, moment, until)
        if len(cache.held) >= MAX_HELD:
            cache.held.pop(next(iter(cache.held)))
        cache.held[body] = _Held(done, found[0], request.cert_ids[0].serial, states[0],
                                 min(moment + half, until), cache.epoch)
        cache.touched.add(body)
        return done


def answer(rt: Runtime, body: bytes) -> OcspAnswer:
    """The OCSPResponse to the DER OCSPRequest ``body``. Never raises for what a client
    sent: a request it cannot read is ``malformedRequest``, a CA it does not have
    ``unauthorized``, a clock behind the CA or a responder being replaced elsewhere
    ``tryLater``, anything else ``internalError``."""
    try:
        return _answer(rt, body)
    except (ClockBehindError, OcspRotationBusyError) as exc:
        log.warning("OCSP answered tryLater: %s", exc)
        return _error(ResponseStatus.tryLater)
    except IotsecError as exc:
        # A CA key that does not load (an offline root), a custody failure: the client
        # learns only internalError, the log says why.
        log.warning("OCSP answered internalError: %s (%s)", exc, exc.hint)
        return _error(ResponseStatus.internalError)


def prepare_responders(rt: Runtime) -> None:
    """Load the CAs and make sure the active ones have a usable OCSP signer (issuing or
    replacing each responder certificate as needed): what ``iotsec serve`` does before it
    answers."""
    known_authorities(rt)
    for role in ("issuing", "root"):
        try:
            ocsp_signer(rt, rt.authority_id(role), rt.authority(role))
        except IotsecError as exc:
            # A CA whose key is not online (an offline root) cannot delegate: its
            # certificates' requests are answered internalError; the rest is served.
            log.warning("no OCSP signer for the %s CA: %s (%s)", role, exc, exc.hint)
