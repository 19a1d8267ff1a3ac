"""The update repository directory (``$IOTSEC_HOME/tuf``): its configuration, paths, the
exclusive lock, atomic writes and reads of published and staged metadata."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from tuf.api._payload import Root, Targets
from tuf.api.metadata import Metadata

from iotsec.app.runtime import Runtime
from iotsec.errors import (
    InvalidInputError,
    OtaRepositoryError,
)
from iotsec.filesystem import DEFAULT_DIR_MODE, atomic_write, write_private_file
from iotsec.firmware import releases as rel
from iotsec.firmware import tufmeta as t

__all__ = ["Config", "Repo"]


@dataclass
class Config:
    expiry: t.Expiry
    online: dict[str, str]
    pending_online: dict[str, dict[str, str]] = field(default_factory=dict)
    firmware_keys: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps({
            "format": 1,
            "expiry": {r: int(self.expiry.of(r).total_seconds()) for r in t.ROLES},
            "online": self.online, "pending_online": self.pending_online,
            "firmware_keys": self.firmware_keys}, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Config:
        try:
            doc = json.loads(data)
            expiry = t.Expiry(**{r: timedelta(seconds=int(doc["expiry"][r])) for r in t.ROLES})
            return cls(expiry=expiry, online=dict(doc["online"]),
                       pending_online={str(k): dict(v)
                                       for k, v in doc.get("pending_online", {}).items()},
                       firmware_keys=list(doc["firmware_keys"]))
        except (ValueError, KeyError, TypeError, InvalidInputError) as exc:
            raise OtaRepositoryError("the repository configuration is corrupt",
                                     hint="restore tuf/config.json from backup") from exc


class Repo:
    """Paths and atomic file access of one repository directory."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.dir = rt.settings.resolved_home / "tuf"
        self.metadata = self.dir / "metadata"
        self.targets = self.dir / "targets"
        self.staged = self.dir / "staged"
        self.config_path = self.dir / "config.json"

    @property
    def exists(self) -> bool:
        return self.config_path.exists()

    def config(self) -> Config:
        if not self.exists:
            raise OtaRepositoryError(f"there is no update repository in {self.dir}")
        return Config.from_json(self.config_path.read_bytes()[:1_000_000])

    def save_config(self, config: Config) -> None:
        write_private_file(self.config_path, config.to_json(), overwrite=True)

    @contextlib.contextmanager
    def locked(self, *, create: bool = False) -> Iterator[None]:
        """Hold the repository's lock. Only ``create`` (``ota repo init``) makes the
        directory: any other change to a repository that does not exist is refused before
        a file is written."""
        if not create:
            self.config()
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def write(path: Path, data: bytes) -> None:
        atomic_write(path, data, mode=0o644, dir_mode=DEFAULT_DIR_MODE)

    def read(self, name: str, role: str) -> Metadata[Any] | None:
        path = self.metadata / name
        if not path.exists():
            return None
        with path.open("rb") as fh:
            return t.load(fh.read(t.MAX_METADATA[role] + 1), role)

    def root(self) -> Metadata[Root] | None:
        return self.read("root.json", t.ROOT)

    def trusted_root(self) -> Root:
        root = self.root()
        if root is None:
            raise OtaRepositoryError("the repository has no signed root yet",
                                     hint="sign the staged root ('iotsec ota repo status' "
                                     "lists it) and import it")
        signed: Root = root.signed
        return signed

    def targets_md(self) -> Metadata[Targets] | None:
        return self.read("targets.json", t.TARGETS)

    def staged_path(self, role: str) -> Path | None:
        found = sorted(self.staged.glob(f"*.{role}.json"),
                       key=lambda p: int(p.name.split(".")[0]) if p.name[0].isdigit() else 0)
        return found[-1] if found else None

    def target_file(self, path: str, sha256: str) -> Path:
        directory, _, name = rel.check_target_path(path).rpartition("/")
        return self.targets / directory / f"{sha256}.{name}"

    def publish_metadata(self, md: Metadata[Any], *, versioned: bool = True) -> bytes:
        data = t.serialize(md)
        role = md.signed.type
        if versioned:
            self.write(self.metadata / f"{md.signed.version}.{role}.json", data)
        self.write(self.metadata / f"{role}.json", data)
        return data
