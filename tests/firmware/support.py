"""Builders and probes shared by the firmware tests.

``forge`` assembles an image from raw parts (any TLVs, in any area) and signs it properly,
so a bad-input test can break exactly one rule while hash and signature stay valid.
``CountingStream`` records every byte a reader asks for.
"""

from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import typer

from iotsec.cli import firmware as firmware_cli
from iotsec.firmware.image import (
    HEADER_STRUCT_SIZE,
    IMAGE_MAGIC,
    TLV_INFO_MAGIC,
    TLV_PROT_INFO_MAGIC,
    Endian,
    TlvType,
)
from iotsec.firmware.image_keys import ImageSigner, TrustedKey
from tests.services import unavailable

IMGTOOL = Path(sys.executable).with_name("imgtool")
PASSPHRASE = "correct horse battery staple"


def imgtool_path() -> Path:
    """The reference imgtool CLI from this virtualenv (required under CI)."""
    if not IMGTOOL.exists():
        unavailable(f"imgtool is not installed in this virtualenv (pip install imgtool; "
                    f"looked for {IMGTOOL})")
    return IMGTOOL


def run_imgtool(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(imgtool_path()), *map(str, args)], capture_output=True,
                          text=True, timeout=120, check=False)
    if check:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def tlv_area(tlvs: Sequence[tuple[int, bytes]], magic: int, *, endian: Endian = "little",
             total: int | None = None) -> bytes:
    e = "<" if endian == "little" else ">"
    body = b"".join(struct.pack(e + "HH", t, len(v)) + v for t, v in tlvs)
    return struct.pack(e + "HH", magic, total if total is not None else 4 + len(body)) + body


def header(*, hdr_size: int = 0x200, prot_size: int = 0, img_size: int, flags: int = 0,
           version: tuple[int, int, int, int] = (1, 2, 3, 4), load_addr: int = 0,
           endian: Endian = "little", magic: int = IMAGE_MAGIC) -> bytes:
    e = "<" if endian == "little" else ">"
    return struct.pack(e + "IIHHIIBBHII", magic, load_addr, hdr_size, prot_size, img_size,
                       flags, *version, 0)


def forge(signer: ImageSigner | None, body: bytes = b"\x5a" * 1000, *,
          protected: Sequence[tuple[int, bytes]] = ((TlvType.SEC_CNT, struct.pack("<I", 7)),),
          extra_unprotected: Sequence[tuple[int, bytes]] = (),
          hdr_size: int = 0x200, flags: int = 0, version: tuple[int, int, int, int] = (1, 2, 3, 4),
          key_tlv: tuple[int, bytes] | None = None, hash_tlv: bool = True,
          signature: bytes | None = None) -> bytes:
    """A signed image from parts: valid hash and signature over whatever is given."""
    prot = tlv_area(protected, TLV_PROT_INFO_MAGIC) if protected else b""
    head = header(hdr_size=hdr_size, prot_size=len(prot), img_size=len(body), flags=flags,
                  version=version)
    signed = head + b"\xff" * (hdr_size - HEADER_STRUCT_SIZE) + body + prot
    digest = hashlib.sha256(signed).digest()
    tlvs: list[tuple[int, bytes]] = []
    if hash_tlv:
        tlvs.append((TlvType.SHA256, digest))
    if signer is not None:
        key = TrustedKey.of(signer.public_key())
        tlvs.append(key_tlv or (TlvType.KEYHASH, key.key_hash))
        tlvs.append((signer.key_type.signature_tlv,
                     signature if signature is not None else signer.sign_digest(digest)))
    tlvs.extend(extra_unprotected)
    return signed + tlv_area(tlvs, TLV_INFO_MAGIC)


def declared_size(data: bytes) -> int:
    """What an image's own header and TLV info declare, computed independently of the
    parser under test: 32 bytes for a header that is not an image header, else header,
    body, protected area, and the unprotected area as its info header sizes it (never less
    than the 32-byte header itself)."""
    if len(data) < HEADER_STRUCT_SIZE:
        return HEADER_STRUCT_SIZE
    for e in ("<", ">"):
        magic, _, hdr, prot, img = struct.unpack_from(e + "IIHHI", data)
        if magic == IMAGE_MAGIC:
            break
    else:
        return HEADER_STRUCT_SIZE
    hashed = int(hdr) + int(img) + int(prot)
    info = data[hashed:hashed + 4]
    unprot: int = struct.unpack(e + "HH", info)[1] if len(info) == 4 else 4
    # The fixed 32-byte header is read whole before its sizes are judged, even when the
    # header size it declares is smaller.
    return max(HEADER_STRUCT_SIZE, hashed + max(4, unprot))


class CountingStream(io.RawIOBase):
    """A read-only stream over bytes that records what was asked of it: ``requested`` (the
    sum of all read sizes), ``furthest`` (the furthest offset any read reached for) and
    ``calls``."""

    def __init__(self, data: bytes, *, readinto: bool = True) -> None:
        self._data = data
        self._pos = 0
        self.requested = 0
        self.furthest = 0
        self.calls = 0
        self._allow_readinto = readinto

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        assert size is not None and size >= 0, "the reader must never read to the end"
        self.calls += 1
        self.requested += size
        self.furthest = max(self.furthest, self._pos + size)
        chunk = self._data[self._pos:self._pos + size]
        self._pos += len(chunk)
        return chunk

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if not self._allow_readinto:
            raise AssertionError("readinto called on a stream without it")
        chunk = self.read(len(buffer))
        memoryview(buffer).cast("B")[:len(chunk)] = chunk
        return len(chunk)


class PlainStream:
    """A minimal stream: only ``read`` (no readinto, no seek)."""

    def __init__(self, data: bytes, step: int | None = None) -> None:
        self._inner = CountingStream(data, readinto=False)
        self._step = step

    @property
    def requested(self) -> int:
        return self._inner.requested

    @property
    def furthest(self) -> int:
        return self._inner.furthest

    def read(self, size: int) -> bytes:
        # Short reads, as a pipe or socket gives them.
        return self._inner.read(min(size, self._step) if self._step else size)


def firmware_app() -> typer.Typer:
    """The firmware commands mounted as ``iotsec firmware`` on a root app (as main.py will)."""
    root = typer.Typer(name="iotsec", no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, rich_markup_mode=None)
    root.add_typer(firmware_cli.app, name="firmware")

    @root.callback()
    def _root() -> None:
        """iotsec."""

    return root
