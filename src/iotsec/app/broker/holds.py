"""The broker's own CRLs: refusing disabled and retired devices at CONNECT on Mosquitto.

Mosquitto 2.0 takes the identity from the client certificate and asks no plugin before
it answers CONNACK 0, so a disabled device with a valid certificate would complete its
connection (the ACL then refuses it everything). To refuse it during the TLS handshake,
the CRL the broker loads for a CA that issued such a device's current certificate is not
the published one but the broker's own: the same entries plus a ``certificateHold`` entry
(RFC 5280 5.3.1) for each current certificate of a disabled or retired device, signed by
that CA with an issuingDistributionPoint of its own (onlyContainsUserCerts, see
:class:`iotsec.pki.crl.CrlScope`) and numbered in its own sequence, kept in the broker's
manifest. Re-enabling the device leaves its serials out of the next one. The published
CRL, OCSP and the store never show a hold: the suspension is between iotsec and its broker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from iotsec.app.pki.authorities import AuthorityRecord
from iotsec.app.runtime import Runtime
from iotsec.broker.mosquitto import CrlInfo, check_crl
from iotsec.identity.registry import DeviceState
from iotsec.pki.crl import CrlScope, build_crl, encode_hold_entry
from iotsec.pki.serial import parse_serial
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import from_ts, ts

__all__ = ["HELD_STATES", "Hold", "held_certificates", "held_digest", "with_holds"]

#: Device states whose current certificates the broker's CRL holds.
HELD_STATES = (DeviceState.DISABLED, DeviceState.RETIRED)
#: Minimum time to the broker CRL's nextUpdate (as for the published CRL).
_MIN_REMAINING = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Hold:
    authority_id: int
    serial: str
    device_id: str
    #: When the device entered the held state (Unix seconds): the entry's revocationDate.
    since: int


def held_certificates(rt: Runtime) -> list[Hold]:
    """Current certificates (valid now, not revoked) of disabled or retired devices."""
    now = ts(rt.now())
    c, d = m.certificates.c, m.devices.c
    query = (select(c.authority_id, c.serial, c.device_id, d.updated_at)
             .join(m.devices, d.id == c.device_id)
             .where(d.state.in_([s.value for s in HELD_STATES]), c.kind == "device",
                    c.not_before <= now, c.not_after > now,
                    (c.revoked_at.is_(None)) | (c.revoked_at > now))
             .order_by(c.authority_id, c.serial))
    with reading(rt.engine) as conn:
        return [Hold(int(r.authority_id), str(r.serial), str(r.device_id), int(r.updated_at))
                for r in conn.execute(query)]


def held_digest(holds: list[Hold]) -> str:
    """What the broker's CRLs hold, as one hash (a sync is needed when it changes)."""
    h = hashlib.sha256()
    for hold in holds:
        h.update(f"{hold.authority_id}:{hold.serial}\n".encode("ascii"))
    return h.hexdigest()


def _public_entries(rt: Runtime, authority_id: int, now: int) -> list[bytes]:
    c = m.certificates.c
    with reading(rt.engine) as conn:
        return [bytes(e) for e in conn.execute(select(c.crl_entry).where(
            c.authority_id == authority_id, c.revoked_at <= now, c.not_after > now,
            c.crl_entry.is_not(None))).scalars()]


def _entries(public: list[bytes], holds: list[Hold]) -> Iterator[bytes]:
    yield from public
    for hold in holds:
        yield encode_hold_entry(parse_serial(hold.serial), from_ts(hold.since))


def with_holds(rt: Runtime, crls: list[tuple[AuthorityRecord, bytes, CrlInfo]],
               holds: list[Hold], previous: dict[str, Any], moment: datetime
               ) -> tuple[list[tuple[AuthorityRecord, bytes, CrlInfo]], dict[str, int],
                          list[str]]:
    """The CRLs the broker loads: for each CA with held certificates, its broker CRL (the
    published entries plus the holds), else the published CRL. Returns them, the broker
    CRL numbers to keep in the manifest (``previous``: the manifest's), and warnings."""
    numbers = {k: int(v) for k, v in previous.items() if isinstance(v, int)}
    by_ca: dict[int, list[Hold]] = {}
    for hold in holds:
        by_ca.setdefault(hold.authority_id, []).append(hold)
    out: list[tuple[AuthorityRecord, bytes, CrlInfo]] = []
    warnings: list[str] = []
    moment = moment.replace(microsecond=0)
    for authority, der, info in crls:
        mine = by_ca.get(authority.id)
        if not mine:
            out.append((authority, der, info))
            continue
        if authority.key_offline:
            warnings.append(f"CA {authority.id} signs offline: {len(mine)} certificate(s) of "
                            "disabled devices cannot be refused at CONNECT (the ACL still "
                            "refuses them everything); revoke them")
            out.append((authority, der, info))
            continue
        key = str(authority.id)
        number = numbers.get(key, 0) + 1
        signed = build_crl(rt.authority_by_id(authority.id),
                           _entries(_public_entries(rt, authority.id, ts(moment)), mine),
                           number=number, this_update=moment, next_update=info.next_update,
                           scope=CrlScope(broker_only=True))
        checked = check_crl(signed, authority.certificate, now=moment,
                            min_remaining=_MIN_REMAINING, previous_number=numbers.get(key))
        numbers[key] = checked.number
        out.append((authority, signed, checked))
    return out, numbers, warnings

