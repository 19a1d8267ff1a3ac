"""Published releases as the store records them (one row per publication of a release to a
channel, written by :mod:`.repo_metadata`): listed, found for a campaign, and read back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select

from iotsec.app.runtime import Runtime
from iotsec.errors import NotFoundError
from iotsec.firmware.image import ImageVersion
from iotsec.firmware.releases import parse_name
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import from_ts

__all__ = [
    "ReleaseInfo", "find_release", "list_releases", "product_releases", "release_by_id",
    "release_of"
]


@dataclass(frozen=True)
class ReleaseInfo:
    id: int
    product: str
    channel: str
    version: ImageVersion
    security_counter: int | None
    target: str
    sha256: str
    length: int
    hardware: tuple[str, ...]
    published_at: datetime


def release_of(r: Row[Any]) -> ReleaseInfo:
    """The release an ``ota_releases`` row records."""
    return ReleaseInfo(id=r.id, product=r.product, channel=r.channel,
                       version=ImageVersion.parse(r.version),
                       security_counter=r.security_counter, target=r.target_path,
                       sha256=r.sha256, length=r.length, hardware=tuple(json.loads(r.hardware)),
                       published_at=from_ts(r.published_at))


def list_releases(rt: Runtime, product: str | None = None) -> list[ReleaseInfo]:
    """Every publication of a release to a channel (of one product), oldest first."""
    query = select(m.ota_releases).order_by(m.ota_releases.c.id)
    if product is not None:
        query = query.where(m.ota_releases.c.product == parse_name(product, "product"))
    with reading(rt.engine) as conn:
        return [release_of(r) for r in conn.execute(query)]


def release_by_id(conn: Connection, release_id: int) -> ReleaseInfo:
    """The publication a campaign installs (its row exists: a campaign references it)."""
    return release_of(conn.execute(select(m.ota_releases).where(
        m.ota_releases.c.id == release_id)).one())


def product_releases(conn: Connection, product: str | None) -> list[ReleaseInfo]:
    """Every publication of ``product`` (none when the product is not known)."""
    if product is None:
        return []
    return [release_of(r) for r in conn.execute(select(m.ota_releases).where(
        m.ota_releases.c.product == product))]


def find_release(conn: Connection, product: str, version: ImageVersion | None,
                 channel: str | None) -> ReleaseInfo:
    """The publication a new campaign installs: ``version`` of ``product`` (on ``channel``),
    or what the channel serves now; NotFoundError when there is none."""
    query = select(m.ota_releases).where(m.ota_releases.c.product == product)
    if channel is not None:
        query = query.where(m.ota_releases.c.channel == channel)
    found = [release_of(r) for r in conn.execute(query.order_by(m.ota_releases.c.id))]
    if version is not None:
        found = [r for r in found if r.version == version]
    if not found:
        what = f"{product} {version or ''} {f'on {channel}' if channel else ''}".strip()
        raise NotFoundError(f"no published release {what}",
                            hint="publish it with 'iotsec firmware publish' first")
    # The newest publication: with a channel and no version, what the channel serves now.
    return found[-1]
