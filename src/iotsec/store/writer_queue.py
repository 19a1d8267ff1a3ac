"""The queue of one SQLite database's writers, across threads and processes.

SQLite lets one writer at a time hold its write lock, and a writer that finds it taken
sleeps in growing steps (1, 2, 5, 10, 15, 20, 25 ms..., its busy handler) however soon the
lock is released. Under many concurrent writers that costs more than their writes: two
``iotsec serve`` workers on one SQLite file enrolled devices no faster than one, each one's
group commit asleep while the other's ran. Writers therefore queue before they meet
SQLite's lock, and each is woken as soon as its turn comes:

- the threads of a process on a lock of their own;
- the processes on an advisory ``flock`` of a file beside the database
  (``<database>-writers``). A free lock is taken at once; a taken one is waited for by a
  thread of the queue's own, blocked in ``flock`` (which has no timeout), that hands the
  lock to the writer or, if the writer stopped waiting, lets it go.

SQLite's lock stays what guarantees one writer at a time; the queue only shortens the
waits. A writer that has queued :data:`WAIT` seconds goes on to SQLite's lock regardless
(its busy timeout decides, as it did without the queue), so a stuck or nested holder
cannot hang anyone. Where the file cannot be made or locked (a read-only home, a file
system without ``flock``), only the threads queue.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, Literal

__all__ = ["LOCK_SUFFIX", "WAIT", "WriterQueue"]

#: What the lock file's name adds to the database's (as SQLite's ``-wal`` and ``-shm``).
LOCK_SUFFIX: Final = "-writers"
#: Seconds a writer queues before it meets SQLite's own lock (and its busy timeout)
#: regardless: a thread that holds a transaction while waiting for another's write must
#: not hang.
WAIT: Final = 10.0


def _try_lock(fd: int) -> Literal["taken", "busy", "unsupported"]:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return "busy"
    except OSError:
        return "unsupported"
    return "taken"


class _Request:
    """One writer waiting for the processes' lock."""

    __slots__ = ("abandoned", "done", "granted")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.granted = False
        self.abandoned = False


class WriterQueue:
    """The writers of one SQLite database in this process; :meth:`turn` is a writer's
    place in the queue, across this process's threads and the other processes that use
    the same file."""

    __slots__ = ("_closing", "_cond", "_fd", "_in_flight", "_path", "_pid", "_request",
                 "_threads", "_waiter", "wait")

    def __init__(self, database: Path | None, *, wait: float = WAIT) -> None:
        self._threads = threading.Lock()
        #: Seconds a writer queues at most (:data:`WAIT`).
        self.wait = wait
        #: The lock file; None: the threads queue, the processes meet at SQLite's lock.
        self._path = None if database is None else database.with_name(
            database.name + LOCK_SUFFIX)
        self._cond = threading.Condition(threading.Lock())
        self._fd: int | None = None
        self._pid = os.getpid()  # a forked child starts a queue of its own
        self._waiter: threading.Thread | None = None
        self._request: _Request | None = None
        self._in_flight = False  # the waiter thread is (about to be) blocked in flock
        self._closing = False

    @contextmanager
    def turn(self) -> Iterator[bool]:
        """Wait for this writer's turn (at most :attr:`wait` seconds), hold it for the
        block. The block is given whether the processes' lock is this writer's (False:
        no lock file here, or the wait ran out; SQLite's own lock still decides)."""
        deadline = time.monotonic() + self.wait
        if self._pid != os.getpid():
            self._forked()
        mine = self._threads.acquire(timeout=self.wait)
        fd = None
        try:
            # Only the thread whose turn it is asks for the file's lock: a lock belongs to
            # the open file, so two threads of one process could not exclude each other
            # with it.
            if mine:
                fd = self._process_turn(deadline)
            yield fd is not None
        finally:
            if fd is not None:
                with contextlib.suppress(OSError):  # closed meanwhile: the lock went with it
                    fcntl.flock(fd, fcntl.LOCK_UN)
            if mine:
                self._threads.release()

    def _forked(self) -> None:
        """Start afresh in a forked child: its parent's locks, lock file and waiter thread
        are not its own (the file is open in both: a lock taken through it would be the
        parent's lock as well)."""
        self._threads = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._fd, self._waiter, self._request = None, None, None
        self._in_flight = False
        self._pid = os.getpid()

    def close(self) -> None:
        """Close the lock file and stop the waiter thread (the engine is disposed of). From
        then on only the threads queue (an engine used again after its disposal still
        works: its writers meet the other processes at SQLite's lock)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            if not self._in_flight:
                self._close_file()

    def _close_file(self) -> None:
        # Called with _cond held, while no flock of the waiter thread is pending.
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def _disable(self) -> None:
        """No lock file from now on: only the threads queue."""
        self._path = None
        self.close()

    def _file(self) -> int | None:
        if self._path is None or self._closing:
            return None
        if self._fd is None:
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                self._disable()  # read-only: SQLite's own error will say so
                return None
            with self._cond:
                self._fd = fd
        return self._fd

    def _process_turn(self, deadline: float) -> int | None:
        fd = self._file()
        if fd is None:
            return None
        with self._cond:
            # While the waiter thread's flock is pending, the lock may come to it at any
            # moment: this writer waits for that one rather than take the lock beside it.
            now = "busy" if self._in_flight else _try_lock(fd)
            if now == "busy":
                request = self._request = _Request()
                if not self._in_flight:
                    self._in_flight = True
                    self._start_waiter()
                self._cond.notify_all()
        if now == "taken":
            return fd
        if now == "unsupported":
            self._disable()  # no flock on this file system
            return None
        waited = False
        try:
            request.done.wait(max(0.0, deadline - time.monotonic()))
            waited = True
        finally:
            with self._cond:
                granted = request.done.is_set() and request.granted
                if not request.done.is_set():
                    # The waiter thread lets the lock go when it comes.
                    request.abandoned = True
                elif granted and not waited:  # interrupted as the lock came: let it go
                    fcntl.flock(fd, fcntl.LOCK_UN)
        return fd if granted else None

    def _start_waiter(self) -> None:
        # Called with _cond held.
        if self._waiter is None or not self._waiter.is_alive():
            self._waiter = threading.Thread(target=self._wait_loop, args=(self._fd,),
                                            name="iotsec-sqlite-writers", daemon=True)
            self._waiter.start()

    def _wait_loop(self, fd: int) -> None:
        """The waiter thread: block in ``flock`` for each writer that found the lock taken,
        and hand it over (or let it go if that writer stopped waiting)."""
        while True:
            with self._cond:
                while not self._in_flight and not self._closing:
                    self._cond.wait()
                if not self._in_flight:
                    return  # closing, nothing pending
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                failed = False
            except OSError:
                failed = True
            with self._cond:
                request, self._request, self._in_flight = self._request, None, False
                if not failed and request is not None and not request.abandoned:
                    request.granted = True
                elif not failed:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                if request is not None:
                    request.done.set()
                if self._closing:
                    self._close_file()
                    return
