"""A backup restored into a new home holds every table and every custody file, on SQLite
and on PostgreSQL, and the restored home works: its keys sign, its KEK opens the secrets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from iotsec.app.backup import create_backup
from iotsec.app.custody.keys import open_device_secret
from iotsec.app.identity import device_tokens
from iotsec.app.pki.crl import current_crl
from iotsec.app.restore import CRL_NUMBER_JUMP, restore_backup
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.config import Settings
from iotsec.store import models as m
from iotsec.store.db import reading
from tests.backup.conftest import PASSPHRASE, home_files, populate, store_rows
from tests.conftest import FakeClock


def _target(tmp_path: Path, database_url: str | None, pg_schema: Callable[[], str]
            ) -> Settings:
    return Settings(home=tmp_path / "restored",
                    database_url=None if database_url is None else pg_schema())


def test_round_trip_restores_every_table_and_key_file(
        settings: Settings, rt: Runtime, tmp_path: Path, database_url: str | None,
        pg_schema: Callable[[], str], clock: FakeClock) -> None:
    populate(rt)
    kid, secret = device_tokens.create_secret(rt, "dev-c")
    before = store_rows(settings.store_url)
    result = create_backup(settings, tmp_path / "home.bak", PASSPHRASE)
    assert result.tables == {name: len(rows) for name, rows in before.items()}
    assert {"keystore.json", "ca-passphrase"} <= set(result.files)
    assert any(f.startswith("keys/kek/") for f in result.files)
    assert oct((tmp_path / "home.bak").stat().st_mode & 0o777) == "0o600"

    target = _target(tmp_path, database_url, pg_schema)
    restored = restore_backup(target, tmp_path / "home.bak", PASSPHRASE, now=clock())
    assert restored.replaced is None
    after = store_rows(target.store_url)
    for name, rows in before.items():
        if name == "events":  # the restore is recorded in the restored store
            assert after[name][:-1] == rows
            assert after[name][-1][2] == "backup.restore"
        elif name == "crls":  # numbers jump, the cached CRL of the backup is dropped
            assert [(r[0], r[1] + CRL_NUMBER_JUMP, True, None) for r in rows] == \
                [(r[0], r[1], r[4], r[5]) for r in after[name]]
        elif name == "delta_crls":  # the delta of the backup is dropped, its row kept
            assert [(r[0], None, None, None, None, None, True, None) for r in rows] == \
                after[name]
        else:
            assert after[name] == rows, name
    assert home_files(settings.resolved_home) == home_files(target.resolved_home)
    assert (target.resolved_home / "database.json").exists() == (database_url is not None)

    again = open_runtime(Settings(home=target.home), clock=clock)
    try:
        assert again.engine.dialect.name == rt.engine.dialect.name
        crl = current_crl(again)
        assert crl.number == before["crls"][1][1] + CRL_NUMBER_JUMP + 1
        with reading(again.engine) as conn:
            stored = conn.execute(select(m.device_secrets.c.ciphertext)).scalar_one()
        assert open_device_secret(again, kid, "dev-c", stored).decode() == secret
    finally:
        again.close()


def test_restore_refuses_a_home_that_is_not_empty_unless_forced(
        settings: Settings, rt: Runtime, tmp_path: Path, clock: FakeClock) -> None:
    populate(rt)
    create_backup(settings, tmp_path / "home.bak", PASSPHRASE)
    from iotsec.errors import RestoreTargetError

    with pytest.raises(RestoreTargetError, match="is not empty"):
        restore_backup(settings, tmp_path / "home.bak", PASSPHRASE)
    if settings.database_url is not None:
        # A PostgreSQL store is never overwritten, even with --force.
        with pytest.raises(RestoreTargetError, match=r"database .* is not empty"):
            restore_backup(settings, tmp_path / "home.bak", PASSPHRASE, force=True)
        return
    old_files = home_files(settings.resolved_home)
    result = restore_backup(settings, tmp_path / "home.bak", PASSPHRASE, force=True)
    assert result.replaced is not None and result.replaced.name.startswith("home.replaced-")
    assert home_files(result.replaced) == old_files
    assert (result.replaced / "iotsec.db").exists()


def test_a_backup_is_not_written_inside_the_home(settings: Settings, rt: Runtime) -> None:
    from iotsec.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="inside the home"):
        create_backup(settings, settings.resolved_home / "b.bak", PASSPHRASE)
    assert not (settings.resolved_home / "b.bak").exists()
