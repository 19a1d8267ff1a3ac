"""The broker directory on disk: ownership, atomic writes, generations and the lock.

Files the broker reads belong to root (or the current user) with the broker's group and
mode 0640; ``run/`` belongs to the broker's account; ``private/`` is iotsec's alone (0700).
A generation is written into a hidden directory, renamed into place, and made current by
renaming a new symbolic link over ``current``: one atomic step.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iotsec.broker.mosquitto import Layout
from iotsec.errors import BrokerConfigError, BrokerValidationError, ConflictError
from iotsec.filesystem import (
    PRIVATE_FILE_MODE,
    atomic_write,
    create_new,
    exclusive_lock,
    replace_symlink,
)

__all__ = [
    "KEEP_GENERATIONS", "MAX_STATE_FILE", "Owner", "current_generation", "default_broker_user",
    "locked", "prepare", "prune", "read_json", "replace_shared", "swap", "write",
    "write_json_private"
]

KEEP_GENERATIONS = 3
MAX_STATE_FILE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Owner:
    """Who the broker runs as: files it reads get its group, ``run/`` is its own."""

    uid: int | None
    gid: int | None
    user: str | None

    @classmethod
    def resolve(cls, user: str | None) -> Owner:
        if user is None:
            return cls(None, None, None)
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise BrokerConfigError(f"there is no user {user!r} to run the broker as",
                                    hint="create it, or give --broker-user") from None
        return cls(entry.pw_uid, entry.pw_gid, user)

    def share(self, path: Path, mode: int) -> None:
        if self.gid is not None and os.geteuid() == 0:
            os.chown(path, 0, self.gid)
        os.chmod(path, mode)

    def own(self, path: Path, mode: int) -> None:
        if self.uid is not None and os.geteuid() == 0:
            os.chown(path, self.uid, self.gid if self.gid is not None else -1)
        os.chmod(path, mode)


def default_broker_user() -> str | None:
    """``mosquitto`` when running as root and that account exists (Mosquitto switches to
    it), else None: the broker runs as the current user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        return None
    return "mosquitto"


def write(path: Path, data: bytes, owner: Owner, mode: int = 0o640) -> None:
    """Create a file of a generation being staged (private until shared with the broker)."""
    create_new(path, data)
    owner.share(path, mode)


def replace_shared(path: Path, data: bytes, owner: Owner, mode: int = 0o640) -> None:
    """Replace a file the broker reads atomically, shared with it before it appears."""
    atomic_write(path, data, mode=0o600, prepare=lambda staged: owner.share(staged, mode))


def read_json(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_STATE_FILE:
            raise BrokerValidationError(f"{path} is too large")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise BrokerValidationError(f"{path} cannot be read: {type(exc).__name__}") from None
    return data if isinstance(data, dict) else {}


def write_json_private(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"),
                 mode=PRIVATE_FILE_MODE)


def current_generation(layout: Layout) -> int | None:
    try:
        target = os.readlink(layout.current)
    except OSError:
        return None
    name = Path(target).name
    return int(name[4:]) if name.startswith("gen-") and name[4:].isdigit() else None


def swap(layout: Layout, generation: int) -> None:
    replace_symlink(layout.current, layout.generation(generation).name)


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    layout.private.mkdir(mode=0o700, exist_ok=True)
    with exclusive_lock(layout.private / "sync.lock", ConflictError(
            f"another render or sync of {layout.root} is running",
            hint="wait for it to finish")):
        yield


def prune(layout: Layout, keep: set[int]) -> None:
    numbers = sorted(int(p.name[4:]) for p in layout.root.glob("gen-*") if p.name[4:].isdigit())
    for n in numbers[:-KEEP_GENERATIONS]:
        if n not in keep:
            shutil.rmtree(layout.generation(n), ignore_errors=True)
    for stale in layout.root.glob(".gen-*"):
        shutil.rmtree(stale, ignore_errors=True)


def prepare(layout: Layout, owner: Owner) -> None:
    for path in (layout.root,):
        path.mkdir(mode=0o750, parents=True, exist_ok=True)
        owner.share(path, 0o750)
    layout.private.mkdir(mode=0o700, exist_ok=True)
    os.chmod(layout.private, 0o700)
    layout.run.mkdir(mode=0o700, exist_ok=True)
    owner.own(layout.run, 0o750)
