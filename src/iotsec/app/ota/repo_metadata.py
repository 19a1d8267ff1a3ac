"""Repository metadata: import staged root and targets files once they meet their
thresholds, record the releases they list, and re-sign the online roles (snapshot and
timestamp). Callers hold the repository lock."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from tuf.api._payload import Root, Snapshot, Targets, Timestamp
from tuf.api.metadata import Metadata

from iotsec.app.ota.repo_files import Config, Repo
from iotsec.app.ota.repo_keys import (
    online_signer,
)
from iotsec.app.runtime import Runtime
from iotsec.errors import (
    TufMetadataError,
)
from iotsec.firmware import releases as rel
from iotsec.firmware import tufmeta as t
from iotsec.store import models as m
from iotsec.store.db import transaction

__all__ = ["Outcome", "advance", "import_one", "refresh_online"]


@dataclass(frozen=True)
class Outcome:
    """What a repository command did: files published, and files left staged."""

    published: tuple[str, ...] = ()
    staged: tuple[tuple[str, str], ...] = ()  # (path, "n of m signatures")
    release: rel.Release | None = None


def advance(repo: Repo, config: Config) -> Outcome:
    """Import every staged file that now meets its threshold; then (re)publish snapshot and
    timestamp if anything changed. Caller holds the lock."""
    published: list[str] = []
    staged: list[tuple[str, str]] = []
    now = repo.rt.now()
    for role in t.OFFLINE_ROLES:
        while (path := repo.staged_path(role)) is not None:
            md = t.load(path.read_bytes(), role)
            trusted = repo.root()
            if role == t.TARGETS and trusted is None:
                staged.append((str(path), "waiting for the root"))
                break
            anchor: Root = trusted.signed if role == t.TARGETS and trusted else md.signed
            count, need = t.signature_count(anchor, role, md)
            if role == t.ROOT and trusted is not None:
                count2, need2 = t.signature_count(trusted.signed, t.ROOT, md)
                count, need = min(count, count2), max(need, need2)
            if count < need:
                staged.append((str(path), f"{count} of {need} signatures"))
                break
            import_one(repo, config, md, now)
            path.unlink()
            published.append(f"{md.signed.version}.{role}.json")
    if repo.root() is not None and repo.targets_md() is not None:
        published.extend(refresh_online(repo, config, force=bool(published)))
    return Outcome(tuple(published), tuple(staged))


def import_one(repo: Repo, config: Config, md: Metadata[Any], now: datetime) -> None:
    role = md.signed.type
    if role == t.ROOT:
        current = repo.root()
        t.check_root(current.signed if current is not None else None, md, now)
        repo.publish_metadata(md)
        pending = config.pending_online.pop(str(md.signed.version), None)
        if pending is not None:
            config.online = pending
        repo.save_config(config)
        return
    current_targets = repo.targets_md()
    t.check_targets(repo.trusted_root(), current_targets.signed.version
                    if current_targets is not None else 0, md, now)
    for path, target in md.signed.targets.items():
        stored = repo.target_file(path, target.hashes["sha256"])
        if not stored.exists() or stored.stat().st_size != target.length:
            raise TufMetadataError(f"the targets metadata lists {path}, which the repository "
                                   "does not hold", hint="publish the image with 'iotsec "
                                   "firmware publish' before signing its metadata")
    repo.publish_metadata(md)
    _record_releases(repo.rt, current_targets.signed if current_targets else None, md.signed)


def _record_releases(rt: Runtime, before: Targets | None, after: Targets) -> None:
    rows = []
    for path, target in after.targets.items():
        if "/channels/" not in path:
            continue
        old = before.targets.get(path) if before is not None else None
        if old is not None and old.custom == target.custom:
            continue
        release = rel.Release.from_custom(target.custom)
        image = after.targets[release.target]
        rows.append({"product": release.product, "channel": release.channel,
                     "version": str(release.version),
                     "security_counter": release.security_counter,
                     "target_path": release.target, "sha256": image.hashes["sha256"],
                     "length": image.length, "hardware": json.dumps(list(release.hardware)),
                     "targets_version": after.version, "published_at": release.published_at})
    if rows:
        with transaction(rt.engine) as conn:
            conn.execute(insert(m.ota_releases), rows)


def refresh_online(repo: Repo, config: Config, *, force: bool) -> list[str]:
    """Re-sign snapshot (when targets moved or half its life is gone) and timestamp (when
    the snapshot moved or half its life is gone)."""
    now = repo.rt.now()
    targets = repo.targets_md()
    assert targets is not None
    snapshot: Metadata[Snapshot] | None = repo.read("snapshot.json", t.SNAPSHOT)
    timestamp: Metadata[Timestamp] | None = repo.read("timestamp.json", t.TIMESTAMP)
    done: list[str] = []

    def stale(md: Metadata[Any] | None, role: str) -> bool:
        return md is None or md.signed.expires - now < config.expiry.of(role) / 2

    root = repo.trusted_root()
    keys_moved = any(
        md is not None and not set(md.signatures) & set(root.roles[role].keyids)
        for md, role in ((snapshot, t.SNAPSHOT), (timestamp, t.TIMESTAMP)))
    snap_bytes: bytes | None = None
    if (force or keys_moved or stale(snapshot, t.SNAPSHOT) or snapshot is None
            or snapshot.signed.meta["targets.json"].version != targets.signed.version):
        version = snapshot.signed.version + 1 if snapshot is not None else 1
        snapshot = t.sign(t.new_snapshot(version, targets.signed.version, now=now,
                                         expiry=config.expiry),
                          [online_signer(repo.rt, config.online[t.SNAPSHOT])])
        snap_bytes = repo.publish_metadata(snapshot)
        done.append(f"{version}.snapshot.json")
    assert snapshot is not None
    if snap_bytes is not None or keys_moved or stale(timestamp, t.TIMESTAMP):
        if snap_bytes is None:
            snap_bytes = (repo.metadata / f"{snapshot.signed.version}.snapshot.json").read_bytes()
        version = timestamp.signed.version + 1 if timestamp is not None else 1
        timestamp = t.sign(t.new_timestamp(version, snapshot.signed.version, snap_bytes,
                                           now=now, expiry=config.expiry),
                           [online_signer(repo.rt, config.online[t.TIMESTAMP])])
        repo.publish_metadata(timestamp, versioned=False)
        done.append("timestamp.json")
    return done
