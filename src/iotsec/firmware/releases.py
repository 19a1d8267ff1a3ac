"""Releases in TUF targets metadata: what a target of the update repository is (a product's
image at a version, or a channel pointer), its path and its custom data, and reading the
releases back from targets metadata."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tuf.api._payload import (
    TargetFile,
    Targets,
)

from iotsec.errors import (
    InvalidInputError,
    TufMetadataError,
)
from iotsec.firmware.image import ImageVersion

__all__ = [
    "MAX_CUSTOM", "MAX_POINTER", "Release", "channel_head", "channel_path", "check_target_path",
    "image_path", "parse_name", "pointer_target", "release_target", "releases"
]

#: A channel pointer file is a few hundred bytes.
MAX_POINTER = 4096


#: Custom metadata of one target, as JSON.
MAX_CUSTOM = 8192


_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


_TARGET_PATH = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}/(?:channels/)?[A-Za-z0-9][A-Za-z0-9._-]"
                          r"{0,127}")


def parse_name(text: str, what: str) -> str:
    """A product, channel or hardware name: lower-case letters, digits, '.', '_', '-'."""
    if not isinstance(text, str) or not _NAME.fullmatch(text):
        raise InvalidInputError(f"{what} {text[:70]!r} is not a valid name",
                                hint=f"a {what} is 1-64 characters a-z 0-9 . _ - starting "
                                "with a letter or digit")
    return text


def image_path(product: str, version: ImageVersion) -> str:
    """Where an image is published in the repository: ``PRODUCT/1.2.3-4.bin``."""
    return (f"{parse_name(product, 'product')}/{version.major}.{version.minor}."
            f"{version.revision}-{version.build}.bin")


def channel_path(product: str, channel: str) -> str:
    """The channel pointer target: ``PRODUCT/channels/CHANNEL.json``."""
    return f"{parse_name(product, 'product')}/channels/{parse_name(channel, 'channel')}.json"


def check_target_path(path: str) -> str:
    if not isinstance(path, str) or not _TARGET_PATH.fullmatch(path) or ".." in path:
        raise TufMetadataError(f"target path {str(path)[:80]!r} is not one iotsec publishes")
    return path


@dataclass(frozen=True)
class Release:
    """What the targets metadata says about one published image (its ``custom`` data).

    The channel pointer target carries the same data, so a device finds the image its
    channel serves from signed metadata alone."""

    product: str
    version: ImageVersion
    security_counter: int | None
    hardware: tuple[str, ...]
    channel: str
    #: The repository path of the image target.
    target: str
    #: The MCUboot image hash (the SHA-256 TLV), hex.
    image_hash: str
    #: Key id (first 8 bytes of the key hash, hex) of the key that signed the image.
    signed_by: str
    published_at: int

    def __post_init__(self) -> None:
        parse_name(self.product, "product")
        parse_name(self.channel, "channel")
        if not self.hardware or len(self.hardware) > 64:
            raise InvalidInputError("a release names 1 to 64 hardware revisions")
        for hw in self.hardware:
            parse_name(hw, "hardware")
        if self.security_counter is not None and not 0 <= self.security_counter <= 0xFFFFFFFF:
            raise InvalidInputError("security counter out of range")
        check_target_path(self.target)
        if not _HEX64.fullmatch(self.image_hash):
            raise InvalidInputError("the image hash is 64 lower-case hex digits")
        if not re.fullmatch(r"[0-9a-f]{16}", self.signed_by):
            raise InvalidInputError("the signing key id is 16 hex digits")

    def custom(self) -> dict[str, Any]:
        return {"iotsec": {
            "product": self.product, "version": str(self.version),
            "security_counter": self.security_counter, "hardware": list(self.hardware),
            "channel": self.channel, "target": self.target, "image_hash": self.image_hash,
            "signed_by": self.signed_by, "published_at": self.published_at}}

    @classmethod
    def from_custom(cls, custom: Any) -> Release:
        """Parse a target's ``custom`` field; :class:`TufMetadataError` if it is not one."""
        try:
            if len(json.dumps(custom)) > MAX_CUSTOM:
                raise TufMetadataError("a target's custom metadata is too large")
            data = custom["iotsec"]
            counter = data["security_counter"]
            hardware = data["hardware"]
            published = data["published_at"]
            if (not isinstance(hardware, list) or not all(isinstance(h, str) for h in hardware)
                    or not isinstance(published, int) or isinstance(published, bool)
                    or not (counter is None or (isinstance(counter, int)
                                                and not isinstance(counter, bool)))):
                raise TypeError
            return cls(product=str(data["product"]),
                       version=ImageVersion.parse(str(data["version"])),
                       security_counter=counter, hardware=tuple(hardware),
                       channel=str(data["channel"]), target=str(data["target"]),
                       image_hash=str(data["image_hash"]), signed_by=str(data["signed_by"]),
                       published_at=published)
        except (KeyError, TypeError, InvalidInputError) as exc:
            raise TufMetadataError("a target carries no valid iotsec release metadata") from exc

    def pointer_bytes(self) -> bytes:
        """The content of the channel pointer file (canonical JSON)."""
        return json.dumps(self.custom(), sort_keys=True, separators=(",", ":")).encode()


def releases(targets: Targets) -> list[tuple[TargetFile, Release]]:
    """Every image target (not pointers) with its release data, oldest version first."""
    found = []
    for path, target in targets.targets.items():
        if "/channels/" in path:
            continue
        found.append((target, Release.from_custom(target.custom)))
    found.sort(key=lambda pair: (pair[1].product, pair[1].version))
    return found


def channel_head(targets: Targets, product: str, channel: str) -> Release | None:
    """The release a channel serves now, from its pointer target."""
    pointer = targets.targets.get(channel_path(product, channel))
    return None if pointer is None else Release.from_custom(pointer.custom)


def release_target(release: Release, length: int, sha256: str) -> TargetFile:
    """The image target for ``release`` (length and hash of the whole image file)."""
    return TargetFile(length, {"sha256": sha256}, release.target,
                      unrecognized_fields={"custom": release.custom()})


def pointer_target(release: Release) -> tuple[TargetFile, bytes]:
    """The channel pointer target for ``release`` and the file content it describes."""
    data = release.pointer_bytes()
    target = TargetFile.from_data(channel_path(release.product, release.channel), data,
                                  ["sha256"])
    target.unrecognized_fields["custom"] = release.custom()
    return target, data
