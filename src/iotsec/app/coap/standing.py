"""Whether a DTLS peer may still be served: its certificate and its device, read from the
store in one indexed query (the certificate's primary key, the device's primary key).

The full check at the handshake (:func:`iotsec.app.pki.infrastructure.stored_status`) also
compares the certificate byte for byte with the stored one; a serial's bytes never change,
so each later request reads only what can change: the revocation, the expiry and the
device's state.

That read is answered from a per-process cache (:class:`StandingCache`) so that a request
does not wait for the store, and the check itself still runs on every request: an entry is
used only while it is younger than ``IOTSEC_HOT_CACHE_SECONDS``, and it is dropped at once
when this process revokes a certificate (:func:`~iotsec.app.pki.revocation.revocation_mark`)
or changes a device, a role or a binding (``Runtime.registry_generation``). A revocation or
a state change made by another process is seen within that delay; with
``IOTSEC_HOT_CACHE_SECONDS=0`` every request reads the store. The expiry and a revocation
that takes effect later are compared with the clock on every request.

On PostgreSQL the gateway also follows the change feed (:func:`follow_changes`): a
revocation or a device change committed by any process drops the entries it concerns as
soon as it commits, so the delay is then only the bound while the feed is down.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import bindparam, select

from iotsec.app import changes
from iotsec.app.changes import Change
from iotsec.app.pki.infrastructure import stored_status
from iotsec.app.pki.revocation import revocation_mark
from iotsec.app.runtime import Runtime, Slot
from iotsec.identity.registry import DeviceState
from iotsec.pki.serial import format_serial
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import ts

__all__ = ["MAX_ENTRIES", "StandingCache", "common_name", "follow_changes",
           "refusal_at_handshake", "refusal_now"]

_c, _d = m.certificates.c, m.devices.c
_NOW = (select(_c.revoked_at, _c.not_after, _c.device_id, _d.state)
        .select_from(m.certificates.outerjoin(m.devices, _d.id == _c.device_id))
        .where(_c.serial == bindparam("serial")))
_SERVED = frozenset({DeviceState.ACTIVE.value, DeviceState.PENDING.value})
#: Most certificates whose standing is cached at once (beyond, the cache starts afresh).
MAX_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class _Standing:
    """What the store said about one certificate, and when (monotonic seconds), under which
    revocation mark and registry generation of this process."""
    revoked_at: int | None
    not_after: int
    device_id: str | None
    state: str | None
    read_at: float
    mark: int
    generation: int


class StandingCache:
    """The standing of each served certificate, per process (see the module's docstring).
    Safe to share between serving threads: entries are replaced whole."""

    def __init__(self) -> None:
        self._entries: dict[str, _Standing] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def forget(self, serials: set[str] | None = None, devices: set[str] | None = None
               ) -> None:
        """Drop the entries of ``serials`` and of the certificates of ``devices``; with
        neither, every entry."""
        if serials is None and devices is None:
            self._entries = {}
            return
        for serial in serials or ():
            self._entries.pop(serial, None)
        if devices:
            for serial, entry in list(self._entries.items()):
                if entry.device_id in devices:
                    self._entries.pop(serial, None)

    def standing(self, rt: Runtime, serial: str, *, fresh: bool = False) -> _Standing | None:
        """The certificate's standing, from memory while it is current (unless ``fresh``),
        else from the store (None: no such certificate)."""
        ttl = rt.settings.hot_cache_seconds
        held = self._entries.get(serial)
        now = time.monotonic()
        if (held is not None and not fresh and now - held.read_at < ttl
                and held.mark == revocation_mark()
                and held.generation == rt.registry_generation):
            return held
        # The mark and generation are taken before the read: a change this process makes
        # while the read runs leaves the entry stale at its next use. (A revocation marked
        # before the read and committed after it is read again after the delay.)
        mark, generation = revocation_mark(), rt.registry_generation
        with reading(rt.engine) as conn:
            row = conn.execute(_NOW, {"serial": serial}).first()
        if row is None:
            self._entries.pop(serial, None)
            return None
        entry = _Standing(row.revoked_at, row.not_after, row.device_id, row.state, now, mark,
                          generation)
        if ttl > 0:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[serial] = entry
        return entry


_CACHE: Slot[StandingCache] = Slot("coap.standing")


def follow_changes(rt: Runtime) -> None:
    """Drop the standing of what another process changes as soon as its change commits
    (PostgreSQL's change feed, :mod:`iotsec.app.changes`; nothing on SQLite): a revoked
    certificate, a changed device; everything after the feed's (re)connection or a change
    of many at once."""
    cache = rt.get_or_put(_CACHE, StandingCache)

    def on_changes(batch: list[Change] | None) -> None:
        if batch is None or any(c.key == "*" and c.kind in ("cert", "device", "authority")
                                for c in batch):
            cache.forget()
            return
        serials = {c.key for c in batch if c.kind == "cert"}
        devices = {c.key for c in batch if c.kind == "device"}
        if serials or devices:
            cache.forget(serials, devices)

    changes.subscribe(rt, on_changes)
    changes.listen(rt)


def common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else None


def refusal_now(rt: Runtime, serial: str, device_id: str, now: datetime, *,
                fresh: bool = False) -> str | None:
    """Why the certificate ``serial`` of ``device_id`` may not be served at ``now``, or
    None: revoked, expired, unknown, held by another device, or the device not active or
    pending. The store's answer comes from this process's :class:`StandingCache` while it
    is current, unless ``fresh``."""
    row = rt.get_or_put(_CACHE, StandingCache).standing(rt, serial, fresh=fresh)
    if row is None:
        return f"certificate {serial} is unknown"
    moment = ts(now)
    if row.revoked_at is not None and row.revoked_at <= moment:
        return f"certificate {serial} is revoked"
    if row.not_after <= moment:
        return f"certificate {serial} is expired"
    if row.device_id != device_id or row.state is None:
        return f"certificate {serial} names no registered device"
    if row.state not in _SERVED:
        return f"device {device_id!r} is {row.state}"
    return None


def refusal_at_handshake(rt: Runtime, cert: x509.Certificate) -> str | None:
    """The handshake's check: the certificate is the store's own (byte for byte) and valid,
    it names a device, and :func:`refusal_now` finds nothing in a fresh read of the store
    (which the requests that follow then reuse)."""
    serial = format_serial(cert.serial_number)
    status = stored_status(rt, cert)
    if status != "valid":
        return f"certificate {serial} is {status}"
    device_id = common_name(cert)
    if device_id is None:
        return f"certificate {serial} names no device"
    return refusal_now(rt, serial, device_id, rt.now(), fresh=True)
