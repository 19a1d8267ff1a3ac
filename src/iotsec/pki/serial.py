"""Certificate serial numbers: random, positive, at most 20 octets (RFC 5280 4.1.2.2)."""

from __future__ import annotations

import re
import secrets

from iotsec.errors import InvalidInputError

__all__ = ["SERIAL_BITS", "format_serial", "parse_serial", "random_serial"]

#: 159 random bits: well over the 64 bits of entropy the CA/B Forum asks for, and the
#: DER encoding (with its sign octet) never exceeds the 20 octets RFC 5280 allows.
SERIAL_BITS = 159
_HEX = re.compile(r"^[0-9A-Fa-f]{1,40}$")


def random_serial() -> int:
    while True:
        value = secrets.randbits(SERIAL_BITS)
        # Keep at least 64 bits of entropy visible in the value (no tiny serials).
        if value >> 64:
            return value


def format_serial(value: int) -> str:
    """Upper-case hex with an even number of digits, as ``openssl x509 -serial`` prints."""
    text = f"{value:X}"
    return text if len(text) % 2 == 0 else "0" + text


def parse_serial(text: str) -> int:
    """Accept what operators paste: ``0x`` prefixes, colons, spaces, either case."""
    cleaned = text.strip().replace(":", "").replace(" ", "")
    if cleaned[:2].lower() == "0x":
        cleaned = cleaned[2:]
    if not _HEX.fullmatch(cleaned):
        raise InvalidInputError(
            f"{text[:64]!r} is not a certificate serial number",
            hint="give the serial in hex, as 'openssl x509 -noout -serial' prints it",
        )
    value = int(cleaned, 16)
    if value <= 0:
        raise InvalidInputError("a certificate serial number is positive",
                                hint="check the serial you copied")
    return value
