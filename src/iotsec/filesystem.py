"""Safe file operations: the one place iotsec creates, replaces and publishes files.

Every writer in iotsec goes through these functions rather than calling ``open``/``os.replace``
itself, so the guarantees below hold everywhere (as certbot keeps them in
``compat.filesystem``):

* **atomic**: a file is written under a unique temporary name in its own directory, flushed to
  disk, then renamed over the target; a reader sees the old content or the new, never a part;
* **private from the first byte**: a private file is created with mode 0600 (its directory
  0700), so there is no moment at which another user could open it;
* **no clobbering** unless asked: :func:`write_private_file` refuses an existing target
  without ``overwrite``, and :func:`publish_private_file` never replaces one, even against a
  concurrent writer (it links the staged file into place, and a link never replaces);
* **bounded reads**: :func:`read_bounded` never reads more than its limit.

This is an I/O adapter: the pure core never imports it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

from iotsec.errors import ConflictError, InputTooLargeError

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "atomic_write",
    "publish_private_file",
    "read_bounded",
    "replacing",
    "staged_name",
    "write_private_file",
]

PRIVATE_FILE_MODE: Final = 0o600
PRIVATE_DIR_MODE: Final = 0o700


def staged_name(path: Path, suffix: str = "tmp") -> Path:
    """A unique hidden name beside ``path`` for staging its next content."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.{suffix}")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644,
                 dir_mode: int = PRIVATE_DIR_MODE) -> None:
    """Replace ``path`` with ``data`` atomically (``mode`` from the first byte); missing parent
    directories are created with ``dir_mode``."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    tmp = staged_name(path)
    try:
        _write_new(tmp, data, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A new private file beside the existing ``path`` (open for writing and reading back),
    which atomically replaces ``path`` (keeping its permission bits) only if the block
    succeeds; otherwise it is removed and ``path`` is untouched. For content too large to
    hold in memory, where :func:`atomic_write` needs the bytes."""
    mode = path.stat().st_mode & 0o7777
    staged = staged_name(path)
    fd = os.open(staged, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "w+b") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(staged, mode)
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_private_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte, atomically; an existing
    ``path`` is refused (:class:`~iotsec.errors.ConflictError`) unless ``overwrite``."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    if path.exists() and not overwrite:
        raise ConflictError(f"{path} already exists", hint="remove it or choose another path")
    atomic_write(path, data, mode=PRIVATE_FILE_MODE)


def publish_private_file(path: Path, data: bytes) -> bool:
    r"""Create ``path`` privately and atomically unless it exists (``False`` if it did).

    Written under a unique name, then hard-linked into place: a link never replaces an
    existing file, so two processes cannot overwrite each other's file. Other ``OSError``\s
    (a full disk, a read-only directory) reach the caller, which says what it was writing.
    """
    staged = staged_name(path, "new")
    write_private_file(staged, data)
    try:
        os.link(staged, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
    return True


def read_bounded(path: Path, limit: int) -> bytes:
    """The content of ``path``, refused (:class:`~iotsec.errors.InputTooLargeError`) when it
    is larger than ``limit`` bytes, without reading more than that."""
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise InputTooLargeError(f"{path} is larger than {limit} bytes")
    return data
