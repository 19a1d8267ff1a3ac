"""A home's store opened on its driver alone, for the commands that run before Typer is
imported (:mod:`iotsec.cli.lean`, ADRs 0033 and 0050), and the checks of the environment
and the home they share with :mod:`iotsec.app.direct_home`.

:func:`open_direct_store` opens the store :func:`iotsec.app.runtime.open_runtime` would
open, with the same checks, without the settings model (pydantic) or SQLAlchemy: the
home's SQLite file, or the PostgreSQL database ``IOTSEC_DATABASE_URL`` names. It returns
None, having written nothing, whenever the runtime might do something else, so that the
caller runs the command through the full runtime, which then does exactly what it always
did (the error it reports included):

- an ``IOTSEC_`` variable in the environment other than those the caller reads (a setting
  is validated by the settings model), or one given twice in two spellings, or empty;
- a URL the driver cannot be given as it is (:func:`iotsec.store.reader.postgres_arguments`);
- without a URL: a store the home remembers in another database (``database.json``), or no
  SQLite file (a home that is not initialised);
- a key store other than files (``keystore.json``), or, without ``IOTSEC_CA_PASSPHRASE``, no
  passphrase file the runtime would read (the runtime opens the key store whether or not
  the command uses a key);
- a store that is not migrated.

A store that cannot be reached is reported here with the error the runtime reports: both
open it with the same function.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from iotsec.app.store_location import DATABASE_FILE
from iotsec.custody.home import KEYSTORE_FILE, MAX_KEYSTORE_FILE, read_passphrase_file
from iotsec.errors import IotsecError
from iotsec.filesystem import read_bounded
from iotsec.store.migrate import is_current_on
from iotsec.store.reader import DriverConnection, open_postgres, open_sqlite, postgres_arguments

__all__ = ["DEFAULT_HOME", "HOME", "KEYS_DIR", "PASSPHRASE", "PASSPHRASE_FILE", "SQLITE_FILE",
           "STORE_URL", "exists", "file_keystore", "home_dir", "open_direct_store",
           "settings_given"]

#: The home when ``IOTSEC_HOME`` is not set, and the places in a home that ``Settings``
#: names (its ``home`` default, ``store_url``, ``keys_dir`` and ``passphrase_file``; a test
#: keeps them equal).
DEFAULT_HOME: Final = ".iotsec"
SQLITE_FILE: Final = "iotsec.db"
KEYS_DIR: Final = "keys"
PASSPHRASE_FILE: Final = "ca-passphrase"  # noqa: S105 - a file name, not a secret
#: The variables of the settings read here, lower case (the settings model reads them in
#: any case).
HOME: Final = "iotsec_home"
STORE_URL: Final = "iotsec_database_url"
PASSPHRASE: Final = "iotsec_ca_passphrase"  # noqa: S105 - a variable's name
#: Variables that are no setting, and that the settings model ignores.
_NOT_SETTINGS: Final = frozenset({"iotsec_debug"})


def settings_given(environ: Mapping[str, str], read: frozenset[str]
                   ) -> dict[str, str] | None:
    """The ``IOTSEC_`` settings in ``environ`` by lower-case name, or None when one of them
    is not in ``read``, is given twice (in two spellings) or is empty."""
    given: dict[str, str] = {}
    for key, value in environ.items():
        name = key.lower()
        if not name.startswith("iotsec_") or name in _NOT_SETTINGS:
            continue
        if name not in read or name in given or not value:
            return None
        given[name] = value
    return given


def home_dir(given: Mapping[str, str]) -> Path | None:
    """The home the settings name (``Settings.resolved_home``), or None when it cannot be
    told."""
    try:
        return Path(given.get(HOME, DEFAULT_HOME)).expanduser().resolve()
    except (OSError, RuntimeError):
        return None


def exists(path: Path) -> bool | None:
    """Whether ``path`` exists as ``stat`` sees it (None: it cannot be told)."""
    try:
        path.stat()
    except FileNotFoundError:
        return False
    except OSError:
        return None
    return True


def file_keystore(home: Path) -> bool:
    """Whether the home keeps its keys in files, as ``keystore.json`` records it (a home
    without the record does)."""
    path = home / KEYSTORE_FILE
    try:
        if path.stat().st_size > MAX_KEYSTORE_FILE:
            return False
        doc = json.loads(read_bounded(path, MAX_KEYSTORE_FILE))
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict):
        return False
    return (doc.get("keystore") in (None, "file") and doc.get("pkcs11_module") is None
            and doc.get("pkcs11_token") is None)


def _passphrase_file(home: Path) -> bool:
    """Whether the home's passphrase file holds a secret the runtime would read."""
    try:
        return read_passphrase_file(home / PASSPHRASE_FILE) is not None
    except (IotsecError, OSError):
        return False


def open_direct_store(environ: Mapping[str, str] | None = None) -> DriverConnection | None:
    """The store of the home of ``environ`` (default: this process's) opened on its driver,
    or None when the command must run through the full runtime (see the module's notes).
    Raises what the runtime raises when the store cannot be reached. Close it when done."""
    given = settings_given(os.environ if environ is None else environ,
                           frozenset({HOME, STORE_URL, PASSPHRASE}))
    home = None if given is None else home_dir(given)
    if given is None or home is None or not file_keystore(home):
        return None
    if PASSPHRASE not in given and not _passphrase_file(home):
        return None
    url = given.get(STORE_URL)
    if url is None:
        sqlite_file = home / SQLITE_FILE
        if exists(home / DATABASE_FILE) is not False or exists(sqlite_file) is not True:
            return None
        conn = open_sqlite(sqlite_file)
    else:
        arguments = postgres_arguments(url)
        if arguments is None:
            return None
        conn = open_postgres(arguments)
    try:
        with conn.reading() as reader:
            current = is_current_on(reader, sqlite=not conn.postgres)
    except BaseException:
        conn.close()
        raise
    if not current:
        conn.close()
        return None
    return conn
