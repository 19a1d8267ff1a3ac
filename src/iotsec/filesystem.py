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
* **bounded reads**: :func:`read_bounded` never reads more than its limit;
* **errors that say what happened**: :func:`os_error` turns an ``OSError`` (a full disk, a
  read-only file system, a file where a directory is needed) into an iotsec error.

This is an I/O adapter: the pure core never imports it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import Final

from iotsec.errors import (
    ConflictError,
    FileSystemError,
    InputTooLargeError,
    IotsecError,
    NotFoundError,
)

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "atomic_write",
    "os_error",
    "publish_private_file",
    "read_bounded",
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
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        # The error names the file the caller asked for, not the staged one.
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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


_SPACE_HINT = "free space on it, then run the command again"
#: By errno: the message (``{}`` is the path) and the hint.
_OS_ERRORS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device holding {}", _SPACE_HINT),
    errno.EDQUOT: ("the disk quota is used up on the device holding {}", _SPACE_HINT),
    errno.EROFS: ("{} is on a read-only file system",
                  "choose a writable path, or make the file system writable"),
    errno.EACCES: ("permission denied: {}",
                   "check the owner and mode of the path and of its directories"),
    errno.EPERM: ("operation not permitted on {}",
                  "check the owner, mode and attributes of the path"),
    errno.ENOTDIR: ("{}: a part of this path is a file, not a directory",
                    "choose a path whose directories are directories"),
    errno.EISDIR: ("{} is a directory", "give a file name"),
    errno.EIO: ("input/output error on {}", "check the disk and the system log"),
}


def os_error(exc: OSError) -> IotsecError:
    """The iotsec error for an ``OSError`` that reached the edge: what the system refused,
    on which path, and what to do (one line, no traceback)."""
    name = exc.filename2 if exc.filename2 is not None else exc.filename
    path = os.fsdecode(name) if isinstance(name, str | bytes) else None
    what = path if path is not None else "a file"
    if exc.errno == errno.ENOENT and path is not None:
        return NotFoundError(f"{path} does not exist", hint="check the path")
    if exc.errno == errno.EEXIST:
        # Left to the edge, this is a directory that could not be made: a file holds the name.
        is_file = path is not None and os.path.lexists(path) and not os.path.isdir(path)
        return FileSystemError(f"{what} already exists" + (" and is not a directory"
                                                           if is_file else ""),
                               hint="remove it or choose another path")
    known = _OS_ERRORS.get(exc.errno or 0)
    if known is not None:
        return FileSystemError(known[0].format(what), hint=known[1])
    reason = exc.strerror or type(exc).__name__
    return FileSystemError(f"{reason}: {path}" if path is not None else reason)
