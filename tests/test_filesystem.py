"""``iotsec.filesystem``: atomic, private and no-clobber writes, and what a failure leaves."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from iotsec import filesystem as fs
from iotsec.errors import ConflictError, InputTooLargeError


def _hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class DiskFull(Exception):
    """Stands for the ENOSPC a full disk gives a writer."""


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fsync fails as on a full disk (data is only known lost when it is synced)."""

    def fail(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fs.os, "fsync", fail)


def test_atomic_write_replaces_the_whole_file_with_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.pem"
    fs.atomic_write(target, b"first", mode=0o640)
    fs.atomic_write(target, b"second", mode=0o640)
    assert target.read_bytes() == b"second"
    assert _mode(target) == 0o640
    assert _mode(target.parent) == 0o700
    assert _hidden(target.parent) == []


def test_atomic_write_calls_prepare_on_the_staged_file_before_the_rename(tmp_path: Path
                                                                         ) -> None:
    target = tmp_path / "conf"
    target.write_bytes(b"old")
    seen: list[tuple[str, bytes]] = []

    def prepare(staged: Path) -> None:
        os.chmod(staged, 0o640)
        seen.append((staged.name, target.read_bytes()))

    fs.atomic_write(target, b"new", mode=0o600, prepare=prepare)
    (name, content_then), = seen
    assert name.startswith(".conf.") and content_then == b"old"
    assert _mode(target) == 0o640


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(
        tmp_path: Path, full_disk: None) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="No space left"):
        fs.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert _hidden(tmp_path) == []


def test_a_failing_prepare_leaves_no_temporary(tmp_path: Path) -> None:
    def refuse(staged: Path) -> None:
        raise PermissionError(errno.EPERM, "chown refused")

    with pytest.raises(PermissionError):
        fs.atomic_write(tmp_path / "conf", b"x", prepare=refuse)
    assert list(tmp_path.iterdir()) == []


def test_write_private_file_is_0600_and_refuses_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "keys" / "ca.key"
    fs.write_private_file(target, b"secret")
    assert _mode(target) == 0o600
    with pytest.raises(ConflictError):
        fs.write_private_file(target, b"other")
    assert target.read_bytes() == b"secret"
    fs.write_private_file(target, b"other", overwrite=True)
    assert target.read_bytes() == b"other"
    assert _mode(target) == 0o600


def test_publish_private_file_never_replaces(tmp_path: Path) -> None:
    target = tmp_path / "kek" / "a.kek"
    assert fs.publish_private_file(target, b"first") is True
    assert fs.publish_private_file(target, b"second") is False
    assert target.read_bytes() == b"first"
    assert _mode(target) == 0o600
    assert _hidden(target.parent) == []


def test_publish_falls_back_to_rename_without_hard_links(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    def no_links(src: Path, dst: Path) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(fs.os, "link", no_links)
    target = tmp_path / "out.bin"
    assert fs.publish_private_file(target, b"data") is True
    assert target.read_bytes() == b"data"
    assert fs.publish_private_file(target, b"again") is False
    assert target.read_bytes() == b"data"
    assert _hidden(tmp_path) == []


def test_publish_reports_other_link_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    def read_only(src: Path, dst: Path) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(fs.os, "link", read_only)
    with pytest.raises(OSError, match="Read-only"):
        fs.publish_private_file(tmp_path / "out.bin", b"data")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_publish_leaves_nothing(tmp_path: Path, full_disk: None) -> None:
    with pytest.raises(OSError, match="No space left"):
        fs.publish_private_file(tmp_path / "a.kek", b"data")
    assert list(tmp_path.iterdir()) == []


def test_atomic_stream_writes_only_a_complete_file(tmp_path: Path) -> None:
    target = tmp_path / "image.signed"
    target.write_bytes(b"previous")
    with fs.atomic_stream(target) as out:
        for n in range(100):
            out.write(bytes([n]) * 1000)
        assert target.read_bytes() == b"previous"  # nothing visible before the end
    assert target.stat().st_size == 100_000
    with pytest.raises(RuntimeError), fs.atomic_stream(target) as out:
        out.write(b"half")
        raise RuntimeError("the signer failed")
    assert target.stat().st_size == 100_000
    assert _hidden(tmp_path) == []


def test_a_staged_file_that_is_not_committed_is_removed(tmp_path: Path) -> None:
    with fs.staged_file(tmp_path / "incoming", mode=0o644) as staged:
        staged.file.write(b"abc")
        assert staged.path.exists() and _mode(staged.path) == 0o644
    assert list(tmp_path.iterdir()) == []


def test_a_staged_file_failing_to_flush_leaves_no_temporary(tmp_path: Path,
                                                            full_disk: None) -> None:
    with pytest.raises(OSError, match="No space left"), \
            fs.staged_file(tmp_path / "incoming") as staged:
        staged.file.write(b"abc")
        staged.replace(tmp_path / "final")
    assert list(tmp_path.iterdir()) == []


def test_a_staged_file_publishes_once(tmp_path: Path) -> None:
    target = tmp_path / "sealed.cose"
    target.write_bytes(b"someone else's")
    with fs.staged_file(target, suffix="partial") as staged:
        staged.file.write(b"mine")
        assert staged.publish(target) is False
    assert target.read_bytes() == b"someone else's"
    assert _hidden(tmp_path) == []


def test_create_new_refuses_an_existing_file_and_a_symlink(tmp_path: Path) -> None:
    fs.create_new(tmp_path / "acl", b"pattern", mode=0o640)
    assert _mode(tmp_path / "acl") == 0o640
    with pytest.raises(FileExistsError):
        fs.create_new(tmp_path / "acl", b"other")
    assert (tmp_path / "acl").read_bytes() == b"pattern"
    (tmp_path / "elsewhere").symlink_to(tmp_path / "victim")
    with pytest.raises(FileExistsError):
        fs.create_new(tmp_path / "elsewhere", b"x")
    assert not (tmp_path / "victim").exists()


def test_a_failed_create_new_removes_the_file(tmp_path: Path, full_disk: None) -> None:
    with pytest.raises(OSError, match="No space left"):
        fs.create_new(tmp_path / "crl.pem", b"data")
    assert list(tmp_path.iterdir()) == []


def test_publish_directory_refuses_an_existing_one(tmp_path: Path) -> None:
    staged = tmp_path / ".gen-2.tmp"
    staged.mkdir()
    (staged / "acl").write_bytes(b"x")
    empty = tmp_path / "gen-2"
    empty.mkdir()
    with pytest.raises(FileExistsError):
        fs.publish_directory(staged, empty)  # rename would have replaced the empty one
    empty.rmdir()
    fs.publish_directory(staged, empty)
    assert (empty / "acl").read_bytes() == b"x"
    assert not staged.exists()


def test_replace_symlink_switches_atomically(tmp_path: Path) -> None:
    (tmp_path / "gen-1").mkdir()
    (tmp_path / "gen-2").mkdir()
    current = tmp_path / "current"
    fs.replace_symlink(current, "gen-1")
    assert os.readlink(current) == "gen-1"
    fs.replace_symlink(current, "gen-2")
    assert os.readlink(current) == "gen-2"
    assert _hidden(tmp_path) == []


def test_a_failed_symlink_swap_leaves_no_staged_link(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(src: Path, dst: Path) -> None:
        raise OSError(errno.EIO, "I/O error")

    current = tmp_path / "current"
    fs.replace_symlink(current, "gen-1")
    monkeypatch.setattr(fs.os, "replace", refuse)
    with pytest.raises(OSError, match="I/O error"):
        fs.replace_symlink(current, "gen-2")
    assert os.readlink(current) == "gen-1"
    assert _hidden(tmp_path) == []


def test_sync_directory_tolerates_a_refusal(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def refuse(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(fs.os, "fsync", refuse)
    fs.sync_directory(tmp_path)
    assert len(calls) == 1


def test_read_bounded(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    path.write_bytes(b"x" * 10)
    assert fs.read_bounded(path, 10) == b"x" * 10
    with pytest.raises(InputTooLargeError):
        fs.read_bounded(path, 9)


def test_exclusive_lock_refuses_a_second_holder_at_once(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    busy = ConflictError("another writer holds it")
    with fs.exclusive_lock(lock, busy):
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        # flock locks belong to an open file: a second open, even in this process, waits
        # for nobody and is refused.
        with pytest.raises(ConflictError, match="another writer"), \
                fs.exclusive_lock(lock, busy):
            pass
    with fs.exclusive_lock(lock, busy):  # released when the block ended
        pass


def test_a_device_or_fifo_is_written_into_never_replaced(tmp_path: Path) -> None:
    """``iotsec crl -o /dev/null`` run as root must not leave a regular file in place of
    /dev/null: a FIFO stands in for it here."""
    import os
    import stat
    import threading

    from iotsec.filesystem import atomic_stream, atomic_write

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def drain() -> None:
        with fifo.open("rb") as reader:
            got.append(reader.read())

    for write in (lambda: atomic_write(fifo, b"one"), lambda: _stream(atomic_stream, fifo)):
        thread = threading.Thread(target=drain)
        thread.start()
        write()
        thread.join(10)
        assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert got == [b"one", b"two"]


def _stream(atomic_stream: Any, path: Path) -> None:
    with atomic_stream(path) as out:
        out.write(b"two")
