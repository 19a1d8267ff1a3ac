"""A wrong passphrase, an altered, truncated or malformed backup is refused with a clear
error, and the refused restore writes nothing: no home, no staging directory, no tables."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect

from iotsec.app.backup import create_backup
from iotsec.app.restore import restore_backup
from iotsec.app.runtime import Runtime
from iotsec.config import Settings
from iotsec.errors import (
    BackupAuthenticationError,
    BackupError,
    BackupFormatError,
    BackupIntegrityError,
    BackupTruncatedError,
    InvalidInputError,
)
from iotsec.protect.atrest import StreamHeader
from iotsec.store import backup_format as fmt
from iotsec.store.db import make_engine
from tests.backup.conftest import PASSPHRASE, populate

Records = list[tuple[bytes, bytes]]


@pytest.fixture
def backup(settings: Settings, rt: Runtime, tmp_path: Path) -> bytes:
    populate(rt)
    # A file larger than a few chunks, so that a cut can fall on a chunk boundary.
    firmware = settings.resolved_home / "tuf" / "targets" / "fw.bin"
    firmware.parent.mkdir(parents=True)
    firmware.write_bytes(os.urandom(3 * fmt.CHUNK + 123))
    create_backup(settings, tmp_path / "home.bak", PASSPHRASE)
    return (tmp_path / "home.bak").read_bytes()


def _refused(tmp_path: Path, data: bytes,
             error: type[BackupError] | tuple[type[BackupError], ...], match: str, *,
             passphrase: bytes = PASSPHRASE, url: str | None = None) -> None:
    path = tmp_path / "candidate.bak"
    path.write_bytes(data)
    target = Settings(home=tmp_path / "restored", database_url=url)
    with pytest.raises(error, match=match):
        restore_backup(target, path, passphrase)
    assert not (tmp_path / "restored").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".restored")] == []
    if url is not None:
        engine = make_engine(url)
        with engine.connect() as conn:
            assert inspect(conn).get_table_names() == []
        engine.dispose()


def test_a_wrong_passphrase_is_refused(tmp_path: Path, backup: bytes) -> None:
    _refused(tmp_path, backup, BackupAuthenticationError, "does not open with this passphrase",
             passphrase=b"not the passphrase at all")


def test_a_wrong_passphrase_into_postgresql_creates_no_table(
        tmp_path: Path, backup: bytes, pg_schema: Callable[[], str]) -> None:
    _refused(tmp_path, backup, BackupAuthenticationError, "passphrase",
             passphrase=b"not the passphrase at all", url=pg_schema())


def test_altered_bytes_are_refused(tmp_path: Path, backup: bytes) -> None:
    header_end = fmt.OUTER_SIZE + StreamHeader.read(io.BytesIO(backup[fmt.OUTER_SIZE:])).size
    for where in (fmt.OUTER_SIZE - 1, header_end + 10, len(backup) // 2, len(backup) - 1):
        altered = bytearray(backup)
        altered[where] ^= 0x01
        _refused(tmp_path, bytes(altered), BackupAuthenticationError, "altered")
    _refused(tmp_path, b"PK\x03\x04" + backup[4:], BackupFormatError, "not an iotsec backup")
    version = bytearray(backup)
    version[8] = 2
    _refused(tmp_path, bytes(version), BackupFormatError, "unsupported backup version 2")
    cost = bytearray(backup)
    cost[9] = 30  # 2**30 scrypt: refused before any memory is asked for
    _refused(tmp_path, bytes(cost), BackupFormatError, "key-derivation cost")


def test_a_truncated_backup_is_refused(tmp_path: Path, backup: bytes) -> None:
    header_end = fmt.OUTER_SIZE + StreamHeader.read(io.BytesIO(backup[fmt.OUTER_SIZE:])).size
    sealed = fmt.CHUNK + 16
    cuts = [10, fmt.OUTER_SIZE + 20, header_end, header_end + 100, header_end + sealed,
            header_end + 2 * sealed, len(backup) - 1]
    for cut in cuts:
        _refused(tmp_path, backup[:cut], (BackupTruncatedError, BackupAuthenticationError),
                 "cut short|ends|missing")
    _refused(tmp_path, b"", BackupFormatError, "not an iotsec backup")


def _records(data: bytes) -> Records:
    return list(fmt.BackupReader(io.BytesIO(data), PASSPHRASE).records())


def _rewrite(records: Records) -> bytes:
    out = io.BytesIO()
    writer = fmt.BackupWriter(out, PASSPHRASE)
    for kind, body in records:
        writer.record(kind, body)
    writer.finish()
    return out.getvalue()


def _edit(records: Records, kind: bytes, change: Callable[[Any], Any]) -> Records:
    """``records`` with the first JSON record of ``kind`` passed through ``change``."""
    import json

    done = False
    edited = []
    for k, body in records:
        if k == kind and not done:
            body = json.dumps(change(json.loads(body))).encode()
            done = True
        edited.append((k, body))
    return edited


def test_every_field_is_checked(tmp_path: Path, backup: bytes) -> None:
    records = _records(backup)
    cases: list[tuple[Records, type[BackupError], str]] = [
        (_edit(records, fmt.FILE, lambda d: {**d, "path": "../outside"}),
         BackupFormatError, "unsafe file path"),
        (_edit(records, fmt.FILE, lambda d: {**d, "path": "/etc/passwd"}),
         BackupFormatError, "unsafe file path"),
        (_edit(records, fmt.FILE, lambda d: {**d, "path": "iotsec.db"}),
         BackupFormatError, "where it may not"),
        (_edit(records, fmt.FILE, lambda d: {**d, "size": d["size"] + 1}),
         BackupFormatError, "incomplete"),
        (_edit(records, fmt.TABLE, lambda d: {**d, "name": "secrets"}),
         BackupFormatError, "out of order"),
        (_edit(records, fmt.TABLE, lambda d: {**d, "columns": d["columns"][:-1]}),
         BackupFormatError, "other columns"),
        (_edit(records, fmt.HEADER, lambda d: {**d, "schema_revision": "0001"}),
         BackupFormatError, "revision 0001"),
        (_edit(records, fmt.HEADER, lambda d: {**d, "extra": 1}),
         BackupFormatError, "invalid at extra"),
        (_edit(records, fmt.MANIFEST, lambda d: {**d, "tables": d["tables"][:-1]}),
         BackupIntegrityError, "tables disagree"),
        (_edit(records, fmt.MANIFEST, lambda d: {**d, "files": d["files"][1:]}),
         BackupIntegrityError, "files disagree"),
        (records[:-1], BackupFormatError, "no manifest"),
        ([*records, (fmt.DATA, b"x")], BackupFormatError, "follow the backup's manifest"),
        (records[1:], BackupFormatError, "does not start with its header"),
        ([r for r in records if r[0] != fmt.ROWS or b"authorities" in r[1]],
         BackupIntegrityError, "tables disagree"),
    ]
    # A row whose value has the wrong type for its column.
    from iotsec.protect import cbor

    rows_at = next(i for i, r in enumerate(records) if r[0] == fmt.ROWS)
    bad_rows = cbor.loads(records[rows_at][1], max_items=100_000)
    bad_rows[0][0] = "not an integer" if isinstance(bad_rows[0][0], int) else 12345
    cases.append(([*records[:rows_at], (fmt.ROWS, cbor.dumps(bad_rows)),
                   *records[rows_at + 1:]], BackupFormatError, "invalid value"))
    for edited, error, match in cases:
        _refused(tmp_path, _rewrite(edited), error, match)


def test_a_record_over_its_limit_is_refused_before_it_is_read(tmp_path: Path,
                                                             backup: bytes) -> None:
    records = _records(backup)
    out = io.BytesIO()
    writer = fmt.BackupWriter(out, PASSPHRASE)
    writer.record(*records[0])
    # Framing written by hand: a table record that claims 2 GiB.
    writer.record(fmt.DATA, b"")
    raw = writer._buf  # the framing of the last record, not yet sealed
    raw[-5:] = fmt.TABLE + (2**31).to_bytes(4, "big")
    writer.finish()
    _refused(tmp_path, out.getvalue(), BackupFormatError, "over the limit")


def test_a_short_passphrase_is_refused(settings: Settings, rt: Runtime, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="at least 12 characters"):
        create_backup(settings, tmp_path / "b.bak", b"short")
    assert not (tmp_path / "b.bak").exists()
