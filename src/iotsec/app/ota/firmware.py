"""Firmware use cases: signing keys, signing, verifying and inspecting images.

The core (:mod:`iotsec.firmware`) takes bytes and streams; this layer opens the files,
writes results atomically (a half-written signed image never appears under its final
name) and keeps private keys either in the home's key custody (``--label``: the file key
store or the PKCS#11 token ``iotsec init`` configured; every signature a ``key.use``
event) or, for standalone and offline use, in encrypted key files (0600, scrypt PKCS#8,
never overwritten).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from iotsec.errors import (
    ConflictError,
    FirmwareKeyError,
    ImageReadError,
    InvalidInputError,
    NotFoundError,
)
from iotsec.filesystem import DEFAULT_DIR_MODE, atomic_stream, create_new, write_private_file
from iotsec.firmware.image import ImageVersion
from iotsec.firmware.image_keys import (
    MAX_KEY_FILE,
    FirmwareKeyType,
    ImageSigner,
    LocalImageSigner,
    TrustedKey,
    check_new_passphrase,
    generate_signer,
    load_private_key,
    public_pem,
)
from iotsec.firmware.layout import ImageInfo, inspect_image
from iotsec.firmware.sign import SignedImage, SignOptions, sign_stream
from iotsec.firmware.verify import VerifiedImage, verify_image

__all__ = [
    "PASSPHRASE_ENV", "custody_public_key", "custody_signer", "export_public_key",
    "generate_custody_key", "generate_key", "import_key", "inspect_path", "load_signer",
    "load_trusted_keys", "public_key_of", "sign_file", "verify_path"
]

if TYPE_CHECKING:
    from iotsec.app.runtime import Runtime

#: Environment variable holding the passphrase of firmware signing keys.
PASSPHRASE_ENV = "IOTSEC_FIRMWARE_KEY_PASSPHRASE"  # noqa: S105 - a variable name


def read_key_file(path: Path, what: str) -> bytes:
    """A key file (``what`` names it in errors), refused when it is larger than any key
    file can be, or missing, or a directory."""
    try:
        size = path.stat().st_size
        if size > MAX_KEY_FILE:
            raise FirmwareKeyError(f"{what} {path} is {size} bytes; a key file is at most "
                                   f"{MAX_KEY_FILE}")
        with path.open("rb") as fh:
            return fh.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise NotFoundError(f"{what} {path} does not exist", hint="check the path") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{what} {path} is a directory", hint="give a file") from None


def _refuse_existing(*paths: Path | None) -> None:
    for path in paths:
        if path is not None and path.exists():
            raise ConflictError(f"{path} already exists; nothing was written",
                                hint="keys are never overwritten; choose another path")


def _write_public(path: Path, key: TrustedKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    create_new(path, public_pem(key.public_key), mode=0o644)


def generate_key(path: Path, key_type: FirmwareKeyType, passphrase: bytes, *,
                 public_out: Path | None = None) -> TrustedKey:
    """Generate a signing key; write it as encrypted PKCS#8 (0600) and, if asked, its
    public key as PEM. Existing files are never overwritten."""
    check_new_passphrase(passphrase)
    _refuse_existing(path, public_out)
    signer = generate_signer(key_type)
    write_private_file(path, signer.encrypted_pem(passphrase))
    trusted = TrustedKey.of(signer.public_key())
    if public_out is not None:
        _write_public(public_out, trusted)
    return trusted


def import_key(source: Path, path: Path, passphrase: bytes, *,
               source_passphrase: bytes | None = None) -> TrustedKey:
    """Re-encrypt an existing PEM signing key (e.g. one made by ``imgtool keygen``)."""
    check_new_passphrase(passphrase)
    _refuse_existing(path)
    signer = load_private_key(read_key_file(source, "key file"), source_passphrase,
                              allow_unencrypted=True)
    write_private_file(path, signer.encrypted_pem(passphrase))
    return TrustedKey.of(signer.public_key())


def load_signer(path: Path, passphrase: Callable[[], bytes]) -> LocalImageSigner:
    """Load an encrypted signing key; ``passphrase`` is asked only for an encrypted key."""
    pem = read_key_file(path, "signing key")
    secret = passphrase() if b"ENCRYPTED" in pem else None
    return load_private_key(pem, secret)


def public_key_of(path: Path, passphrase: Callable[[], bytes]) -> TrustedKey:
    """The public key of a signing key file, or of a public key file."""
    data = read_key_file(path, "key file")
    if b"PRIVATE KEY-----" in data:
        secret = passphrase() if b"ENCRYPTED" in data else None
        return TrustedKey.of(load_private_key(data, secret, allow_unencrypted=True)
                             .public_key())
    return TrustedKey.from_bytes(data)


# --------------------------------------------------------------------------- custody


def generate_custody_key(rt: Runtime, label: str, key_type: FirmwareKeyType, *,
                         public_out: Path | None = None) -> TrustedKey:
    """Generate a firmware signing key in the home's key custody (inside the token with
    ``IOTSEC_KEYSTORE=pkcs11``: non-extractable); optionally write its public key."""
    # Deferred, like Runtime above: signing and verifying files ('iotsec firmware sign
    # --key FILE', 'verify') must not pay for loading the store and custody services.
    from iotsec.app.custody.keys import signing_store
    from iotsec.app.events import Event

    _refuse_existing(public_out)
    signer = signing_store(rt).generate_image_key(label, key_type)
    trusted = TrustedKey.of(signer.public_key())
    rt.events.record(Event(at=rt.now(), kind="key.generate", outcome="ok", subject=label,
                           detail={"type": key_type.value, "purpose": "firmware",
                                   "backend": rt.settings.keystore,
                                   "key_id": trusted.key_id}))
    if public_out is not None:
        _write_public(public_out, trusted)
    return trusted


def custody_signer(rt: Runtime, label: str) -> ImageSigner:
    """The firmware signing key ``label`` in custody; each signature is a ``key.use``
    event. A CA key or a key-encryption key under that label is refused."""
    from iotsec.app.custody.keys import signing_store  # deferred: see generate_custody_key

    return signing_store(rt).load_image_key(label)


def custody_public_key(rt: Runtime, label: str) -> TrustedKey:
    return TrustedKey.of(custody_signer(rt, label).public_key())


def export_public_key(key: TrustedKey, out: Path) -> None:
    _refuse_existing(out)
    _write_public(out, key)


def load_trusted_keys(paths: Iterable[Path]) -> list[TrustedKey]:
    return [TrustedKey.from_bytes(read_key_file(p, "public key")) for p in paths]


def sign_file(source: Path, target: Path, signer: ImageSigner,
              options: SignOptions) -> SignedImage:
    """Sign ``source`` into ``target`` (replaced atomically, like imgtool overwrites)."""
    try:
        src = source.open("rb", buffering=0)
    except FileNotFoundError:
        raise NotFoundError(f"firmware {source} does not exist", hint="check the path") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{source} is a directory", hint="give a file") from None
    with src:
        if target.exists() and os.path.samefile(source, target):
            raise InvalidInputError("the output would overwrite the input",
                                    hint="give another OUT path")
        if target.is_dir():
            raise InvalidInputError(f"{target} is a directory", hint="give a file name")
        size = os.fstat(src.fileno()).st_size
        with atomic_stream(target, mode=0o644, dir_mode=DEFAULT_DIR_MODE) as dst:
            result = sign_stream(src, size, dst, signer, options)
    return result


def verify_path(path: str, keys: list[TrustedKey], *, min_security_counter: int = 0,
                min_version: ImageVersion | None = None,
                max_image_size: int | None = None) -> VerifiedImage:
    """Verify the image at ``path`` (``-`` = standard input), streamed."""
    if path == "-":
        return verify_image(sys.stdin.buffer, keys, min_security_counter,
                            min_version=min_version, max_image_size=max_image_size)
    with _open_image(path) as fh:
        return verify_image(fh, keys, min_security_counter, min_version=min_version,
                            max_image_size=max_image_size)


def inspect_path(path: str) -> ImageInfo:
    """Describe the image at ``path`` (``-`` = standard input) without verifying it."""
    if path == "-":
        return inspect_image(sys.stdin.buffer)
    with _open_image(path) as fh:
        return inspect_image(fh)


@contextlib.contextmanager
def _open_image(path: str) -> Iterator[io.FileIO]:
    try:
        fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise NotFoundError(f"image {path} does not exist", hint="check the path") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a directory", hint="give an image file") from None
    except OSError as exc:
        raise ImageReadError(f"cannot open {path}: {exc.strerror}") from None
    with fh:
        yield fh
