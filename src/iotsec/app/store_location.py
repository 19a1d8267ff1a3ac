"""Which database a home's store lives in, when it is not the embedded SQLite file.

``IOTSEC_DATABASE_URL`` names it for one process. A home whose store was moved
(``iotsec migrate --to URL``) or restored into another database remembers the URL in
``database.json`` (mode 0600: a URL may carry a password), so that every later command
finds the store without the variable, and no command can fall back to the SQLite file
the store was moved out of. A URL in the environment still wins.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

from iotsec.errors import ConfigError, InvalidInputError
from iotsec.filesystem import read_bounded, write_private_file

if TYPE_CHECKING:
    from iotsec.config import Settings

__all__ = ["DATABASE_FILE", "check_postgresql_url", "display_url", "remember_database",
           "with_remembered_database"]

DATABASE_FILE: Final = "database.json"
MAX_DATABASE_FILE: Final = 4096


def display_url(url: str) -> str:
    """``url`` with its password hidden, for messages."""
    # Deferred here and below for start-up time: a home without a remembered URL (the
    # SQLite default) opens its store without SQLAlchemy.
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<an invalid database URL>"


def check_postgresql_url(url: str) -> str:
    """``url`` if it is a PostgreSQL URL iotsec can use, else :class:`InvalidInputError`."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidInputError("the database URL is not a valid URL",
                                hint="e.g. postgresql+psycopg://iotsec@db.example.com/iotsec"
                                ) from None
    if parsed.drivername != "postgresql+psycopg" or not parsed.database:
        raise InvalidInputError(f"{display_url(url)} is not a PostgreSQL URL with a database",
                                hint="use postgresql+psycopg://USER@HOST[:PORT]/DATABASE")
    return url


def remember_database(settings: Settings, url: str) -> None:
    """Record in the home that its store lives at ``url``."""
    doc = {"database_url": check_postgresql_url(url)}
    write_private_file(settings.resolved_home / DATABASE_FILE,
                       (json.dumps(doc, sort_keys=True) + "\n").encode("utf-8"), overwrite=True)


def with_remembered_database(settings: Settings) -> Settings:
    """``settings`` with the database the home remembers, unless the environment names one."""
    if settings.database_url:
        return settings
    path = settings.resolved_home / DATABASE_FILE
    try:
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"{path} is readable by other users",
                              hint=f"run 'chmod 600 {path}'")
        doc = json.loads(read_bounded(path, MAX_DATABASE_FILE))
    except FileNotFoundError:
        return settings
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON",
                          hint="restore it, or set IOTSEC_DATABASE_URL") from None
    url = doc.get("database_url") if isinstance(doc, dict) else None
    if not isinstance(url, str):
        raise ConfigError(f"{path} does not name a database",
                          hint="restore it, or set IOTSEC_DATABASE_URL")
    check_postgresql_url(url)
    # Deferred (start-up time): the commands that run without the settings model read
    # DATABASE_FILE from here (iotsec.app.direct_home).
    from iotsec.config import Settings

    return Settings.model_validate({**settings.model_dump(exclude_unset=True),
                                    "database_url": url})
