"""Run the Alembic migrations that ship inside the package.

Every command checks that the store is at the newest revision before it runs; that check
reads the ``alembic_version`` table directly against :data:`HEAD`, so that commands do not
pay for importing Alembic (a test keeps :data:`HEAD` equal to the newest migration).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from iotsec.store.db import reading, transaction

__all__ = ["HEAD", "head_revision", "is_current", "upgrade", "upgrade_in"]

if TYPE_CHECKING:
    from alembic.config import Config

_MIGRATIONS = Path(__file__).with_name("migrations")
#: The newest revision in ``migrations/versions``.
HEAD = "0027"


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
    with reading(engine) as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return list(versions) == [HEAD]
