"""The form of a home secret that iotsec generated itself (``iotsec init
--store-passphrase``), and how to tell it from a passphrase a person chose.

A generated secret is :data:`GENERATED_PREFIX` followed by 43 characters of URL-safe
base64: 256 bits from :func:`secrets.token_urlsafe`. Only a secret in exactly that form is
treated as one (ADR 0030): a key derived from it needs no memory-hard function, since
guessing 2**256 values is out of reach at any speed. Any other secret (``IOTSEC_CA_PASSPHRASE``,
or a passphrase file written by hand, or made by iotsec before the prefix existed) is taken
as possibly chosen by a person, and keys derived from it keep a memory-hard function.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["GENERATED_PREFIX", "is_generated_secret", "new_generated_secret"]

GENERATED_PREFIX: Final = b"iotsec-secret-v1:"
_RANDOM_BYTES: Final = 32
_GENERATED: Final = re.compile(re.escape(GENERATED_PREFIX) + rb"[A-Za-z0-9_-]{43}")


def new_generated_secret() -> bytes:
    """A new home secret: the prefix and 256 random bits (URL-safe base64, 43 characters)."""
    import secrets  # deferred: made once per home, while reading one is on every command's path

    return GENERATED_PREFIX + secrets.token_urlsafe(_RANDOM_BYTES).encode("ascii")


def is_generated_secret(secret: bytes) -> bool:
    """Whether ``secret`` has the exact form :func:`new_generated_secret` gives."""
    return _GENERATED.fullmatch(secret) is not None
