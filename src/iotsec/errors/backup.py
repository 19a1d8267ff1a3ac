"""Errors: backups, restores and moving a home's store to another database."""

from __future__ import annotations

from iotsec.errors.base import ConflictError, IotsecError, MalformedInputError

__all__ = [
    "BackupAuthenticationError", "BackupError", "BackupFormatError", "BackupIntegrityError",
    "BackupTruncatedError", "MigrationError", "MigrationTargetError", "RestoreTargetError"
]


class BackupError(IotsecError):
    """A backup that cannot be made or restored. Messages name the part that failed, never
    a passphrase or key material."""

    status = 422
    code = "backup"


class BackupFormatError(BackupError, MalformedInputError):
    """Not an iotsec backup, an unsupported version, or a field outside its stated limits."""

    status = 400
    code = "backup-format"
    default_hint = "give a file made by 'iotsec backup create'"


class BackupAuthenticationError(BackupError):
    """The backup does not authenticate: a wrong passphrase, or bytes altered after it was
    made (the two look alike on purpose: neither may leak which)."""

    code = "backup-authentication"
    default_hint = ("check IOTSEC_BACKUP_PASSPHRASE; if it is right, the file was altered: "
                    "use another copy of the backup")


class BackupTruncatedError(BackupError):
    """The backup ends early (a copy that was cut short)."""

    code = "backup-truncated"
    default_hint = "the file is incomplete: use another copy of the backup"


class BackupIntegrityError(BackupError):
    """What the backup holds, or what a restore wrote, disagrees with the backup's manifest."""

    code = "backup-integrity"
    default_hint = "nothing was restored; use another copy of the backup"


class RestoreTargetError(BackupError, ConflictError):
    """The home or database a restore would write to is not empty."""

    status = 409
    code = "restore-target"


class MigrationError(IotsecError):
    """Moving a home's store to another database failed; the home still uses its store."""

    status = 422
    code = "migration"


class MigrationTargetError(MigrationError, ConflictError):
    """The database to move the store to is not empty, or not a database iotsec can use."""

    status = 409
    code = "migration-target"
