"""The MCUboot image format: header, version, TLV areas and dependencies.

A signed image, as MCUboot's bootutil reads it and ``imgtool sign`` writes it::

    header                hdr_size bytes: a 32-byte struct, then padding (erased or zero)
    body                  img_size bytes
    protected TLV area    protect_tlv_size bytes (info magic 0x6908), absent when 0
    unprotected TLV area  info magic 0x6907 and its own total length
    [padding, trailer]    only with --pad: erased bytes up to the slot end, boot magic last

The SHA-256 hash TLV, and so every signature, covers header, body and the protected TLV
area. Integers are little-endian unless the header magic reads big-endian (imgtool's
``--endian big``); the byte order is a property of the header and used for every field.

This module is pure: it packs and parses bytes. The slot trailer is
:mod:`iotsec.firmware.trailer`; reading, hashing and deciding live in
:mod:`iotsec.firmware.verify` and :mod:`iotsec.firmware.sign`.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from typing import Literal

from iotsec.errors import (
    ImageHeaderError,
    ImageLayoutError,
    ImageMagicError,
    InvalidInputError,
    TlvAreaError,
)

__all__ = [
    "COMPRESSED_FLAGS", "ENCRYPTED_FLAGS", "HEADER_STRUCT_SIZE", "IMAGE_MAGIC", "KNOWN_FLAGS",
    "MAX_BODY_SIZE", "MAX_HEADER_SIZE", "MAX_IMAGE_SIZE", "MAX_TLV_AREA", "TLV_HEADER_SIZE",
    "TLV_INFO_MAGIC", "TLV_INFO_SIZE", "TLV_PROT_INFO_MAGIC", "VENDOR_TLV_MAX", "VENDOR_TLV_MIN",
    "Dependency", "Endian", "ImageFlag", "ImageHeader", "ImageVersion", "Tlv", "TlvType",
    "encode_tlv_area", "pack_u32", "parse_tlv_area", "parse_tlv_info", "tlv_name", "unpack_u32"
]

Endian = Literal["little", "big"]

IMAGE_MAGIC = 0x96F3B83D
HEADER_STRUCT_SIZE = 32
TLV_INFO_MAGIC = 0x6907
TLV_PROT_INFO_MAGIC = 0x6908
TLV_INFO_SIZE = 4
TLV_HEADER_SIZE = 4
#: Both TLV areas state their total length in 16 bits.
MAX_TLV_AREA = 0xFFFF
MAX_HEADER_SIZE = 0xFFFF
MAX_BODY_SIZE = 0xFFFFFFFF
#: Largest image the format can describe: header, body, both TLV areas at their maxima.
MAX_IMAGE_SIZE = MAX_HEADER_SIZE + MAX_BODY_SIZE + 2 * MAX_TLV_AREA

_HEADER = {"little": struct.Struct("<IIHHIIBBHII"), "big": struct.Struct(">IIHHIIBBHII")}
_INFO = {"little": struct.Struct("<HH"), "big": struct.Struct(">HH")}
_DEPENDENCY = {"little": struct.Struct("<B3xBBHI"), "big": struct.Struct(">B3xBBHI")}
_U32 = {"little": struct.Struct("<I"), "big": struct.Struct(">I")}


class ImageFlag(enum.IntFlag):
    """Header flags (``IMAGE_F_*`` in bootutil/image.h)."""

    PIC = 0x1
    ENCRYPTED_AES128 = 0x4
    ENCRYPTED_AES256 = 0x8
    NON_BOOTABLE = 0x10
    RAM_LOAD = 0x20
    ROM_FIXED = 0x100
    COMPRESSED_LZMA1 = 0x200
    COMPRESSED_LZMA2 = 0x400
    COMPRESSED_ARM_THUMB = 0x800


KNOWN_FLAGS = 0
for _flag in ImageFlag:
    KNOWN_FLAGS |= _flag.value
ENCRYPTED_FLAGS = ImageFlag.ENCRYPTED_AES128 | ImageFlag.ENCRYPTED_AES256
COMPRESSED_FLAGS = (ImageFlag.COMPRESSED_LZMA1 | ImageFlag.COMPRESSED_LZMA2
                    | ImageFlag.COMPRESSED_ARM_THUMB)


class TlvType(enum.IntEnum):
    """TLV types (``IMAGE_TLV_*`` in bootutil/image.h, ``TLV_VALUES`` in imgtool)."""

    KEYHASH = 0x01
    PUBKEY = 0x02
    SHA256 = 0x10
    SHA384 = 0x11
    SHA512 = 0x12
    RSA2048_PSS = 0x20
    ECDSA224 = 0x21
    ECDSA_SIG = 0x22
    RSA3072_PSS = 0x23
    ED25519 = 0x24
    SIG_PURE = 0x25
    ENC_RSA2048 = 0x30
    ENC_KW = 0x31
    ENC_EC256 = 0x32
    ENC_X25519 = 0x33
    ENC_X25519_SHA512 = 0x34
    DEPENDENCY = 0x40
    SEC_CNT = 0x50
    BOOT_RECORD = 0x60
    DECOMP_SIZE = 0x70
    DECOMP_SHA = 0x71
    DECOMP_SIGNATURE = 0x72
    COMP_DEC_SIZE = 0x73
    UUID_VID = 0x74
    UUID_CID = 0x75


#: Types imgtool lets a user add with --custom-tlv (always in the protected area).
VENDOR_TLV_MIN = 0x00A0
VENDOR_TLV_MAX = 0xFFFE


def tlv_name(tlv_type: int) -> str:
    """The bootutil name of a TLV type, or ``VENDOR_0x..``/``UNKNOWN_0x..``."""
    try:
        return TlvType(tlv_type).name
    except ValueError:
        if VENDOR_TLV_MIN <= tlv_type <= VENDOR_TLV_MAX:
            return f"VENDOR_0x{tlv_type:04x}"
        return f"UNKNOWN_0x{tlv_type:04x}"


# --------------------------------------------------------------------------- version

_VERSION = re.compile(r"^(0|[1-9]\d*)(?:\.(0|[1-9]\d*)(?:\.(0|[1-9]\d*)(?:\+(0|[1-9]\d*))?)?)?$")


@dataclass(frozen=True, order=True)
class ImageVersion:
    """``major.minor.revision+build`` as the header stores it (u8, u8, u16, u32).

    Ordering compares all four parts, build number included: an image whose build number
    is lower than the minimum counts as a downgrade."""

    major: int
    minor: int = 0
    revision: int = 0
    build: int = 0

    def __post_init__(self) -> None:
        for name, value, limit in (("major", self.major, 0xFF), ("minor", self.minor, 0xFF),
                                   ("revision", self.revision, 0xFFFF),
                                   ("build", self.build, 0xFFFFFFFF)):
            if not 0 <= value <= limit:
                raise InvalidInputError(f"version {name} {value} is out of range",
                                        hint=f"{name} is between 0 and {limit}")

    @classmethod
    def parse(cls, text: str) -> ImageVersion:
        """Parse ``1``, ``1.2``, ``1.2.3`` or ``1.2.3+4`` (imgtool's grammar)."""
        match = _VERSION.fullmatch(text.strip()) if len(text) <= 64 else None
        if match is None:
            raise InvalidInputError(f"invalid image version {text[:64]!r}",
                                    hint="use major.minor.revision+build, e.g. 1.2.3+4")
        parts = [int(g) if g is not None else 0 for g in match.groups()]
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.revision}+{self.build}"


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class ImageHeader:
    """The 32-byte image header. :meth:`parse` refuses anything MCUboot would refuse."""

    load_addr: int
    hdr_size: int
    protect_tlv_size: int
    img_size: int
    flags: int
    version: ImageVersion
    endian: Endian = "little"

    def __post_init__(self) -> None:
        if not HEADER_STRUCT_SIZE <= self.hdr_size <= MAX_HEADER_SIZE:
            raise ImageHeaderError(f"header size {self.hdr_size} is outside "
                                   f"{HEADER_STRUCT_SIZE}..{MAX_HEADER_SIZE}")
        if self.protect_tlv_size != 0 and not (
                TLV_INFO_SIZE <= self.protect_tlv_size <= MAX_TLV_AREA):
            raise ImageHeaderError(f"protected TLV size {self.protect_tlv_size} is invalid")
        if not 0 <= self.img_size <= MAX_BODY_SIZE:
            raise ImageHeaderError(f"image size {self.img_size} is out of range")
        if not 0 <= self.load_addr <= 0xFFFFFFFF:
            raise ImageHeaderError(f"load address {self.load_addr:#x} is out of range")
        if self.flags & ~KNOWN_FLAGS:
            raise ImageHeaderError(f"unknown header flags {self.flags & ~KNOWN_FLAGS:#x}")

    @classmethod
    def parse(cls, raw: bytes) -> ImageHeader:
        """Parse the first 32 bytes of an image; the magic decides the byte order."""
        if len(raw) != HEADER_STRUCT_SIZE:
            raise ImageHeaderError(f"an image header is {HEADER_STRUCT_SIZE} bytes, "
                                   f"not {len(raw)}")
        endian: Endian
        if int.from_bytes(raw[:4], "little") == IMAGE_MAGIC:
            endian = "little"
        elif int.from_bytes(raw[:4], "big") == IMAGE_MAGIC:
            endian = "big"
        else:
            raise ImageMagicError(f"bad image magic 0x{raw[:4].hex()} (expected "
                                  f"{IMAGE_MAGIC:#010x})")
        (_, load_addr, hdr_size, prot, img_size, flags, major, minor, revision, build,
         _pad) = _HEADER[endian].unpack(raw)
        return cls(load_addr, hdr_size, prot, img_size, flags,
                   ImageVersion(major, minor, revision, build), endian)

    def pack(self) -> bytes:
        v = self.version
        return _HEADER[self.endian].pack(IMAGE_MAGIC, self.load_addr, self.hdr_size,
                                         self.protect_tlv_size, self.img_size, self.flags,
                                         v.major, v.minor, v.revision, v.build, 0)

    @property
    def tlv_offset(self) -> int:
        """Offset of the first TLV area (protected if any, else unprotected)."""
        return self.hdr_size + self.img_size

    @property
    def hashed_size(self) -> int:
        """Bytes covered by the hash: header, body and protected TLV area."""
        return self.hdr_size + self.img_size + self.protect_tlv_size


# --------------------------------------------------------------------------- TLVs


@dataclass(frozen=True)
class Tlv:
    """One TLV record; ``offset`` is where its 4-byte TLV header starts in the image."""

    type: int
    value: bytes
    offset: int

    @property
    def name(self) -> str:
        return tlv_name(self.type)


_TLV_BYTE_TYPE = {"little": struct.Struct("<BBH"), "big": struct.Struct(">BBH")}


def _pack_tlv_header(tlv_type: int, length: int, endian: Endian) -> bytes:
    # imgtool writes a standard type as one byte and a zero pad byte, a vendor type as a
    # 16-bit integer: the same bytes in little-endian images, different ones in big-endian.
    if tlv_type <= 0xFF:
        return _TLV_BYTE_TYPE[endian].pack(tlv_type, 0, length)
    return _INFO[endian].pack(tlv_type, length)


def _unpack_tlv_header(raw: bytes, pos: int, endian: Endian) -> tuple[int, int]:
    if endian == "big" and raw[pos + 1] == 0 and raw[pos] != 0:
        # imgtool's byte-and-pad form of a standard type (see _pack_tlv_header).
        length: int = _INFO[endian].unpack_from(raw, pos)[1]
        return raw[pos], length
    tlv_type, length = _INFO[endian].unpack_from(raw, pos)
    return tlv_type, length


def encode_tlv_area(tlvs: list[tuple[int, bytes]], *, protected: bool,
                    endian: Endian = "little") -> bytes:
    """A TLV area: its info header (magic, total length) and the records in order."""
    info, body = _INFO[endian], bytearray()
    for tlv_type, value in tlvs:
        if len(value) > MAX_TLV_AREA:
            raise ImageLayoutError(f"TLV {tlv_name(tlv_type)} is too long ({len(value)})")
        body += _pack_tlv_header(tlv_type, len(value), endian)
        body += value
    total = TLV_INFO_SIZE + len(body)
    if total > MAX_TLV_AREA:
        raise ImageLayoutError(f"the TLV area would be {total} bytes; the format allows "
                               f"{MAX_TLV_AREA}")
    magic = TLV_PROT_INFO_MAGIC if protected else TLV_INFO_MAGIC
    return info.pack(magic, total) + bytes(body)


def parse_tlv_info(raw: bytes, endian: Endian) -> tuple[int, int]:
    """``(magic, total length)`` of a 4-byte TLV info header."""
    magic, total = _INFO[endian].unpack(raw)
    return magic, total


def parse_tlv_area(raw: bytes, *, protected: bool, endian: Endian,
                   offset: int) -> tuple[Tlv, ...]:
    """Split a whole TLV area (info header included) into records.

    ``raw`` is exactly the area as its info header sized it. Each record's header and
    value must lie inside the area; a length that points past its end is refused before
    anything is sliced."""
    what = "protected" if protected else "unprotected"
    if len(raw) < TLV_INFO_SIZE:
        raise TlvAreaError(f"the {what} TLV area is shorter than its info header")
    magic, total = parse_tlv_info(raw[:TLV_INFO_SIZE], endian)
    expected = TLV_PROT_INFO_MAGIC if protected else TLV_INFO_MAGIC
    if magic != expected:
        raise TlvAreaError(f"bad {what} TLV info magic {magic:#06x} at offset {offset:#x} "
                           f"(expected {expected:#06x})")
    if total != len(raw):
        raise TlvAreaError(f"the {what} TLV area declares {total} bytes but {len(raw)} "
                           "belong to it")
    records: list[Tlv] = []
    pos = TLV_INFO_SIZE
    while pos < total:
        if pos + TLV_HEADER_SIZE > total:
            raise TlvAreaError(f"a TLV header at offset {offset + pos:#x} runs past the end "
                               f"of the {what} TLV area")
        tlv_type, length = _unpack_tlv_header(raw, pos, endian)
        start = pos + TLV_HEADER_SIZE
        if start + length > total:
            raise TlvAreaError(f"TLV {tlv_name(tlv_type)} at offset {offset + pos:#x} has "
                               f"length {length}, past the end of the {what} TLV area")
        records.append(Tlv(tlv_type, bytes(raw[start:start + length]), offset + pos))
        pos = start + length
    return tuple(records)


def pack_u32(value: int, endian: Endian) -> bytes:
    return _U32[endian].pack(value)


def unpack_u32(raw: bytes, endian: Endian) -> int:
    value: int = _U32[endian].unpack(raw)[0]
    return value


# --------------------------------------------------------------------------- dependencies

_DEPENDENCY_ITEM = re.compile(r"\(\s*(\d{1,3})\s*,\s*([0-9.+]{1,40})\s*\)")


@dataclass(frozen=True)
class Dependency:
    """A protected DEPENDENCY TLV: image ``image_id`` must run at least ``min_version``."""

    image_id: int
    min_version: ImageVersion

    def __post_init__(self) -> None:
        if not 0 <= self.image_id <= 0xFF:
            raise InvalidInputError(f"dependency image id {self.image_id} is out of range",
                                    hint="image ids are 0..255")

    def encode(self, endian: Endian = "little") -> bytes:
        v = self.min_version
        return _DEPENDENCY[endian].pack(self.image_id, v.major, v.minor, v.revision, v.build)

    @classmethod
    def decode(cls, raw: bytes, endian: Endian) -> Dependency:
        if len(raw) != _DEPENDENCY[endian].size:
            raise TlvAreaError(f"a DEPENDENCY TLV is {_DEPENDENCY[endian].size} bytes, "
                               f"not {len(raw)}")
        image_id, major, minor, revision, build = _DEPENDENCY[endian].unpack(raw)
        return cls(image_id, ImageVersion(major, minor, revision, build))

    @classmethod
    def parse_list(cls, text: str) -> tuple[Dependency, ...]:
        """Parse imgtool's ``--dependencies`` syntax: ``"(1, 1.2.3+0), (2, 0.1)"``."""
        if len(text) > 4096:
            raise InvalidInputError("the dependency list is too long")
        items = list(_DEPENDENCY_ITEM.finditer(text))
        rest = _DEPENDENCY_ITEM.sub("", text).replace(",", "").strip()
        if not items or rest:
            raise InvalidInputError(f"invalid dependency list {text[:80]!r}",
                                    hint='use "(IMAGE_ID,VERSION), ...", e.g. "(1,1.2.3+0)"')
        deps = tuple(cls(int(m.group(1)), ImageVersion.parse(m.group(2))) for m in items)
        if len({d.image_id for d in deps}) != len(deps):
            raise InvalidInputError("an image id appears twice in the dependency list")
        return deps

    def __str__(self) -> str:
        return f"({self.image_id}, {self.min_version})"
