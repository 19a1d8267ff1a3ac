"""Bad environments end in one clear line on stderr (exit 1), never "internal error", a
traceback, or a message that blames the wrong thing.

Each fault is made for real where that needs no privileges: a corrupt database file, an
out-of-range setting, a file where a directory is needed, a read-only SQLite store, a port
in use. A full disk is simulated here (``ENOSPC`` from the file layer, SQLite's own
``max_page_count``) and made for real on a tmpfs in test_host_faults.py.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pytest

import iotsec.filesystem
from iotsec.cli.main import main
from iotsec.errors import ConfigError
from iotsec.store import db
from tests.broker.support import short_broker_dir
from tests.cli.support import use_home
from tests.faults.support import assert_one_line, command_env, run_cli


class Run:
    """``iotsec ARGS`` in this process; the result as (code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        code = main(list(args))
        out, err = self._capsys.readouterr()
        return code, out, err

    def refused(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 1, (args, code, out, err)
        assert "Traceback" not in out + err and "internal error" not in err, err
        assert err.startswith("iotsec: error:") and err.count("\n") == 1, err
        return err.strip()


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(capsys)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_home(monkeypatch, tmp_path / "home")


# --- settings ------------------------------------------------------------------------


@pytest.mark.parametrize(("variable", "value", "allowed"), [
    ("IOTSEC_CRL_LIFETIME_HOURS", "1", "a whole number between 2 and 8760"),
    ("IOTSEC_HOT_CACHE_SECONDS", "soon", "a number between 0 and 60"),
    ("IOTSEC_KEYSTORE", "vault", "one of 'file' or 'pkcs11'"),
    ("IOTSEC_DEVICE_DNS_NAMES", "not json", "a JSON list"),
    ("IOTSEC_EMQX_AUTHN_TTL", "5", "a whole number between 30 and 86400"),
])
def test_a_setting_out_of_range_is_one_line(home: Path, run: Run,
                                            monkeypatch: pytest.MonkeyPatch, variable: str,
                                            value: str, allowed: str) -> None:
    monkeypatch.setenv(variable, value)
    if variable.startswith("IOTSEC_EMQX_"):
        from iotsec.app.broker.emqx import EmqxSettings

        with pytest.raises(ConfigError) as caught:
            EmqxSettings()
        message = str(caught.value)
    else:
        message = run.refused("crl", "--pem")
    assert variable in message and allowed in message, message


def test_a_secret_setting_is_not_echoed(home: Path, run: Run,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_CRL_URL", "ftp://example.org/crl")
    assert "ftp://example.org/crl" in run.refused("crl", "--pem")  # not a secret: shown
    monkeypatch.delenv("IOTSEC_CRL_URL")
    monkeypatch.setenv("IOTSEC_PKCS11_PIN", "x" * 10)
    monkeypatch.setenv("IOTSEC_PKCS11_TOKEN", "t" * 40)  # too long: the error names it
    message = run.refused("crl", "--pem")
    assert "IOTSEC_PKCS11_TOKEN" in message and "1 to 32 characters" in message
    assert "x" * 10 not in message


# --- the store -----------------------------------------------------------------------


def test_a_corrupt_database_file_is_named_as_such(home: Path, run: Run) -> None:
    database = home / "iotsec.db"
    for name in ("iotsec.db-wal", "iotsec.db-shm"):
        (home / name).unlink(missing_ok=True)
    database.write_bytes(os.urandom(database.stat().st_size))
    message = run.refused("device", "list")
    assert "corrupt" in message and "backup" in message, message


def test_a_damaged_page_is_named_as_such(home: Path, run: Run) -> None:
    assert run("device", "add", "dev-1")[0] == 0
    for name in ("iotsec.db-wal", "iotsec.db-shm"):
        (home / name).unlink(missing_ok=True)
    data = bytearray((home / "iotsec.db").read_bytes())
    data[8192:8192 + 16384] = b"\xff" * 16384  # pages after the header: tables and indexes
    (home / "iotsec.db").write_bytes(bytes(data))
    assert "corrupt" in run.refused("device", "list")


def test_a_read_only_store_is_named_as_such(home: Path, run: Run,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # SQLite opened read-only: every write fails as on a read-only home. 'iotsec crl'
    # signs, and records the signature as an event.
    monkeypatch.setenv("IOTSEC_DATABASE_URL",
                       f"sqlite:///file:{home / 'iotsec.db'}?mode=ro&uri=true")
    message = run.refused("crl", "--pem", "--force")
    assert "read-only" in message, message


def test_a_full_database_is_named_as_such(home: Path, run: Run,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # SQLite's page limit gives the very error a full disk gives (SQLITE_FULL).
    real: Callable[[Any, Any], None] = db._sqlite_pragmas

    def pragmas(dbapi_conn: Any, record: Any) -> None:
        real(dbapi_conn, record)
        pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

    monkeypatch.setattr(db, "_sqlite_pragmas", pragmas)
    message = run.refused("device", "import", _devices_csv(home.parent, 3000))
    assert "disk holding the database is full" in message, message


def _devices_csv(where: Path, count: int) -> str:
    path = where / "devices.csv"
    path.write_text("id,groups\n" + "".join(f"device-{i:06d}-{'x' * 80},fleet\n"
                                           for i in range(count)))
    return str(path)


# --- files ---------------------------------------------------------------------------


def test_a_full_disk_while_writing_a_file(home: Path, run: Run, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def full(path: Path, mode: int) -> BinaryIO:
        # Creating the staged file on a full file system fails with ENOSPC.
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(iotsec.filesystem, "_open_new", full)
    target = tmp_path / "chain.pem"
    message = run.refused("ca", "chain", "-o", str(target))
    assert "no space left" in message and str(target) in message, message
    assert ".tmp" not in message  # the file asked for, not the staged one
    assert not list(tmp_path.glob(".chain.pem.*"))


@pytest.mark.parametrize("command", [("ca", "chain", "-o"),
                                     ("broker", "mosquitto", "render", "--no-dry-run", "-o")])
def test_a_file_where_a_directory_is_needed(home: Path, run: Run, tmp_path: Path,
                                            command: tuple[str, ...]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way\n")
    message = run.refused(*command, str(blocker / "x"))
    assert str(blocker) in message and "directory" in message, message
    assert blocker.read_text() == "in the way\n"


# --- commands ------------------------------------------------------------------------


def test_ingest_log_takes_the_log_file_itself(home: Path, run: Run, tmp_path: Path) -> None:
    # A short directory: the broker's control socket lives inside it, and a Unix socket path
    # is short (a worker's temporary directory can be too long).
    with short_broker_dir("broker") as broker:
        code, _, err = run("broker", "mosquitto", "render", "--no-dry-run", "-o", str(broker))
        assert code == 0, err
        log = broker / "run" / "mosquitto.log"
        log.write_text("1733445600: New client connected from 127.0.0.1:50000 as dev-1 "
                       "(p2, c1, k60, u'dev-1').\n")
        code, out, err = run("broker", "mosquitto", "ingest-log", str(log), "--json")
        assert code == 0, err
        first = json.loads(out)
        assert first["lines"] == 1 and first["events"] == 1
        # The read position is kept in the broker directory, as with 'ingest-log DIR'.
        code, out, _ = run("broker", "mosquitto", "ingest-log", str(broker), "--json")
        assert code == 0 and json.loads(out)["lines"] == 0
    assert "does not exist" in run.refused("broker", "mosquitto", "ingest-log",
                                           str(tmp_path / "missing.log"))


def test_revoking_twice_is_done_already(home: Path, run: Run, tmp_path: Path) -> None:
    assert run("device", "add", "dev-1")[0] == 0
    code, out, err = run("cert", "issue", "dev-1", "--keygen", "-o", str(tmp_path / "k"),
                         "--json")
    assert code == 0, err
    serial = json.loads(out)["serial"]
    assert run("cert", "revoke", serial)[0] == 0
    code, out, err = run("cert", "revoke", serial, "--reason", "keyCompromise")
    assert code == 0 and "already revoked" in out and err == "", (code, out, err)


def test_serve_on_a_port_in_use_says_so_before_announcing(home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("serve", "--http", "--port", str(port), env=command_env(home),
                       timeout=60)
    line = assert_one_line(done)
    assert "serving on" not in done.stdout + done.stderr
    assert f"127.0.0.1:{port}" in line and "--port" in line, line
