"""Building a signed MCUboot image, byte for byte as ``imgtool sign`` lays it out.

The input is streamed: header, body and protected TLVs are written and hashed in one
pass, the digest is signed through an :class:`~iotsec.firmware.image_keys.ImageSigner`, then
the unprotected TLVs (hash, key hash, signature) and, with ``pad``, the slot padding and
trailer follow. Ed25519 signatures are deterministic, so for the same key and options the
output equals imgtool's exactly; ECDSA and RSA-PSS signatures are randomised.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Literal

from iotsec.errors import ImageLayoutError, ImageTruncatedError, InvalidInputError
from iotsec.firmware.image import (
    HEADER_STRUCT_SIZE,
    MAX_BODY_SIZE,
    MAX_HEADER_SIZE,
    Dependency,
    Endian,
    ImageFlag,
    ImageHeader,
    ImageVersion,
    TlvType,
    encode_tlv_area,
    pack_u32,
)
from iotsec.firmware.image_keys import ImageSigner, TrustedKey
from iotsec.firmware.reader import CHUNK, BoundedReader, Hasher, Readable, Writable
from iotsec.firmware.trailer import (
    ALIGNMENTS,
    DEFAULT_MAX_SECTORS,
    MAX_ALIGNMENTS,
    boot_magic,
    trailer_size,
)

__all__ = ["SignOptions", "SignedImage", "auto_security_counter", "sign_image", "sign_stream"]


def auto_security_counter(version: ImageVersion) -> int:
    """imgtool's ``--security-counter auto``: ``major << 24 | minor << 16 | revision``."""
    return (version.major << 24) + (version.minor << 16) + version.revision


@dataclass(frozen=True)
class SignOptions:
    """What ``imgtool sign`` calls the same names (defaults are imgtool's, except that
    iotsec always signs)."""

    version: ImageVersion
    header_size: int = HEADER_STRUCT_SIZE
    pad_header: bool = False
    security_counter: int | None = None
    dependencies: tuple[Dependency, ...] = ()
    load_addr: int = 0
    non_bootable: bool = False
    align: int = 1
    max_align: int | None = None
    max_sectors: int = DEFAULT_MAX_SECTORS
    overwrite_only: bool = False
    #: Slot size: with it, the image plus trailer must fit; with ``pad``, fill it.
    slot_size: int = 0
    pad: bool = False
    confirm: bool = False
    erased_val: int = 0xFF
    endian: Endian = "little"
    public_key_format: Literal["hash", "full"] = "hash"

    def __post_init__(self) -> None:
        if not HEADER_STRUCT_SIZE <= self.header_size <= MAX_HEADER_SIZE:
            raise InvalidInputError(f"header size {self.header_size} is outside "
                                    f"{HEADER_STRUCT_SIZE}..{MAX_HEADER_SIZE}")
        if self.security_counter is not None and not 0 <= self.security_counter <= 0xFFFFFFFF:
            raise InvalidInputError(f"security counter {self.security_counter} is out of range",
                                    hint="use 0..4294967295")
        if not 0 <= self.load_addr <= 0xFFFFFFFF:
            raise InvalidInputError(f"load address {self.load_addr:#x} is out of range")
        if self.align not in ALIGNMENTS:
            raise InvalidInputError(f"invalid --align {self.align}",
                                    hint=f"use one of {', '.join(map(str, ALIGNMENTS))}")
        if self.max_align is not None and (self.max_align not in MAX_ALIGNMENTS
                                           or self.max_align < self.align):
            raise InvalidInputError(f"invalid --max-align {self.max_align}",
                                    hint="use 8, 16 or 32, at least --align")
        if self.erased_val not in (0, 0xFF):
            raise InvalidInputError("the erased value is 0 or 0xff")
        if self.slot_size < 0 or self.slot_size > 0xFFFFFFFF:
            raise InvalidInputError(f"slot size {self.slot_size} is out of range")
        if (self.pad or self.confirm) and not self.slot_size:
            raise InvalidInputError("--pad and --confirm need --slot-size",
                                    hint="give the size of the slot the image is padded to")
        if len({d.image_id for d in self.dependencies}) != len(self.dependencies):
            raise InvalidInputError("an image id appears twice in the dependencies")
        if self.endian not in ("little", "big"):
            raise InvalidInputError(f"invalid byte order {self.endian!r}")
        trailer_size(align=self.align, max_align=self.effective_max_align,
                     max_sectors=self.max_sectors, overwrite_only=self.overwrite_only)

    @property
    def effective_max_align(self) -> int:
        return self.max_align if self.max_align is not None else max(8, self.align)

    @property
    def trailer_size(self) -> int:
        return trailer_size(align=self.align, max_align=self.effective_max_align,
                            max_sectors=self.max_sectors, overwrite_only=self.overwrite_only)


@dataclass(frozen=True)
class SignedImage:
    """What was written: the header, the digest that was signed, and sizes."""

    header: ImageHeader
    digest: bytes
    key: TrustedKey
    #: Bytes of the signed image (header, body, TLV areas).
    image_size: int
    #: Bytes written in all (``image_size`` plus slot padding and trailer with ``pad``).
    total_size: int


def _protected_tlvs(options: SignOptions) -> bytes:
    endian = options.endian
    tlvs: list[tuple[int, bytes]] = []
    if options.security_counter is not None:
        tlvs.append((TlvType.SEC_CNT, pack_u32(options.security_counter, endian)))
    tlvs.extend((TlvType.DEPENDENCY, d.encode(endian)) for d in options.dependencies)
    return encode_tlv_area(tlvs, protected=True, endian=endian) if tlvs else b""


def _flags(options: SignOptions) -> int:
    flags = 0
    if options.load_addr:
        # Like imgtool: a load address means the image is copied to RAM to run.
        flags |= ImageFlag.RAM_LOAD
    if options.non_bootable:
        flags |= ImageFlag.NON_BOOTABLE
    return flags


def sign_stream(src: Readable, size: int, dst: Writable, signer: ImageSigner,
                options: SignOptions) -> SignedImage:
    """Read ``size`` bytes of firmware from ``src``, write the signed image to ``dst``.

    Without ``pad_header`` the input must start with ``header_size`` zero bytes, which
    the header replaces (as imgtool requires); with it, the header is prepended."""
    if size < 0:
        raise InvalidInputError("negative input size")
    reader = BoundedReader(src)
    hdr = options.header_size
    if options.pad_header:
        img_size = size
        header_fill = bytes([options.erased_val]) * (hdr - HEADER_STRUCT_SIZE)
    else:
        if size < hdr:
            raise ImageLayoutError(f"the input is {size} bytes, shorter than the {hdr}-byte "
                                   "header it must start with",
                                   hint="add --pad-header to prepend the header")
        blank = _read(reader, hdr, "the header space")
        if any(blank):
            raise ImageLayoutError(
                f"the input does not start with {hdr} zero bytes for the header",
                hint="add --pad-header, or link the firmware with room for the header")
        img_size = size - hdr
        header_fill = blank[HEADER_STRUCT_SIZE:]
    if img_size > MAX_BODY_SIZE:
        raise ImageLayoutError(f"the firmware is {img_size} bytes; an MCUboot image body "
                               f"is at most {MAX_BODY_SIZE}")
    protected = _protected_tlvs(options)
    header = ImageHeader(load_addr=options.load_addr, hdr_size=hdr,
                         protect_tlv_size=len(protected), img_size=img_size,
                         flags=_flags(options), version=options.version,
                         endian=options.endian)
    hasher = hashlib.sha256()
    for part in (header.pack(), header_fill):
        hasher.update(part)
        dst.write(part)
    _copy(reader, img_size, hasher, dst)
    hasher.update(protected)
    dst.write(protected)
    digest = hasher.digest()

    key = TrustedKey.of(signer.public_key())
    signature = signer.sign_digest(digest)
    key_tlv = ((TlvType.KEYHASH, key.key_hash) if options.public_key_format == "hash"
               else (TlvType.PUBKEY, key.key_bytes))
    unprotected = encode_tlv_area([(TlvType.SHA256, digest), key_tlv,
                                   (signer.key_type.signature_tlv, signature)],
                                  protected=False, endian=options.endian)
    dst.write(unprotected)
    image_size = header.hashed_size + len(unprotected)
    total = image_size
    if options.slot_size:
        room = options.slot_size - options.trailer_size
        if image_size > room:
            raise ImageLayoutError(
                f"image size ({image_size:#x}) + trailer ({options.trailer_size:#x}) exceeds "
                f"the slot size {options.slot_size:#x}")
        if options.pad:
            total = options.slot_size
            _write_padding(dst, options, options.slot_size - image_size)
    return SignedImage(header, digest, key, image_size, total)


def sign_image(firmware: bytes, signer: ImageSigner, options: SignOptions) -> bytes:
    """:func:`sign_stream` for firmware already in memory; returns the signed image."""
    out = io.BytesIO()
    sign_stream(io.BytesIO(firmware), len(firmware), out, signer, options)
    return out.getvalue()


def _read(reader: BoundedReader, n: int, what: str) -> bytes:
    try:
        return reader.read_exact(n, what)
    except ImageTruncatedError:
        raise ImageLayoutError("the input ended before its stated size",
                               hint="is the file being written while it is signed?") from None


def _copy(reader: BoundedReader, n: int, hasher: Hasher, dst: Writable) -> None:
    class _Tee:
        def update(self, data: memoryview) -> None:
            hasher.update(data)
            dst.write(data)

    try:
        reader.hash_through(n, _Tee(), "the firmware")
    except ImageTruncatedError:
        raise ImageLayoutError("the input ended before its stated size",
                               hint="is the file being written while it is signed?") from None


def _write_padding(dst: Writable, options: SignOptions, length: int) -> None:
    """Erased bytes up to the trailer, the trailer, the boot magic last (imgtool's
    ``pad_to``); with ``confirm`` the image_ok flag is set."""
    fill = bytes([options.erased_val])
    trailer = bytearray(fill * options.trailer_size)
    magic = boot_magic(options.effective_max_align, options.endian)
    trailer[-len(magic):] = magic
    if options.confirm and not options.overwrite_only:
        max_align = options.effective_max_align
        magic_align = (16 + max_align - 1) & ~(max_align - 1)
        trailer[-(magic_align + max_align)] = 0x01
    gap = length - len(trailer)
    block = fill * CHUNK
    while gap > 0:
        step = min(gap, CHUNK)
        dst.write(block[:step])
        gap -= step
    dst.write(bytes(trailer))
