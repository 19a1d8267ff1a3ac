"""``iotsec backup restore``: a backup back into a new home, without breaking revocation.

Nothing is written where anyone could use it until the whole backup authenticated and
matched its manifest: the home is built in a private staging directory beside the target
and the store is filled in one transaction (on PostgreSQL the schema too), committed last,
and only then does the staged home take the home's place. A refused restore leaves nothing.

A restored CA must not undo what was published after the backup (RFC 5280): CRL numbers
only increase, and a revocation stays on the CRL until the certificate expires. The
backup cannot know what came after it, so the restore:

* makes every CA's next CRL number greater than any it may have published: greater than the
  number of a published CRL given with ``published`` (the last one published), else than
  ``min_crl_number``, else than the number in the backup plus :data:`CRL_NUMBER_JUMP`;
* applies the revocations in the published CRLs to the certificates it knows, and lists the
  serials it does not know (certificates issued after the backup): ``iotsec cert import``
  registers those from their certificate files so they can be revoked again;
* records a ``backup.restore`` event with all of this in the restored store.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Final

from cryptography import x509
from sqlalchemy import Connection, select, update

from iotsec.app.backup import NOT_BACKED_UP
from iotsec.app.events import Event, append_events
from iotsec.app.runtime import utcnow
from iotsec.app.store_location import display_url, remember_database
from iotsec.config import Settings
from iotsec.custody.file_keys import FileKeyStore
from iotsec.custody.home import read_passphrase
from iotsec.errors import (
    BackupFormatError,
    BackupIntegrityError,
    InvalidInputError,
    IotsecError,
    NotFoundError,
    RestoreTargetError,
)
from iotsec.filesystem import private_output
from iotsec.pki.ca import Authority
from iotsec.pki.crl import RevocationReason, encode_entry
from iotsec.pki.serial import format_serial
from iotsec.store import backup_format as fmt
from iotsec.store import models as m
from iotsec.store.db import make_engine, transaction
from iotsec.store.migrate import HEAD, upgrade_in
from iotsec.store.snapshot import (
    TABLES,
    check_row,
    clear_seeded_rows,
    insert_rows,
    non_empty_target,
    reset_sequences,
    table_digest,
    table_named,
)
from iotsec.timeutil import from_ts, ts

__all__ = ["CRL_NUMBER_JUMP", "CrlReconciliation", "GivenCrl", "RestoreResult",
           "parse_published_crl", "restore_backup"]

#: How far CRL numbers jump when nothing says what was published after the backup: more
#: CRLs than a CA publishes in decades of hourly refreshes.
CRL_NUMBER_JUMP: Final = 1_000_000
MAX_CRL_NUMBER: Final = 2**62


@dataclass(frozen=True)
class GivenCrl:
    """A CRL the CA published (``--published-crl``), parsed but not yet verified."""

    name: str
    crl: x509.CertificateRevocationList
    number: int


@dataclass(frozen=True)
class CrlReconciliation:
    authority_id: int
    subject: str
    in_backup: int
    next_number: int
    basis: str


@dataclass(frozen=True)
class RestoreResult:
    home: Path
    database: str
    backup_created_at: datetime
    tables: dict[str, int]
    files: int
    crls: list[CrlReconciliation]
    revocations_applied: list[str]
    unknown_revoked: list[str]
    replaced: Path | None
    keystore: str
    ca_passphrase_included: bool


def parse_published_crl(name: str, data: bytes) -> GivenCrl:
    """A published CRL (DER or PEM) with its CRL number, or :class:`InvalidInputError`."""
    try:
        crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
               else x509.load_der_x509_crl(data))
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        raise InvalidInputError(f"the CRL {name} has no CRL number") from None
    except ValueError:
        raise InvalidInputError(f"{name} is not a CRL (DER or PEM)") from None
    if not 0 <= number < MAX_CRL_NUMBER:
        raise InvalidInputError(f"the CRL number of {name} is out of range")
    return GivenCrl(name=name, crl=crl, number=number)


class _Loader:
    """Consumes a backup's records: rows into ``conn``, files into ``staging``; checks the
    order of the parts and every digest against the manifest."""

    def __init__(self, conn: Connection, staging: Path) -> None:
        self.conn = conn
        self.staging = staging
        self.info: fmt.BackupInfo | None = None
        self.tables: list[fmt.TableDigest] = []
        self.files: list[fmt.FileDigest] = []
        self._files = contextlib.ExitStack()

    def load(self, records: Iterator[tuple[bytes, bytes]]) -> fmt.Manifest:
        kind, body = next(records, (b"", b""))
        if kind != fmt.HEADER:
            raise BackupFormatError("the backup does not start with its header")
        info = self.info = fmt.parse_json(fmt.BackupInfo, kind, body)
        if info.schema_revision != HEAD:
            raise BackupFormatError(
                f"the backup was made by a store at revision {info.schema_revision}; this "
                f"iotsec restores revision {HEAD}",
                hint="restore it with the iotsec version that made it, then upgrade")
        upgrade_in(self.conn)
        clear_seeded_rows(self.conn)
        expected = iter(TABLES)
        table: Any = None
        digest = fmt.RowDigest()
        out: BinaryIO | None = None
        start: fmt.FileStart | None = None
        sha = hashlib.sha256()
        written = 0
        manifest: fmt.Manifest | None = None

        def end_part() -> None:
            nonlocal table, out, start
            if table is not None:
                self.tables.append(fmt.TableDigest(name=table.name, rows=digest.rows,
                                                   sha256=digest.hexdigest()))
                table = None
            if start is not None:
                if written != start.size:
                    raise BackupFormatError(f"the backup's file {start.path} is incomplete")
                self._files.close()
                os.chmod(self.staging / start.path, start.mode)
                self.files.append(fmt.FileDigest(path=start.path, size=written,
                                                 sha256=sha.hexdigest()))
                out, start = None, None

        for kind, body in records:
            if manifest is not None:
                raise BackupFormatError("records follow the backup's manifest")
            if kind == fmt.TABLE:
                end_part()
                begun = fmt.parse_json(fmt.TableStart, kind, body)
                wanted = next(expected, None)
                if wanted is None or wanted.name != begun.name:
                    raise BackupFormatError(f"the backup's table {begun.name!r} is out of order")
                table, digest = table_named(begun.name, begun.columns), fmt.RowDigest()
            elif kind == fmt.ROWS and table is not None:
                rows = [check_row(table, r) for r in fmt.decode_rows(body, len(table.columns))]
                for row in rows:
                    digest.add(fmt.encode_row(row))
                insert_rows(self.conn, table, rows)
            elif kind == fmt.FILE:
                end_part()
                if next(expected, None) is not None:
                    raise BackupFormatError("the backup's files come before all its tables")
                start = fmt.parse_json(fmt.FileStart, kind, body)
                path = fmt.safe_relative_path(start.path)
                if path.parts[0] in NOT_BACKED_UP or (self.staging / path).exists():
                    raise BackupFormatError(f"the backup names the file {start.path} twice "
                                            "or where it may not")
                out = self._files.enter_context(private_output(self.staging / path))
                sha, written = hashlib.sha256(), 0
            elif kind == fmt.DATA and out is not None and start is not None:
                written += len(body)
                if written > start.size:
                    raise BackupFormatError(f"the backup's file {start.path} is longer than "
                                            "it says")
                sha.update(body)
                out.write(body)
            elif kind == fmt.MANIFEST:
                end_part()
                manifest = fmt.parse_json(fmt.Manifest, kind, body)
            else:
                raise BackupFormatError(f"a {kind.decode()!r} record is out of place in the "
                                        "backup")
        if manifest is None:
            raise BackupFormatError("the backup has no manifest")
        if next(expected, None) is not None:
            raise BackupFormatError("the backup does not hold every table of the store")
        return manifest

    def close(self) -> None:
        self._files.close()


def _verify(loader: _Loader, manifest: fmt.Manifest) -> None:
    if loader.tables != manifest.tables:
        raise BackupIntegrityError("the backup's tables disagree with its manifest")
    if loader.files != manifest.files:
        raise BackupIntegrityError("the backup's files disagree with its manifest")
    # What the database now holds, read back: types and values survived the round trip.
    for table, expected in zip(TABLES, manifest.tables, strict=True):
        got = table_digest(loader.conn, table)
        if (got.rows, got.hexdigest()) != (expected.rows, expected.sha256):
            raise BackupIntegrityError(f"the restored table {table.name!r} differs from the "
                                       "backup")


def _check_keys(conn: Connection, staging: Path, settings: Settings) -> None:
    """The restored key files decrypt and belong to the restored CAs."""
    passphrase = read_passphrase(Settings(home=staging, ca_passphrase=settings.ca_passphrase))
    keys = FileKeyStore(staging / "keys", passphrase)
    # An offline root's key is not in the home, by design.
    for row in conn.execute(select(m.authorities.c.key_label, m.authorities.c.cert_der)
                            .where(m.authorities.c.key_offline.is_(False))):
        Authority.from_der(row.cert_der, keys.load(row.key_label))


def _apply_published(conn: Connection, given: Sequence[GivenCrl]
                     ) -> tuple[dict[int, int], list[str], list[str]]:
    """Verify each published CRL against the restored CAs; apply its revocations to the
    known certificates. Returns the highest number per CA, applied and unknown serials."""
    authorities = conn.execute(select(m.authorities.c.id, m.authorities.c.cert_der)).all()
    highest: dict[int, int] = {}
    applied: list[str] = []
    unknown: list[str] = []
    c = m.certificates.c
    for item in given:
        issuer = None
        for row in authorities:
            cert = x509.load_der_x509_certificate(row.cert_der)
            if cert.subject == item.crl.issuer and item.crl.is_signature_valid(
                    cert.public_key()):  # type: ignore[arg-type]
                issuer = row.id
                break
        if issuer is None:
            raise InvalidInputError(f"the CRL {item.name} was not signed by a CA of this backup",
                                    hint="give a CRL this home's CA published")
        highest[issuer] = max(highest.get(issuer, 0), item.number)
        for entry in item.crl:
            serial = format_serial(entry.serial_number)
            known = conn.execute(select(c.revoked_at).where(c.serial == serial,
                                                            c.authority_id == issuer)).first()
            if known is None:
                unknown.append(serial)
                continue
            when = entry.revocation_date_utc
            if known.revoked_at is not None and known.revoked_at <= ts(when):
                continue
            try:
                flag = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
                reason = RevocationReason.parse(flag.value)
            except (x509.ExtensionNotFound, InvalidInputError):
                reason = RevocationReason.unspecified
            conn.execute(update(m.certificates).where(c.serial == serial).values(
                revoked_at=ts(when), revocation_reason=int(reason),
                crl_entry=encode_entry(entry.serial_number, when, reason)))
            applied.append(serial)
    return highest, sorted(set(applied)), sorted(set(unknown))


def _reconcile_crls(conn: Connection, highest: dict[int, int], min_number: int | None
                    ) -> list[CrlReconciliation]:
    deltas = dict(conn.execute(select(m.delta_crls.c.authority_id, m.delta_crls.c.number)
                               .where(m.delta_crls.c.number.is_not(None))).all())
    rows = conn.execute(select(m.crls.c.authority_id, m.crls.c.number, m.authorities.c.subject)
                        .join(m.authorities, m.authorities.c.id == m.crls.c.authority_id)
                        .order_by(m.crls.c.authority_id)).all()
    done = []
    for row in rows:
        # Complete and delta CRLs share one number sequence.
        number = max(row.number, deltas.get(row.authority_id, 0))
        if row.authority_id in highest:
            floor, basis = max(number, highest[row.authority_id]), "published CRL"
        elif min_number is not None:
            floor, basis = max(number, min_number), "--min-crl-number"
        else:
            floor, basis = number + CRL_NUMBER_JUMP, f"jump of {CRL_NUMBER_JUMP}"
        # The cached CRL of the backup is dropped: serving it again would publish an old
        # number. The next request signs floor + 1.
        conn.execute(update(m.crls).where(m.crls.c.authority_id == row.authority_id)
                     .values(number=floor, stale=True, der=None))
        done.append(CrlReconciliation(authority_id=row.authority_id, subject=row.subject,
                                      in_backup=number, next_number=floor + 1, basis=basis))
    # The delta CRLs of the backup are dropped too; the next delta starts a new base.
    conn.execute(update(m.delta_crls).values(number=None, base=None, base_update=None,
                                             this_update=None, next_update=None, stale=True,
                                             der=None))
    # Partition CRLs are scopes of their own: their sequences jump (the published ones
    # given to the restore are the complete CRLs').
    conn.execute(update(m.partition_crls).values(
        number=m.partition_crls.c.number + CRL_NUMBER_JUMP, stale=True, der=None))
    return done


def _check_home(home: Path, force: bool) -> None:
    if home.exists() and (not home.is_dir() or any(home.iterdir())) and not force:
        raise RestoreTargetError(
            f"{home} is not empty", hint="restore into a new IOTSEC_HOME, or pass --force to "
            "keep the current home aside (renamed) and restore in its place")


def restore_backup(settings: Settings, source: Path, passphrase: bytes, *, force: bool = False,
                   min_crl_number: int | None = None, published: Sequence[GivenCrl] = (),
                   now: datetime | None = None) -> RestoreResult:
    """Restore ``source`` into the home of ``settings`` (and into the empty PostgreSQL
    database ``IOTSEC_DATABASE_URL`` names, if set; else SQLite inside the home)."""
    fmt.check_passphrase(passphrase)
    if min_crl_number is not None and not 0 <= min_crl_number < MAX_CRL_NUMBER:
        raise InvalidInputError("--min-crl-number is out of range")
    if not source.is_file():
        raise NotFoundError(f"the backup {source} does not exist", hint="check the path")
    moment = (now or utcnow()).replace(microsecond=0)
    home = settings.resolved_home
    _check_home(home, force)
    url = settings.database_url
    staging = home.with_name(f".{home.name}.restoring-{secrets.token_hex(4)}")
    staging.mkdir(mode=0o700, parents=True)
    engine = make_engine(url or f"sqlite:///{staging / 'iotsec.db'}")
    loader: _Loader | None = None
    try:
        with source.open("rb") as fh, transaction(engine) as conn:
            if url is not None and (why := non_empty_target(conn)) is not None:
                raise RestoreTargetError(f"the database {display_url(url)} is not empty: {why}",
                                         hint="restore into an empty database")
            reader = fmt.BackupReader(fh, passphrase)
            loader = _Loader(conn, staging)
            manifest = loader.load(reader.records())
            loader.close()
            _verify(loader, manifest)
            reset_sequences(conn)
            info = loader.info
            assert info is not None
            if info.keystore == "file":
                _check_keys(conn, staging, settings)
            highest, applied, unknown = _apply_published(conn, published)
            crls = _reconcile_crls(conn, highest, min_crl_number)
            append_events(conn, [Event(
                at=moment, kind="backup.restore", outcome="ok", subject=source.name,
                detail={"backup_created_at": info.created_at,
                        "crl_numbers": {str(c.authority_id): [c.in_backup, c.next_number]
                                        for c in crls},
                        "crl_basis": sorted({c.basis for c in crls}),
                        "revocations_applied": len(applied),
                        "unknown_revoked": unknown[:100]}).row()])
            if url is not None:
                remember_database(Settings(home=staging), url)
    except BaseException:
        if loader is not None:
            loader.close()
        engine.dispose()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    engine.dispose()
    # Committed: from here on the staged home is the only copy of the restored keys, so a
    # failure leaves it where it is and says so.
    replaced = _move_into_place(staging, home, moment)
    return RestoreResult(
        home=home, database=display_url(url) if url else f"SQLite ({home / 'iotsec.db'})",
        backup_created_at=from_ts(info.created_at),
        tables={t.name: t.rows for t in manifest.tables}, files=len(manifest.files),
        crls=crls, revocations_applied=applied, unknown_revoked=unknown, replaced=replaced,
        keystore=info.keystore, ca_passphrase_included=info.ca_passphrase_included)


def _move_into_place(staging: Path, home: Path, moment: datetime) -> Path | None:
    """Put the staged home at ``home``; an existing non-empty home is kept aside, and the
    path it was moved to is returned."""
    aside = None
    try:
        if home.is_dir() and not any(home.iterdir()):
            home.rmdir()
        elif home.exists():
            aside = home.with_name(f"{home.name}.replaced-{moment:%Y%m%dT%H%M%SZ}-"
                                   f"{secrets.token_hex(2)}")
            home.rename(aside)
        staging.rename(home)
    except OSError as exc:
        if aside is not None and not home.exists():
            aside.rename(home)
        raise IotsecError(f"the restored home is complete in {staging} but could not be moved "
                          f"to {home} ({type(exc).__name__})",
                          hint=f"move {staging} to {home} yourself") from None
    return aside
