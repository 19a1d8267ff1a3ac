"""Fixtures for backups, restores and migrations: a cheap backup key cost, spare
PostgreSQL schemas to restore or migrate into, and helpers that read a whole store."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from iotsec.app.identity import devices
from iotsec.app.pki import issuance, revocation
from iotsec.app.pki.crl import current_crl
from iotsec.app.runtime import Runtime
from iotsec.store import backup_format
from iotsec.store.db import make_engine, reading
from iotsec.store.snapshot import TABLES, read_batches
from tests.conftest import PG_URL, _postgres_or_skip
from tests.helpers import make_csr

PASSPHRASE = b"backup passphrase for tests"


@pytest.fixture(autouse=True)
def _cheap_backup_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    # Still scrypt and the real format; 1 MiB instead of 128 MiB per backup.
    monkeypatch.setattr(backup_format, "SCRYPT_COST", backup_format.BackupCost(10, 8, 1))


@pytest.fixture
def pg_schema() -> Iterator[Callable[[], str]]:
    """Makes empty PostgreSQL schemas (a URL each), dropped after the test."""
    made: list[str] = []
    admin: Any = None

    def make() -> str:
        nonlocal admin
        _postgres_or_skip()
        admin = admin or create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        schema = f"b_{secrets.token_hex(6)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        made.append(schema)
        sep = "&" if "?" in PG_URL else "?"
        return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"

    yield make
    if admin is not None:
        with admin.connect() as conn:
            for schema in made:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def store_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the store at ``url``, in primary-key order."""
    engine = make_engine(url)
    try:
        with reading(engine) as conn:
            return {t.name: [r for b in read_batches(conn, t) for r in b] for t in TABLES}
    finally:
        engine.dispose()


def populate(rt: Runtime) -> dict[str, str]:
    """A small fleet: devices, certificates (one revoked), a published CRL."""
    for name in ("dev-a", "dev-b"):
        devices.add_device(rt, devices.NewDevice.parse(name, groups=["fleet"]))
    # Two groups: their names on the device's row (migration 0028) are copied as they are,
    # and the links' triggers find the same when the links are copied after the rows.
    devices.add_device(rt, devices.NewDevice.parse("dev-c", groups=["fleet", "Aisle-2"]))
    a = issuance.issue_from_csr(rt, "dev-a", make_csr())
    b = issuance.issue_from_csr(rt, "dev-b", make_csr())
    revocation.revoke(rt, b.serial)
    current_crl(rt)
    return {"valid": a.serial, "revoked": b.serial}


def home_files(home: Path) -> dict[str, bytes]:
    """The custody files of a home: key files, KEK files, passphrase, keystore.json."""
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*"))
            if p.is_file() and not p.name.startswith("iotsec.db")
            and p.name != "database.json"}
