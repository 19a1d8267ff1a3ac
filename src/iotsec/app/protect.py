"""Files encrypted at rest under the home's KEK (``iotsec data``).

Files are streamed: ``encrypt_file`` holds three blocks of 256 KiB in memory (three chunks,
when a chunk is larger) and ``decrypt_file`` two chunks, whatever the size. Output goes to a
private temporary file beside the target and is linked into place only when the whole
stream has been processed, so a refused decryption leaves no plaintext behind and an
existing file is never overwritten.

The end-to-end payloads (``iotsec payload``) are in :mod:`iotsec.app.payloads`: this module
imports none of their code, so the ``data`` commands start without it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from iotsec.app.custody.file_records import record_file_direct
from iotsec.app.direct_home import DirectHome
from iotsec.errors import ConflictError, InvalidInputError, IotsecError, NotFoundError
from iotsec.eventlog.event import Event
from iotsec.filesystem import PRIVATE_FILE_MODE, replacing, staged_file
from iotsec.protect import atrest
from iotsec.protect.kek import KekResolver, KeyWrapper

if TYPE_CHECKING:
    from iotsec.app.runtime import Runtime

__all__ = ["STDIO", "Rewrapped", "decrypt_file", "decrypt_file_direct", "encrypt_file",
           "encrypt_file_direct", "inspect_file", "rewrap_file"]

STDIO = "-"
_COPY_BUFFER = 1 << 20


# --- files at rest -------------------------------------------------------------------------


@contextlib.contextmanager
def _source(path: str) -> Iterator[BinaryIO]:
    if path == STDIO:
        yield sys.stdin.buffer
        return
    try:
        fh = Path(path).open("rb")  # noqa: SIM115 - closed below, after the stream is used
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist", hint="check the path") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a directory", hint="give a file") from None
    with fh:
        yield fh


@contextlib.contextmanager
def _atomic_output(path: str) -> Iterator[BinaryIO]:
    """A private temporary file that becomes ``path`` only if the block succeeds."""
    target = Path(path)
    if target.exists() or target.is_symlink():
        raise ConflictError(f"{path} already exists",
                            hint="iotsec never overwrites; remove it or choose another name")
    if not target.parent.is_dir():
        raise NotFoundError(f"the directory of {path} does not exist", hint="create it first")
    # Written behind: a large output is mostly on disk already when it is flushed.
    with staged_file(target, mode=PRIVATE_FILE_MODE, suffix="partial",
                     write_behind=True) as staged:
        yield staged.file
        # Published by a link, which never replaces an existing file: no race with another
        # writer.
        if not staged.publish(target):
            raise ConflictError(f"{path} already exists",
                                hint="iotsec never overwrites; choose another name")


def _record(rt: Runtime, kind: str, outcome: str, subject: str, detail: dict[str, object]) -> None:
    rt.events.record(Event(at=rt.now(), kind=kind, outcome=outcome, subject=subject,
                           detail=detail))


def _encrypt(source: str, target: str, active_kek: Callable[[], KeyWrapper],
             chunk_size: int) -> atrest.StreamInfo:
    if target == STDIO and sys.stdout.isatty():
        raise InvalidInputError("refusing to write ciphertext to a terminal",
                                hint="give OUT as a file name, or redirect standard output")
    # The first KEK is created only once the source opened and the target is free: a
    # refused encryption leaves the home as it was.
    with _source(source) as src:
        if target == STDIO:
            kek = active_kek()
            info = atrest.encrypt_stream(src, sys.stdout.buffer, kek, chunk_size=chunk_size)
            sys.stdout.buffer.flush()
        else:
            with _atomic_output(target) as dst:
                kek = active_kek()
                info = atrest.encrypt_stream(src, dst, kek, chunk_size=chunk_size)
    return info


def _encrypted(at: datetime, target: str, info: atrest.StreamInfo) -> Event:
    return Event(at=at, kind="data.encrypt", outcome="ok", subject=target,
                 detail={"kek": info.kek_id, "bytes": info.plaintext_bytes})


def encrypt_file(rt: Runtime, source: str, target: str, *,
                 chunk_size: int = atrest.DEFAULT_CHUNK_SIZE) -> atrest.StreamInfo:
    """Encrypt ``source`` (a path or ``-``) to ``target`` (a new path, or ``-``) under the
    home's active KEK (created on first use)."""
    # Deferred (start-up time): the store code of the runtime's path needs SQLAlchemy,
    # which encrypt_file_direct does without.
    from iotsec.app.custody.kek_files import record_file

    info = _encrypt(source, target, rt.custody.keks().active_or_create, chunk_size)
    # The file's record and its event: one unit of work.
    record_file(rt, info.header_sha256, info.kek_id, target, _encrypted(rt.now(), target, info))
    return info


def encrypt_file_direct(home: DirectHome, source: str, target: str, *,
                        chunk_size: int = atrest.DEFAULT_CHUNK_SIZE) -> atrest.StreamInfo:
    """:func:`encrypt_file` on a home opened without the settings model or SQLAlchemy
    (:func:`iotsec.app.direct_home.open_direct_home`): the same checks, file, record and
    event."""
    info = _encrypt(source, target, home.keks.active_or_create, chunk_size)
    record_file_direct(home, info.header_sha256, info.kek_id, target,
                       _encrypted(home.now(), target, info))
    return info


def _decrypt_target(target: str) -> None:
    if target == STDIO:
        raise InvalidInputError("decrypted output goes to a file, not to standard output",
                                hint="a stream is only known to be complete at its end; give "
                                "OUT as a file name")


def _decrypt(source: str, target: str, keks: KekResolver,
             record: Callable[[Event], None], now: Callable[[], datetime]
             ) -> atrest.StreamInfo:
    try:
        with _source(source) as src, _atomic_output(target) as dst:
            info = atrest.decrypt_stream(src, dst, keks)
    except IotsecError as exc:
        record(Event(at=now(), kind="data.decrypt", outcome="refused", subject=target,
                     detail={"error": exc.code}))
        raise
    record(Event(at=now(), kind="data.decrypt", outcome="ok", subject=target,
                 detail={"kek": info.kek_id, "bytes": info.plaintext_bytes}))
    return info


def decrypt_file(rt: Runtime, source: str, target: str) -> atrest.StreamInfo:
    """Decrypt ``source`` (a path or ``-``) to the new file ``target``; on any failure no
    output file exists afterwards."""
    from iotsec.app.custody.keys import RecordedKeks  # deferred, as in encrypt_file

    _decrypt_target(target)
    return _decrypt(source, target, RecordedKeks(rt), rt.events.record, rt.now)


def decrypt_file_direct(home: DirectHome, source: str, target: str) -> atrest.StreamInfo:
    """:func:`decrypt_file` on a home opened without the settings model or SQLAlchemy: the
    same checks, output and events (each unwrap's ``key.use``, then ``data.decrypt``)."""
    _decrypt_target(target)
    return _decrypt(source, target, home.recorded_keks(), home.record, home.now)


class Rewrapped(NamedTuple):
    path: str
    old_kek: str
    new_kek: str  # the same as old_kek when the file was already under the active KEK


def rewrap_file(rt: Runtime, path: str) -> Rewrapped:
    """Move one encrypted file to the active KEK: its data key is wrapped again (the chunks
    are copied unchanged), the result is decrypted in full before it atomically replaces
    the file, and the file is then recorded under the new KEK."""
    # Deferred, as in encrypt_file (shutil and hashlib too: encrypting a file needs neither).
    import hashlib
    import shutil

    from iotsec.app.custody.kek_files import move_file
    from iotsec.app.custody.keys import RecordedKeks

    target = Path(path)
    keks = RecordedKeks(rt)
    with _source(path) as src:
        header = atrest.StreamHeader.read(src)
        active = rt.custody.keks().active()
        if header.kek_id == active.key_id:
            return Rewrapped(path, header.kek_id, header.kek_id)
        new_header = atrest.rewrap_header(header, keks, active)
        try:
            with replacing(target) as dst:
                dst.write(new_header)
                shutil.copyfileobj(src, dst, _COPY_BUFFER)
                dst.flush()
                dst.seek(0)
                # Proof before the swap: the new file authenticates chunk by chunk (the
                # plaintext is checked, not kept).
                with open(os.devnull, "wb") as discard:
                    atrest.decrypt_stream(dst, discard, active)
        except IotsecError as exc:
            _record(rt, "data.rewrap", "refused", path, {"error": exc.code})
            raise
    move_file(rt, hashlib.sha256(header.encode()).hexdigest(),
              hashlib.sha256(new_header).hexdigest(), active.key_id, path)
    _record(rt, "data.rewrap", "ok", path, {"from": header.kek_id, "to": active.key_id})
    return Rewrapped(path, header.kek_id, active.key_id)


def inspect_file(source: str) -> atrest.StreamHeader:
    """The header of an encrypted file (nothing is authenticated: no key is used)."""
    with _source(source) as src:
        return atrest.StreamHeader.read(src)
