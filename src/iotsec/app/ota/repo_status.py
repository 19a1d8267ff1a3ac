"""What the update repository holds: every role's version, expiry, threshold and keys,
the files staged and their signature counts, and the releases published."""

from __future__ import annotations

from dataclasses import dataclass

from tuf.api._payload import Root

from iotsec.app.ota.repo_files import Repo
from iotsec.app.runtime import Runtime
from iotsec.firmware import releases as rel
from iotsec.firmware import tufmeta as t

__all__ = ["RepoStatus", "RoleStatus", "status"]


@dataclass(frozen=True)
class RoleStatus:
    role: str
    version: int | None
    expires: str | None
    threshold: int
    keys: tuple[str, ...]


@dataclass(frozen=True)
class RepoStatus:
    directory: str
    roles: tuple[RoleStatus, ...]
    staged: tuple[tuple[str, str], ...]
    releases: tuple[rel.Release, ...]


def status(rt: Runtime) -> RepoStatus:
    repo = Repo(rt)
    repo.config()
    root = repo.root()
    anchor: Root | None = root.signed if root is not None else None
    staged: list[tuple[str, str]] = []
    for role in t.OFFLINE_ROLES:
        path = repo.staged_path(role)
        if path is None:
            continue
        md = t.load(path.read_bytes(), role)
        if role == t.ROOT:
            count, need = t.signature_count(md.signed, role, md)
            if root is not None:
                old_count, old_need = t.signature_count(root.signed, role, md)
                count, need = min(count, old_count), max(need, old_need)
            anchor = anchor or md.signed
        elif anchor is not None:
            count, need = t.signature_count(anchor, role, md)
        else:
            staged.append((str(path), "waiting for the root"))
            continue
        staged.append((str(path), f"{count} of {need} signatures"))
    roles = []
    files = {t.ROOT: "root.json", t.TARGETS: "targets.json", t.SNAPSHOT: "snapshot.json",
             t.TIMESTAMP: "timestamp.json"}
    for role in t.ROLES:
        current = repo.read(files[role], role)
        spec = anchor.roles[role] if anchor is not None else None
        roles.append(RoleStatus(role, current.signed.version if current else None,
                                current.signed.expires.isoformat() if current else None,
                                spec.threshold if spec else 0,
                                tuple(k[:16] for k in spec.keyids) if spec else ()))
    targets = repo.targets_md()
    found = tuple(r for _, r in rel.releases(targets.signed)) if targets is not None else ()
    return RepoStatus(str(repo.dir), tuple(roles), tuple(staged), found)
