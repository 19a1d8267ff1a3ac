"""The same faults as test_clear_errors.py, made for real with mounts: a home on a tmpfs
that is full, and a home bind-mounted read-only. Mounting needs root; each mount is
undone at the end of its test."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from iotsec.app.setup import init_home
from iotsec.config import Settings
from tests.faults.support import assert_one_line, command_env, run_cli
from tests.services import unavailable


def _mount(*args: str) -> None:
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs or a read-only bind mount needs root")
    done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30,
                          check=False)
    if done.returncode != 0:
        unavailable(f"cannot mount ({' '.join(args)}): {done.stderr.strip()}")


@contextmanager
def _mounted(target: Path, *args: str) -> Iterator[Path]:
    target.mkdir(exist_ok=True)
    _mount(*args, str(target))
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], capture_output=True, timeout=30, check=False)


def _fill(disk: Path) -> None:
    """Write to ``disk`` until it has no byte left."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (65536, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)


def test_a_full_disk(tmp_path: Path) -> None:
    with _mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=2m", "tmpfs") as disk:
        home = disk / "home"
        init_home(Settings(home=home), store_passphrase=True)
        env = command_env(home)
        assert run_cli("device", "add", "dev-1", env=env).returncode == 0
        _fill(disk)
        for args in (("device", "add", "dev-2"), ("device", "list"), ("crl", "--pem")):
            line = assert_one_line(run_cli(*args, env=env))
            assert "disk holding the database is full" in line, (args, line)

    # The store on a disk with room, the output on a full one.
    home = tmp_path / "home"
    init_home(Settings(home=home), store_passphrase=True)
    env = command_env(home, IOTSEC_P12_PASSPHRASE="a passphrase for the test")
    assert run_cli("device", "add", "dev-1", env=env).returncode == 0
    with _mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=256k", "tmpfs") as disk:
        _fill(disk)
        line = assert_one_line(run_cli("ca", "chain", "-o", str(disk / "chain.pem"), env=env))
        assert "no space left" in line and str(disk / "chain.pem") in line, line
        issued = run_cli("cert", "issue", "dev-1", "--keygen", "-o", str(disk / "k"), env=env)
        line = assert_one_line(issued)
        assert "no space left" in line and "dev-1.key" in line, line
    # The key could not be saved, so no certificate was issued.
    assert run_cli("cert", "list", "--json", env=env).stdout.strip() == "[]"


@pytest.mark.parametrize("open_elsewhere", [True, False])
def test_a_read_only_home(tmp_path: Path, open_elsewhere: bool) -> None:
    home = tmp_path / "home"
    init_home(Settings(home=home), store_passphrase=True)
    # Another process with the store open keeps SQLite's -wal and -shm files in place, as
    # a running 'iotsec serve' does: reads then work, and the first write fails.
    holder = sqlite3.connect(home / "iotsec.db") if open_elsewhere else None
    try:
        if holder is not None:
            holder.execute("SELECT count(*) FROM devices").fetchall()
        with _mounted(tmp_path / "ro", "--bind", str(home)):
            _mount("-o", "remount,ro,bind", str(tmp_path / "ro"))
            env = command_env(tmp_path / "ro")
            line = assert_one_line(run_cli("crl", "--pem", env=env))
            if open_elsewhere:
                assert "read-only" in line, line
            else:
                assert "cannot be opened" in line and "writable" in line, line
    finally:
        if holder is not None:
            holder.close()
