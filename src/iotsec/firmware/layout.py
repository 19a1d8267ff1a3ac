"""Walking an image's structure: header, body, both TLV areas, and (for display) the trailer.

:func:`read_header` and :func:`read_tlv_areas` are the two halves the verifier uses with a
hasher in between; :func:`inspect_image` uses them to describe an image without judging
it (unknown TLVs, encrypted images and unsigned images are shown, not refused).
"""

from __future__ import annotations

from dataclasses import dataclass

from iotsec.errors import ImageTooLargeError, ImageTruncatedError, TlvAreaError
from iotsec.firmware.image import (
    HEADER_STRUCT_SIZE,
    TLV_INFO_MAGIC,
    TLV_INFO_SIZE,
    TLV_PROT_INFO_MAGIC,
    ImageHeader,
    Tlv,
    parse_tlv_area,
    parse_tlv_info,
)
from iotsec.firmware.reader import BoundedReader, Hasher, Readable
from iotsec.firmware.trailer import TrailerInfo, parse_trailer

__all__ = [
    "TRAILER_WINDOW", "ImageInfo", "ImageSource", "TlvAreas", "inspect_image", "read_header",
    "read_tlv_areas"
]

ImageSource = bytes | bytearray | memoryview | Readable
#: How much of the slot end ``inspect`` reads to find the trailer (32-byte alignment,
#: four flags and the magic fit well inside).
TRAILER_WINDOW = 256


@dataclass(frozen=True)
class TlvAreas:
    protected: tuple[Tlv, ...]
    unprotected: tuple[Tlv, ...]
    #: Offset just past the unprotected TLV area: where the signed image ends.
    end: int


def read_header(reader: BoundedReader, *,
                max_image_size: int | None) -> tuple[ImageHeader, bytes]:
    """Read and parse the 32-byte header (returned with its raw bytes, which the hash
    covers as they are); refuse sizes that cannot fit before reading on."""
    raw = reader.read_exact(HEADER_STRUCT_SIZE, "the image header")
    header = ImageHeader.parse(raw)
    least = header.hashed_size + TLV_INFO_SIZE
    if max_image_size is not None and least > max_image_size:
        raise ImageTooLargeError(f"the header declares at least {least} bytes; the limit is "
                                 f"{max_image_size}")
    available = reader.in_memory_size
    if available is not None and least > available:
        raise ImageTruncatedError(f"the image is truncated: the header declares at least "
                                  f"{least} bytes, the input has {available}")
    return header, raw


def read_tlv_areas(reader: BoundedReader, header: ImageHeader, raw_header: bytes,
                   hasher: Hasher | None, *, max_image_size: int | None) -> TlvAreas:
    """Read the rest of the header and the body (hashing them from the raw header on, or
    skipping them when ``hasher`` is ``None``), then the protected and unprotected TLV
    areas."""
    if hasher is not None:
        hasher.update(raw_header)
        reader.hash_through(header.hdr_size - HEADER_STRUCT_SIZE, hasher, "the header padding")
        reader.hash_through(header.img_size, hasher, "the image body")
    else:
        reader.skip(header.hdr_size - HEADER_STRUCT_SIZE + header.img_size, "the image body")
    endian = header.endian
    protected: tuple[Tlv, ...] = ()
    if header.protect_tlv_size:
        raw = reader.read_exact(header.protect_tlv_size, "the protected TLV area")
        if hasher is not None:
            hasher.update(raw)
        protected = parse_tlv_area(raw, protected=True, endian=endian,
                                   offset=header.tlv_offset)
    offset = reader.position
    info = reader.read_exact(TLV_INFO_SIZE, "the TLV info header")
    magic, total = parse_tlv_info(info, endian)
    if magic == TLV_PROT_INFO_MAGIC and not header.protect_tlv_size:
        raise TlvAreaError("the image has a protected TLV area but its header declares none")
    if magic != TLV_INFO_MAGIC:
        raise TlvAreaError(f"bad TLV info magic {magic:#06x} at offset {offset:#x} (expected "
                           f"{TLV_INFO_MAGIC:#06x})")
    if total < TLV_INFO_SIZE:
        raise TlvAreaError(f"the unprotected TLV area declares {total} bytes, less than its "
                           "own info header")
    if max_image_size is not None and offset + total > max_image_size:
        raise ImageTooLargeError(f"the image declares {offset + total} bytes; the limit is "
                                 f"{max_image_size}")
    rest = reader.read_exact(total - TLV_INFO_SIZE, "the unprotected TLV area")
    unprotected = parse_tlv_area(info + rest, protected=False, endian=endian, offset=offset)
    return TlvAreas(protected, unprotected, reader.position)


@dataclass(frozen=True)
class ImageInfo:
    """An image's structure as found, not verified (what ``iotsec firmware inspect`` shows)."""

    header: ImageHeader
    protected: tuple[Tlv, ...]
    unprotected: tuple[Tlv, ...]
    #: Where the signed image ends (just past the unprotected TLV area).
    tlv_end: int
    #: Bytes after ``tlv_end`` (slot padding and trailer), when the input's length is known.
    padding: int | None
    trailer: TrailerInfo | None


def inspect_image(source: ImageSource) -> ImageInfo:
    """Parse header and TLV areas (skipping the body) and look for a slot trailer.

    Structural errors raise the same :class:`~iotsec.errors.FirmwareError` subclasses as
    verification; nothing here says whether the image may be trusted."""
    reader = BoundedReader(source)
    header, raw = read_header(reader, max_image_size=None)
    areas = read_tlv_areas(reader, header, raw, None, max_image_size=None)
    tail = reader.remaining_tail(TRAILER_WINDOW)
    padding = None if tail is None else tail[1]
    trailer = None if tail is None else parse_trailer(tail[0], header.endian)
    return ImageInfo(header, areas.protected, areas.unprotected, areas.end, padding, trailer)
