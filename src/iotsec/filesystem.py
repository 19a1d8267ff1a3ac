"""Safe file operations: the one place iotsec creates, replaces and publishes files.

Every writer in iotsec goes through these functions rather than calling ``open``/``os.replace``
itself, so the guarantees below hold everywhere (as certbot keeps them in
``compat.filesystem``):

* **atomic**: a file is written under a unique temporary name in its own directory, flushed to
  disk, then renamed over the target (and the directory flushed too, so the rename survives a
  crash); a reader sees the old content or the new, never a part;
* **private from the first byte**: a private file is created with mode 0600 (its directory
  0700), so there is no moment at which another user could open it;
* **no clobbering** unless asked: :func:`write_private_file` refuses an existing target
  without ``overwrite``, and :meth:`StagedFile.publish` (behind :func:`publish_private_file`)
  never replaces one, even against a concurrent writer (it links the staged file into place,
  and a link never replaces);
* **nothing left behind**: a write that fails (a full disk, an exception in the caller's
  block) removes its temporary file;
* **bounded reads**: :func:`read_bounded` never reads more than its limit.
* **one writer at a time**: :func:`exclusive_lock` holds an advisory lock, or refuses at
  once when another process holds it.
* **errors that say what happened**: :func:`os_error` turns an ``OSError`` (a full disk, a
  read-only file system, a file where a directory is needed) into an iotsec error.

Large files are streamed through :func:`staged_file` / :func:`atomic_stream` rather than
built in memory. A broker generation is a directory written in full under a staging name,
then published whole (:func:`publish_directory`) and pointed at by a symbolic link that is
replaced atomically (:func:`replace_symlink`).

This is an I/O adapter: the pure core never imports it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final, cast

from iotsec.errors import (
    ConflictError,
    FileSystemError,
    InputTooLargeError,
    IotsecError,
    NotFoundError,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = [
    "DEFAULT_DIR_MODE", "PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "StagedFile", "atomic_stream",
    "atomic_write", "create_new", "exclusive_lock", "os_error", "private_output",
    "publish_directory", "publish_private_file", "read_bounded", "replace_symlink", "replacing",
    "staged_file", "staged_name", "sync_directory", "write_private_file"
]

PRIVATE_FILE_MODE: Final = 0o600
PRIVATE_DIR_MODE: Final = 0o700
#: ``mkdir``'s own default: the process umask alone decides (for directories other users
#: are meant to read, such as a public output file's).
DEFAULT_DIR_MODE: Final = 0o777

#: Errors of ``link`` that mean "this file system has no hard links here", not "refused".
_NO_LINKS: Final = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK})


def staged_name(path: Path, suffix: str = "tmp") -> Path:
    """A unique hidden name beside ``path`` for staging its next content."""
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.{suffix}")


def sync_directory(path: Path) -> None:
    """Flush ``path`` (a directory) to disk, so that a rename or link just made in it
    survives a crash. Best effort: some file systems refuse to sync a directory, and the
    file's own content is already on disk by then."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _open_new(path: Path, mode: int) -> BinaryIO:
    # Open for reading too, so a writer can check what it wrote before it is published.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    return os.fdopen(fd, "w+b")


#: Bytes written to a staged file between two requests to start writing them to disk.
WRITE_BEHIND: Final = 4 << 20
_FADVISE = getattr(os, "posix_fadvise", None)


class _WritingBehind(io.BufferedRandom):
    """A new file that asks the kernel to start writing its data to disk every
    :data:`WRITE_BEHIND` bytes, without waiting for it (``POSIX_FADV_DONTNEED`` on the
    range just written: Linux starts its writeback at once, and drops nothing that is not
    written yet). The ``fsync`` that publishes the file then waits only for the rest: the
    disk writes overlap the work that produces the data. Nothing is less durable: the
    file is published only after that ``fsync``, as any other."""

    _started = 0  # where the range not yet sent to disk begins
    _pending = 0  # bytes written since

    def write(self, data: ReadableBuffer) -> int:
        written = super().write(data)
        self._pending += written
        if self._pending >= WRITE_BEHIND and _FADVISE is not None:
            self.flush()
            end = self._started + self._pending
            _FADVISE(self.fileno(), self._started, self._pending, os.POSIX_FADV_DONTNEED)
            self._started, self._pending = end, 0
        return written


def create_new(path: Path, data: bytes, *, mode: int = PRIVATE_FILE_MODE) -> None:
    """Create ``path`` with ``data`` (``mode`` from the first byte), flushed to disk.

    The file must not exist (:class:`FileExistsError`), and a symbolic link at ``path`` is
    never followed. Not atomic for a reader: meant for a directory no reader sees yet (a
    broker generation being staged) or a file nobody reads before it is complete. A failed
    write removes the file it created.
    """
    fh = _open_new(path, mode)
    try:
        with fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


class StagedFile:
    """A file being written under a unique temporary name beside its destination.

    It becomes a real file only through :meth:`replace` or :meth:`publish`; the
    :func:`staged_file` block that made it removes it otherwise.
    """

    def __init__(self, path: Path, file: BinaryIO) -> None:
        self.path = path
        self.file = file

    def _finish(self) -> None:
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()

    def replace(self, target: Path) -> None:
        """Flush the content to disk and rename it over ``target`` atomically."""
        self._finish()
        os.replace(self.path, target)
        sync_directory(target.parent)

    def publish(self, target: Path) -> bool:
        """Flush the content to disk and make it ``target`` unless that exists (then
        ``False``). A hard link never replaces a file, so a concurrent writer cannot be
        overwritten; on a file system without hard links the file is renamed after one more
        check instead."""
        self._finish()
        try:
            os.link(self.path, target)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            if target.exists() or target.is_symlink():
                return False
            os.rename(self.path, target)
        sync_directory(target.parent)
        return True


@contextlib.contextmanager
def staged_file(near: Path, *, mode: int = PRIVATE_FILE_MODE, suffix: str = "tmp",
                write_behind: bool = False) -> Iterator[StagedFile]:
    """A new file with a unique hidden name beside ``near`` (whose directory must exist),
    open for writing with ``mode`` from the first byte. Whatever the block does not
    :meth:`~StagedFile.replace` or :meth:`~StagedFile.publish` is removed when it ends,
    also when it raises. ``write_behind``: for a large file written front to back, its
    data goes to disk as it is written (see :class:`_WritingBehind`)."""
    path = staged_name(near, suffix)
    file = _open_new(path, mode)
    if write_behind and _FADVISE is not None:
        file = _WritingBehind(cast(io.BufferedRandom, file).detach())
    staged = StagedFile(path, file)
    try:
        yield staged
    finally:
        # Closing flushes what is still buffered, which can fail (a full disk) when the
        # block failed first; the file is discarded either way, and that error is the one
        # that matters.
        with contextlib.suppress(OSError):
            staged.file.close()
        path.unlink(missing_ok=True)


def _special(path: Path) -> bool:
    """Whether ``path`` is a device, a FIFO or a socket (``/dev/null``, ``/dev/stdout``, a
    pipe): written into, never replaced. Renaming over ``/dev/null`` as root would leave a
    regular file in its place for every other program."""
    try:
        st = path.stat()
    except OSError:
        return False
    return not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode))


@contextlib.contextmanager
def atomic_stream(path: Path, *, mode: int = 0o644, dir_mode: int = PRIVATE_DIR_MODE
                  ) -> Iterator[BinaryIO]:
    """Write ``path`` as a stream: the block writes to a temporary file, which replaces
    ``path`` atomically only if the block ends normally. Missing parent directories are
    created with ``dir_mode``. A device or FIFO (``/dev/null``) is written into instead."""
    if _special(path):
        with path.open("wb") as special:
            yield special
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    with staged_file(path, mode=mode) as staged:
        yield staged.file
        staged.replace(path)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644,
                 dir_mode: int = PRIVATE_DIR_MODE,
                 prepare: Callable[[Path], None] | None = None) -> None:
    """Replace ``path`` with ``data`` atomically (``mode`` from the first byte); missing parent
    directories are created with ``dir_mode``. ``prepare`` is called with the temporary
    file's path before the rename, to give it an owner or a final mode that must hold from
    the moment it appears under its name. A device or FIFO (``/dev/null``) is written into
    instead of replaced."""
    if _special(path):
        with path.open("wb") as special:
            special.write(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    try:
        with staged_file(path, mode=mode) as staged:
            staged.file.write(data)
            if prepare is not None:
                prepare(staged.path)
            staged.replace(path)
    except OSError as exc:
        # The error names the file the caller asked for, not the staged one.
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A new private file beside the existing ``path`` (open for writing and reading back),
    which atomically replaces ``path`` (keeping its permission bits) only if the block
    succeeds; otherwise it is removed and ``path`` is untouched. For content too large to
    hold in memory, where :func:`atomic_write` needs the bytes."""
    mode = path.stat().st_mode & 0o7777
    with staged_file(path) as staged:
        yield staged.file
        os.chmod(staged.path, mode)
        staged.replace(path)


def write_private_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte, atomically; an existing
    ``path`` is refused (:class:`~iotsec.errors.ConflictError`) unless ``overwrite``."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    if path.exists() and not overwrite:
        raise ConflictError(f"{path} already exists", hint="remove it or choose another path")
    atomic_write(path, data, mode=PRIVATE_FILE_MODE)


def publish_private_file(path: Path, data: bytes) -> bool:
    r"""Create ``path`` privately and atomically unless it exists (``False`` if it did).

    Written under a unique name, then linked into place (:meth:`StagedFile.publish`): two
    processes cannot overwrite each other's file. Other ``OSError``\s (a full disk, a
    read-only directory) reach the caller, which says what it was writing.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    with staged_file(path, mode=PRIVATE_FILE_MODE, suffix="new") as staged:
        staged.file.write(data)
        return staged.publish(path)


def publish_directory(staged: Path, final: Path) -> None:
    """Give a fully written directory its final name, and flush the parent directory.

    ``final`` must not exist (:class:`FileExistsError`): ``rename`` would silently replace an
    empty directory there. The check and the rename are one step only under the caller's
    lock (a broker directory's ``sync.lock``), which every writer of that directory holds.
    """
    if final.exists() or final.is_symlink():
        raise FileExistsError(errno.EEXIST, "already exists", str(final))
    os.rename(staged, final)
    sync_directory(final.parent)


def replace_symlink(link: Path, target: str) -> None:
    """Point the symbolic link ``link`` at ``target`` atomically: a new link made under a
    unique name is renamed over it, so a reader always finds the old target or the new."""
    staged = staged_name(link, "link")
    os.symlink(target, staged)
    try:
        os.replace(staged, link)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    sync_directory(link.parent)


@contextlib.contextmanager
def private_output(path: Path) -> Iterator[BinaryIO]:
    """A private file written as a stream (for outputs too large to hold in memory): the
    caller writes to the yielded file, which is staged under a unique name (mode 0600) and
    published only when the block ends without an error; an existing ``path`` is never
    replaced (:class:`~iotsec.errors.ConflictError`), and a failed write leaves nothing
    behind."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    taken = ConflictError(f"{path} already exists", hint="remove it or choose another path")
    if path.exists():
        raise taken
    with staged_file(path, suffix="new") as staged:
        yield staged.file
        if not staged.publish(path):
            raise taken


@contextlib.contextmanager
def exclusive_lock(path: Path, busy: IotsecError) -> Iterator[None]:
    """Hold an advisory lock on ``path`` (a lock file created 0600 in an existing directory)
    while the block runs; ``busy`` is raised at once, without waiting, when another process
    holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        yield
    finally:
        os.close(fd)


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
