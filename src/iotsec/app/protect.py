"""Data protection use cases: files encrypted at rest under the home's KEK, and the
debugging side of end-to-end payloads (keys from files, one message at a time).

Files are streamed: ``encrypt_file``/``decrypt_file`` hold two chunks in memory whatever
the size. Output goes to a private temporary file beside the target and is linked into
place only when the whole stream has been processed, so a refused decryption leaves no
plaintext behind and an existing file is never overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from iotsec.app.custody.kek_files import move_file, record_file
from iotsec.app.custody.keys import RecordedKeks
from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.errors import (
    ConflictError,
    InvalidInputError,
    IotsecError,
    NotFoundError,
    PayloadAlgorithmError,
    PayloadKeyError,
)
from iotsec.filesystem import PRIVATE_FILE_MODE, replacing, staged_file, write_private_file
from iotsec.protect import atrest, payload
from iotsec.protect.pairing import (
    Algorithm,
    PairContext,
    SigningKey,
    VerifyingKey,
    as_agreement_private,
    as_agreement_public,
    as_signing_private,
    as_verifying_public,
    establish,
    load_private_key,
    load_public_key,
)
from iotsec.protect.replay import ReplayWindow

__all__ = [
    "KEY_TYPES", "MAX_WINDOW_STATE", "STDIO", "KeyPair", "Rewrapped", "decrypt_file",
    "default_seq", "encrypt_file", "generate_keypair", "inspect_file", "load_window",
    "open_payload", "pair", "rewrap_file", "save_window", "seal_payload"
]

STDIO = "-"
#: A replay-window state file is a few hundred bytes; nothing legitimate is larger.
MAX_WINDOW_STATE = 64 * 1024
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
    with staged_file(target, mode=PRIVATE_FILE_MODE, suffix="partial") as staged:
        yield staged.file
        # Published by a link, which never replaces an existing file: no race with another
        # writer.
        if not staged.publish(target):
            raise ConflictError(f"{path} already exists",
                                hint="iotsec never overwrites; choose another name")


def _record(rt: Runtime, kind: str, outcome: str, subject: str, detail: dict[str, object]) -> None:
    rt.events.record(Event(at=rt.now(), kind=kind, outcome=outcome, subject=subject,
                           detail=detail))


def encrypt_file(rt: Runtime, source: str, target: str, *,
                 chunk_size: int = atrest.DEFAULT_CHUNK_SIZE) -> atrest.StreamInfo:
    """Encrypt ``source`` (a path or ``-``) to ``target`` (a new path, or ``-``) under the
    home's active KEK (created on first use)."""
    if target == STDIO and sys.stdout.isatty():
        raise InvalidInputError("refusing to write ciphertext to a terminal",
                                hint="give OUT as a file name, or redirect standard output")
    # The first KEK is created only once the source opened and the target is free: a
    # refused encryption leaves the home as it was.
    with _source(source) as src:
        if target == STDIO:
            kek = rt.custody.keks().active_or_create()
            info = atrest.encrypt_stream(src, sys.stdout.buffer, kek, chunk_size=chunk_size)
            sys.stdout.buffer.flush()
        else:
            with _atomic_output(target) as dst:
                kek = rt.custody.keks().active_or_create()
                info = atrest.encrypt_stream(src, dst, kek, chunk_size=chunk_size)
    record_file(rt, info.header_sha256, info.kek_id, target)
    _record(rt, "data.encrypt", "ok", target, {"kek": info.kek_id, "bytes": info.plaintext_bytes})
    return info


def decrypt_file(rt: Runtime, source: str, target: str) -> atrest.StreamInfo:
    """Decrypt ``source`` (a path or ``-``) to the new file ``target``; on any failure no
    output file exists afterwards."""
    if target == STDIO:
        raise InvalidInputError("decrypted output goes to a file, not to standard output",
                                hint="a stream is only known to be complete at its end; give "
                                "OUT as a file name")
    store = RecordedKeks(rt)
    try:
        with _source(source) as src, _atomic_output(target) as dst:
            info = atrest.decrypt_stream(src, dst, store)
    except IotsecError as exc:
        _record(rt, "data.decrypt", "refused", target, {"error": exc.code})
        raise
    _record(rt, "data.decrypt", "ok", target, {"kek": info.kek_id, "bytes": info.plaintext_bytes})
    return info


@dataclass(frozen=True, slots=True)
class Rewrapped:
    path: str
    old_kek: str
    new_kek: str  # the same as old_kek when the file was already under the active KEK


def rewrap_file(rt: Runtime, path: str) -> Rewrapped:
    """Move one encrypted file to the active KEK: its data key is wrapped again (the chunks
    are copied unchanged), the result is decrypted in full before it atomically replaces
    the file, and the file is then recorded under the new KEK."""
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


# --- payloads (debugging) ------------------------------------------------------------------


KEY_TYPES = ("x25519", "p256", "ed25519")


@dataclass(frozen=True, slots=True)
class KeyPair:
    private_pem: bytes
    public_pem: bytes


def generate_keypair(key_type: str) -> KeyPair:
    """A new static key pair as unencrypted PKCS#8 / SubjectPublicKeyInfo PEM."""
    kind = key_type.strip().lower()
    private: x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if kind == "x25519":
        private = x25519.X25519PrivateKey.generate()
    elif kind == "p256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise InvalidInputError(f"unknown key type {key_type!r}",
                                hint=f"choose one of: {', '.join(KEY_TYPES)}")
    return KeyPair(
        private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
        private.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo))


def pair(own_key: bytes, peer_public: bytes, *, own_id: str, peer_id: str, salt: bytes,
         alg: Algorithm) -> PairContext:
    """The pair keys of one side, from PEM/DER key files."""
    return establish(as_agreement_private(load_private_key(own_key)),
                     as_agreement_public(load_public_key(peer_public)),
                     own_id=own_id, peer_id=peer_id, salt=salt, alg=alg)


def default_seq() -> int:
    """A sequence number for a one-off message: the time in microseconds (it grows)."""
    return time.time_ns() // 1000


def seal_payload(data: bytes, *, sender_key: bytes, sender_id: str, alg: Algorithm, seq: int,
                 recipient_public: bytes | None = None, recipient_id: str | None = None,
                 salt: bytes | None = None, external_aad: bytes = b"") -> bytes:
    """Seal one message: COSE_Encrypt0 for A256GCM/ChaCha20-Poly1305 (needs the recipient's
    public key, id and the pairing salt), COSE_Sign1 for ES256/EdDSA."""
    if alg.is_aead:
        if recipient_public is None or recipient_id is None or salt is None:
            raise InvalidInputError(f"{alg.cose_name} encrypts: give the recipient's public "
                                    "key, its id and the pairing salt")
        context = pair(sender_key, recipient_public, own_id=sender_id, peer_id=recipient_id,
                       salt=salt, alg=alg)
        return payload.seal(data, context.send, seq=seq, external_aad=external_aad)
    signing = SigningKey(as_signing_private(load_private_key(sender_key)), sender_id=sender_id)
    if signing.alg is not alg:
        raise PayloadKeyError(f"the sender key signs with {signing.alg.cose_name}, not "
                              f"{alg.cose_name}")
    return payload.seal(data, signing, seq=seq, external_aad=external_aad)


def open_payload(message: bytes, *, sender_public: bytes, sender_id: str,
                 window: ReplayWindow, recipient_key: bytes | None = None,
                 recipient_id: str | None = None, salt: bytes | None = None,
                 external_aad: bytes = b"") -> payload.Opened:
    """Open one message from ``sender_id``. The algorithm comes from the message, but the key
    derived for it must carry the message's kid, so a changed algorithm is refused."""
    parsed = payload.parse(message)
    keyring = payload.Keyring()
    if parsed.kind == "encrypt0":
        if recipient_key is None or recipient_id is None or salt is None:
            raise InvalidInputError("the message is encrypted: give the recipient's private "
                                    "key, its id and the pairing salt")
        try:
            alg = Algorithm(parsed.alg)
        except ValueError:
            alg = Algorithm.ES256  # not an encryption algorithm: refused just below
        if not alg.is_aead:
            raise PayloadAlgorithmError(f"a COSE_Encrypt0 with algorithm "
                                        f"{parsed.algorithm_name} is not supported")
        keyring.add(pair(recipient_key, sender_public, own_id=recipient_id,
                         peer_id=sender_id, salt=salt, alg=alg).receive)
    else:
        keyring.add(VerifyingKey(as_verifying_public(load_public_key(sender_public)),
                                 sender_id=sender_id))
    return payload.open(message, keyring, window, external_aad=external_aad)


def load_window(path: Path | None) -> ReplayWindow:
    """A replay window from its state file (a fresh one if there is no file yet)."""
    if path is None or not path.exists():
        return ReplayWindow()
    if path.stat().st_size > MAX_WINDOW_STATE:
        raise InvalidInputError(f"{path} is larger than {MAX_WINDOW_STATE} bytes")
    try:
        state = json.loads(path.read_bytes())
    except ValueError:
        raise InvalidInputError(f"{path} is not a replay window state (JSON)") from None
    return ReplayWindow.from_state(state)


def save_window(path: Path, window: ReplayWindow) -> None:
    write_private_file(path, (json.dumps(window.state(), sort_keys=True) + "\n").encode("ascii"),
                       overwrite=True)
