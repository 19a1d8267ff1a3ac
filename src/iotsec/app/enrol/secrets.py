"""Enrolment secrets: bootstrap credentials bound to one device or to a template, shown
once, stored only as the SHA-256 of the secret, good for a number of uses until they
expire or are revoked."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from iotsec.app.enrol.templates import load_template
from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError, DeviceStateError, InvalidInputError, NotFoundError
from iotsec.identity.enrolment import (
    IdFrom,
    new_enrolment_secret,
    parse_secret_id,
    parse_template_name,
    secret_digest,
)
from iotsec.identity.registry import DeviceState, parse_device_id
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = [
    "MAX_SECRET_LIFETIME", "MAX_USES", "MIN_SECRET_LIFETIME", "SecretInfo", "SecretState",
    "create_secret", "get_secret", "list_secrets", "revoke_secret", "secret_info"
]

MAX_USES = 10_000
MIN_SECRET_LIFETIME = timedelta(minutes=1)
MAX_SECRET_LIFETIME = timedelta(days=30)
_LIST_LIMIT = 10_000


class SecretState(enum.StrEnum):
    ACTIVE = "active"
    USED = "used"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What is known of an enrolment secret, read at ``as_of`` (never the secret)."""

    id: str
    device_id: str | None
    template: str | None
    uses_total: int
    uses_left: int
    expires_at: datetime
    created_at: datetime
    revoked_at: datetime | None
    as_of: datetime

    @property
    def state(self) -> SecretState:
        """Revoked, used up, expired, or active: the first that applies."""
        if self.revoked_at is not None:
            return SecretState.REVOKED
        if self.uses_left <= 0:
            return SecretState.USED
        if self.expires_at <= self.as_of:
            return SecretState.EXPIRED
        return SecretState.ACTIVE


def secret_info(row: Row[Any], now: datetime) -> SecretInfo:
    """The :class:`SecretInfo` of an ``enrolment_secrets`` row, read at ``now``."""
    return SecretInfo(id=row.id, device_id=row.device_id, template=row.template,
                      uses_total=row.uses_total, uses_left=row.uses_left,
                      expires_at=from_ts(row.expires_at), created_at=from_ts(row.created_at),
                      revoked_at=from_ts(row.revoked_at) if row.revoked_at is not None else None,
                      as_of=now)


def _check_device(conn: Connection, device_id: str) -> None:
    row = conn.execute(select(m.devices.c.state).where(m.devices.c.id == device_id)).first()
    if row is None:
        raise NotFoundError(f"device {device_id!r} is not registered",
                            hint="register it with 'iotsec device add', or create a secret "
                            "for a template instead")
    if not DeviceState(row.state).may_hold_certificates:
        raise DeviceStateError(f"device {device_id!r} is {row.state}; it cannot enrol",
                               hint="only pending or active devices get certificates")


def _check_template(conn: Connection, name: str, uses: int) -> None:
    template = load_template(conn, name)
    if template.id_from is IdFrom.SECRET and uses != 1:
        raise InvalidInputError(f"template {name!r} takes the device id from the secret, so "
                                "each secret enrols exactly one device",
                                hint="create one secret per device (--uses 1)")


def _check_request(device_id: str | None, template: str | None, uses: int,
                   expires_in: timedelta) -> None:
    if (device_id is None) == (template is None):
        raise InvalidInputError("an enrolment secret is for one device or for one template",
                                hint="give a device id, or --template NAME, not both")
    if not 1 <= uses <= MAX_USES:
        raise InvalidInputError(f"a secret is used between 1 and {MAX_USES} times")
    if not MIN_SECRET_LIFETIME <= expires_in <= MAX_SECRET_LIFETIME:
        raise InvalidInputError("an enrolment secret lives between one minute and 30 days")


def create_secret(rt: Runtime, *, device_id: str | None, template: str | None, uses: int = 1,
                  expires_in: timedelta = timedelta(hours=1)) -> tuple[SecretInfo, str]:
    """Create an enrolment secret for ``device_id`` (registered, and allowed to hold
    certificates) or for ``template``; returns its info and the secret, the only time the
    secret is ever visible."""
    _check_request(device_id, template, uses, expires_in)
    device = parse_device_id(device_id) if device_id is not None else None
    name = parse_template_name(template) if template is not None else None
    moment = rt.now().replace(microsecond=0)
    now = ts(moment)
    secret_id, secret = new_enrolment_secret()
    with transaction(rt.engine) as conn:
        if device is not None:
            _check_device(conn, device)
        if name is not None:
            _check_template(conn, name, uses)
        conn.execute(insert(m.enrolment_secrets).values(
            id=secret_id, secret_sha256=secret_digest(secret), device_id=device,
            template=name, uses_total=uses, uses_left=uses,
            expires_at=now + int(expires_in.total_seconds()), created_at=now, revoked_at=None))
    rt.events.record(Event(moment, "est.secret-created", "success", subject=secret_id,
                           detail={"device": device, "template": name, "uses": uses,
                                   "expires_in": int(expires_in.total_seconds())}))
    return get_secret(rt, secret_id), secret


def get_secret(rt: Runtime, secret_id: str) -> SecretInfo:
    """One enrolment secret's info, or :class:`NotFoundError`."""
    key = parse_secret_id(secret_id)
    with reading(rt.engine) as conn:
        row = conn.execute(select(m.enrolment_secrets)
                           .where(m.enrolment_secrets.c.id == key)).first()
    if row is None:
        raise NotFoundError(f"no enrolment secret {key}", hint="see 'iotsec enrol secret list'")
    return secret_info(row, rt.now())


def list_secrets(rt: Runtime) -> list[SecretInfo]:
    """Every enrolment secret (newest first, at most 10,000), never the secret itself."""
    now = rt.now()
    query = (select(m.enrolment_secrets)
             .order_by(m.enrolment_secrets.c.created_at.desc(), m.enrolment_secrets.c.id)
             .limit(_LIST_LIMIT))
    with reading(rt.engine) as conn:
        return [secret_info(r, now) for r in conn.execute(query)]


def revoke_secret(rt: Runtime, secret_id: str) -> SecretInfo:
    """Revoke an enrolment secret at once: it enrols nothing more, and a device waiting
    for approval with it can no longer collect its certificate."""
    key = parse_secret_id(secret_id)
    moment = rt.now().replace(microsecond=0)
    with transaction(rt.engine) as conn:
        row = conn.execute(select(m.enrolment_secrets.c.revoked_at)
                           .where(m.enrolment_secrets.c.id == key).with_for_update()).first()
        if row is None:
            raise NotFoundError(f"no enrolment secret {key}",
                                hint="see 'iotsec enrol secret list'")
        if row.revoked_at is not None:
            raise ConflictError(f"enrolment secret {key} is already revoked")
        conn.execute(update(m.enrolment_secrets).where(m.enrolment_secrets.c.id == key)
                     .values(revoked_at=ts(moment)))
    rt.events.record(Event(moment, "est.secret-revoked", "success", subject=key))
    return get_secret(rt, key)
