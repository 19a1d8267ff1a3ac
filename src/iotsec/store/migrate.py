"""Run the Alembic migrations that ship inside the package.

Every command checks that the store is at the newest revision before it runs; that check
reads the ``alembic_version`` table directly against :data:`HEAD`, so that commands do not
pay for importing Alembic (a test keeps :data:`HEAD` equal to the newest migration).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from iotsec.store.reader import Reader, revision

__all__ = ["HEAD", "head_revision", "is_current", "is_current_on", "upgrade", "upgrade_in"]

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection, Engine

_MIGRATIONS = Path(__file__).with_name("migrations")
#: The newest revision in ``migrations/versions``.
HEAD = "0031"


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest revision, as Alembic finds it in the shipped scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    from iotsec.store.db import transaction  # deferred: the check below needs no SQLAlchemy

    with transaction(engine) as conn:
        upgrade_in(conn)


def upgrade_in(conn: Connection) -> None:
    """Bring the schema to the newest revision inside the caller's transaction (so that on
    PostgreSQL a restore that fails later leaves no tables behind either)."""
    from alembic import command

    cfg = _config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


def is_current(engine: Engine) -> bool:
    from sqlalchemy import inspect, text  # deferred: commands check with is_current_on

    from iotsec.store.db import reading

    with reading(engine) as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return list(versions) == [HEAD]


def is_current_on(reader: Reader, *, sqlite: bool) -> bool:
    """Is the store that ``reader`` reads at the newest revision? (What every command checks
    first, on the driver itself: see :mod:`iotsec.store.reader`.)"""
    return revision(reader, sqlite=sqlite) == [HEAD]
