"""The MCUboot slot trailer: what ``imgtool sign --pad`` writes at the end of a slot.

A padded slot ends with the swap trailer and the 16-byte boot magic, as bootutil reads
them; the trailer is not covered by the image's hash or signatures. Pure: sizes, bytes and
their parsing.
"""

from __future__ import annotations

from dataclasses import dataclass

from iotsec.errors import InvalidInputError
from iotsec.firmware.image import Endian

__all__ = [
    "ALIGNMENTS", "BOOT_MAGIC", "BOOT_MAGIC_SIZE", "BOOT_MAGIC_TAIL", "DEFAULT_MAX_SECTORS",
    "MAX_ALIGNMENTS", "TrailerInfo", "boot_magic", "parse_trailer", "trailer_size"
]

#: Boot magic for a maximum write alignment of 8 (bootutil's ``boot_img_magic``).
BOOT_MAGIC = bytes([0x77, 0xC2, 0x95, 0xF3, 0x60, 0xD2, 0xEF, 0x7F,
                    0x35, 0x52, 0x50, 0x0F, 0x2C, 0xB6, 0x79, 0x80])
#: For larger alignments the first two bytes carry the alignment, then this tail.
BOOT_MAGIC_TAIL = bytes([0x2D, 0xE1, 0x5D, 0x29, 0x41, 0x0B, 0x8D, 0x77,
                         0x67, 0x9C, 0x11, 0x0F, 0x1F, 0x8A])
BOOT_MAGIC_SIZE = 16
ALIGNMENTS = (1, 2, 4, 8, 16, 32)
MAX_ALIGNMENTS = (8, 16, 32)
DEFAULT_MAX_SECTORS = 128


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


def boot_magic(max_align: int, endian: Endian = "little") -> bytes:
    """The 16-byte boot magic that ends a padded slot (as imgtool writes it)."""
    if max_align == 8:
        return BOOT_MAGIC
    return max_align.to_bytes(2, endian) + BOOT_MAGIC_TAIL


def trailer_size(*, align: int, max_align: int, max_sectors: int = DEFAULT_MAX_SECTORS,
                 overwrite_only: bool = False) -> int:
    """Size of the swap trailer at the slot end (imgtool's ``_trailer_size``, unencrypted)."""
    if align not in ALIGNMENTS:
        raise InvalidInputError(f"invalid alignment {align}",
                                hint=f"use one of {', '.join(map(str, ALIGNMENTS))}")
    if max_align not in MAX_ALIGNMENTS or max_align < align:
        raise InvalidInputError(f"invalid maximum alignment {max_align}",
                                hint="use 8, 16 or 32, at least --align")
    magic = _align_up(BOOT_MAGIC_SIZE, max_align)
    if overwrite_only:
        return max_align * 2 + magic
    if not 1 <= max_sectors <= 0xFFFF:
        raise InvalidInputError(f"invalid sector count {max_sectors}")
    return max_sectors * 3 * align + max_align * 4 + magic


@dataclass(frozen=True)
class TrailerInfo:
    """What the end of a padded slot says (read by ``inspect``; not part of the signature)."""

    max_align: int
    image_ok: int | None
    copy_done: int | None
    swap_info: int | None


def parse_trailer(tail: bytes, endian: Endian = "little") -> TrailerInfo | None:
    """Read the boot magic and the flags before it from the last bytes of a slot.

    Returns ``None`` when ``tail`` does not end with a boot magic (an unpadded image)."""
    if len(tail) < BOOT_MAGIC_SIZE:
        return None
    magic = tail[-BOOT_MAGIC_SIZE:]
    if magic == BOOT_MAGIC:
        max_align = 8
    elif magic[2:] == BOOT_MAGIC_TAIL:
        max_align = int.from_bytes(magic[:2], endian)
        if max_align not in MAX_ALIGNMENTS:
            return None
    else:
        return None
    end = len(tail) - _align_up(BOOT_MAGIC_SIZE, max_align)

    def flag(index: int) -> int | None:
        pos = end - index * max_align
        return tail[pos] if pos >= 0 else None

    return TrailerInfo(max_align, image_ok=flag(1), copy_done=flag(2), swap_info=flag(3))
