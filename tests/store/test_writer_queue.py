"""The queue of a SQLite database's writers (``iotsec.store.writer_queue``): threads and
processes take turns, a writer that has waited long enough goes on without its turn and
the lock it gave up is let go, a forked child queues apart from its parent, and a home
where the lock file cannot be made still works."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text

from iotsec.store.db import make_engine, transaction
from iotsec.store.writer_queue import LOCK_SUFFIX, WriterQueue
from tests.helpers import make_csr
from tests.security.serving import child_pids, served

ROUNDS = 150


def _bump(counter: Path) -> None:
    """A read-modify-write of a file, slow enough that two at once lose an update."""
    value = int(counter.read_text() or "0")
    time.sleep(0.0002)
    counter.write_text(str(value + 1))


def _writer(database: str, counter: str, threads: int, start: multiprocessing.synchronize.Event,
            ) -> None:
    queue = WriterQueue(Path(database))
    start.wait()

    def run() -> None:
        for _ in range(ROUNDS):
            with queue.turn() as held:
                assert held
                _bump(Path(counter))

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    queue.close()


def test_threads_and_processes_take_turns(tmp_path: Path) -> None:
    database, counter = tmp_path / "iotsec.db", tmp_path / "counter"
    counter.write_text("0")
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    processes = [ctx.Process(target=_writer, args=(str(database), str(counter), 2, start))
                 for _ in range(3)]
    for p in processes:
        p.start()
    start.set()
    for p in processes:
        p.join(120)
        assert p.exitcode == 0
    # Without the queue, concurrent read-modify-writes lose updates.
    assert int(counter.read_text()) == 3 * 2 * ROUNDS
    assert (tmp_path / ("iotsec.db" + LOCK_SUFFIX)).stat().st_mode & 0o777 == 0o600


def _hold(lock_file: str, taken: multiprocessing.synchronize.Event,
          release: multiprocessing.synchronize.Event) -> None:
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    taken.set()
    release.wait(60)
    fcntl.flock(fd, fcntl.LOCK_UN)


def _lock_is_free(lock_file: Path) -> bool:
    fd = os.open(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing lets the lock go
    return True


def _start_holder(lock_file: Path) -> tuple[multiprocessing.process.BaseProcess,
                                             multiprocessing.synchronize.Event]:
    ctx = multiprocessing.get_context("spawn")
    taken, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(lock_file), taken, release))
    holder.start()
    assert taken.wait(60)
    return holder, release


def _held_elsewhere(tmp_path: Path) -> tuple[Path, Path, multiprocessing.process.BaseProcess,
                                             multiprocessing.synchronize.Event]:
    """A database whose writers' lock another process holds until ``release`` is set:
    (database, lock file, that process, release)."""
    lock_file = tmp_path / ("iotsec.db" + LOCK_SUFFIX)
    holder, release = _start_holder(lock_file)
    return tmp_path / "iotsec.db", lock_file, holder, release


def _release_then_take_turn(holder: multiprocessing.process.BaseProcess,
                            release: multiprocessing.synchronize.Event, lock_file: Path,
                            queue: WriterQueue) -> None:
    """The other process lets its lock go: the lock file is soon free (nothing of this
    process keeps it), and the queue's next writer takes it."""
    release.set()
    holder.join(60)
    deadline = time.monotonic() + 30
    while not _lock_is_free(lock_file):
        assert time.monotonic() < deadline, "the abandoned lock was never let go"
        time.sleep(0.01)
    with queue.turn() as held:
        assert held
    queue.close()


def test_a_writer_waits_for_another_process_then_gets_its_turn(tmp_path: Path) -> None:
    database, lock_file, holder, release = _held_elsewhere(tmp_path)
    queue = WriterQueue(database, wait=60)
    entered = threading.Event()

    def write() -> None:
        with queue.turn() as held:
            assert held
            entered.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not entered.wait(0.3)  # the other process holds the lock
    release.set()
    writer.join(60)
    assert entered.is_set()
    holder.join(60)
    assert _lock_is_free(lock_file)  # given back at the end of the turn
    queue.close()


def test_a_writer_stops_waiting_and_the_lock_it_gave_up_is_let_go(tmp_path: Path) -> None:
    database, lock_file, holder, release = _held_elsewhere(tmp_path)
    queue = WriterQueue(database, wait=0.2)
    with queue.turn() as held:
        # The wait ran out: the block runs, SQLite's own lock decides.
        assert not held
    # The waiter thread gets the lock after the writer gave up: it lets it go.
    _release_then_take_turn(holder, release, lock_file, queue)


def _forked_turn(queue: WriterQueue, go: multiprocessing.synchronize.Event,
                 result: multiprocessing.queues.Queue[bool]) -> None:
    go.wait(60)
    with queue.turn() as held:
        result.put(held)


def test_a_forked_child_queues_apart_from_its_parent(tmp_path: Path) -> None:
    queue = WriterQueue(tmp_path / "iotsec.db", wait=0.3)
    with queue.turn() as held:  # the parent's lock file is open from now on
        assert held
    ctx = multiprocessing.get_context("fork")
    result: multiprocessing.queues.Queue[bool] = ctx.Queue()
    go = ctx.Event()
    child = ctx.Process(target=_forked_turn, args=(queue, go, result))
    child.start()  # it inherits the open lock file
    with queue.turn() as held:
        assert held
        go.set()
        # Were the child to lock the file it inherited, the parent's lock would be its own
        # at once: it waits instead, and gives up.
        assert result.get(timeout=60) is False
    child.join(60)
    go = ctx.Event()
    child = ctx.Process(target=_forked_turn, args=(queue, go, result))
    child.start()
    go.set()
    assert result.get(timeout=60) is True
    child.join(60)
    queue.close()


def test_without_a_lock_file_only_the_threads_queue(tmp_path: Path) -> None:
    database = tmp_path / "iotsec.db"
    (tmp_path / ("iotsec.db" + LOCK_SUFFIX)).mkdir()  # cannot be opened as a file
    queue = WriterQueue(database)
    counter = tmp_path / "counter"
    counter.write_text("0")

    def run() -> None:
        for _ in range(50):
            with queue.turn() as held:
                assert not held
                _bump(counter)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(counter.read_text()) == 200
    assert WriterQueue(None).wait > 0
    with WriterQueue(None).turn() as held:
        assert not held


def _open_fds_to(path: Path) -> int:
    return sum(1 for fd in os.listdir("/proc/self/fd")
               if os.path.realpath(f"/proc/self/fd/{fd}") == str(path))


@pytest.mark.parametrize("contended", [False, True])
def test_the_engine_s_units_of_work_queue_and_dispose_closes_the_file(
        tmp_path: Path, contended: bool) -> None:
    database = tmp_path / "iotsec.db"
    lock_file = tmp_path / ("iotsec.db" + LOCK_SUFFIX)
    engine = make_engine(f"sqlite:///{database}")
    with transaction(engine) as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    assert _open_fds_to(lock_file) == 1
    if contended:  # the waiter thread is started, and stopped by the disposal
        holder, release = _start_holder(lock_file)
        threading.Timer(0.2, release.set).start()
        with transaction(engine) as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
        holder.join(60)
    engine.dispose()
    deadline = time.monotonic() + 30
    while _open_fds_to(lock_file) or any(t.name == "iotsec-sqlite-writers"
                                         for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_writer_interrupted_while_waiting_leaves_the_queue_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from iotsec.store import writer_queue

    database, lock_file, holder, release = _held_elsewhere(tmp_path)
    queue = WriterQueue(database, wait=60)

    class Interrupted(writer_queue._Request):
        def __init__(self) -> None:
            super().__init__()
            real = self.done

            class Done(threading.Event):
                def wait(self, timeout: float | None = None) -> bool:
                    raise KeyboardInterrupt

                def is_set(self) -> bool:
                    return real.is_set()

                def set(self) -> None:
                    real.set()

            self.done = Done()

    monkeypatch.setattr(writer_queue, "_Request", Interrupted)
    with pytest.raises(KeyboardInterrupt), queue.turn():
        pytest.fail("the turn came while the other process held the lock")
    monkeypatch.undo()
    # The abandoned request's lock is let go, and the threads' lock is free again.
    _release_then_take_turn(holder, release, lock_file, queue)


def test_two_serving_workers_on_one_sqlite_home_issue_through_the_queue(
        tmp_path: Path) -> None:
    """``iotsec serve --workers 2``: concurrent issuances through the API, spread over
    both processes, are all answered and all stored once; the workers that wrote hold
    the home's lock file open."""
    with served(tmp_path, "--workers", "2") as srv:
        ids = [f"queued-{i:02d}" for i in range(48)]
        devices = tmp_path / "devices.csv"
        devices.write_text("id,groups,attributes\n" + "".join(f"{d},,\n" for d in ids))
        assert srv.iotsec("device", "import", str(devices)).returncode == 0

        def issue(device: str) -> int:
            with srv.client() as client:  # a connection each: the workers share them
                return client.post(f"/v1/devices/{device}/certificates",
                                   headers={"Authorization": f"Bearer {srv.token}"},
                                   json={"csr": make_csr(cn=device).decode()}).status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(issue, ids)) == [201] * len(ids)
        listed = srv.iotsec("cert", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        issued = sorted(c["device_id"] for c in json.loads(listed.stdout)
                        if c["device_id"] in ids)
        assert issued == ids
        lock_file = srv.home / ("iotsec.db" + LOCK_SUFFIX)
        assert lock_file.stat().st_mode & 0o777 == 0o600
        holders = [pid for pid in child_pids(srv.pid)
                   if any(os.path.realpath(f"/proc/{pid}/fd/{fd}") == str(lock_file)
                          for fd in os.listdir(f"/proc/{pid}/fd"))]
        assert holders, "no worker queued on the lock file"
