"""The quarantine role: what a quarantined device may still do (reach its remediation
topic), and nothing else.

A role named :data:`QUARANTINE_ROLE` in the store replaces the built-in one, so operators
can widen or narrow the remediation channel as policy; without it, a quarantined device may
publish, subscribe and receive on ``<prefix>/${device.id}/#`` only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from iotsec.access.policy import Role, Rule
from iotsec.errors import InvalidInputError

__all__ = [
    "DEFAULT_TOPIC_PREFIX", "QUARANTINE_ROLE", "default_quarantine_role", "parse_topic_prefix",
    "quarantine_role_of"
]

QUARANTINE_ROLE = "quarantine"
#: The remediation topic prefix when ``IOTSEC_QUARANTINE_TOPIC`` is not set (the default of
#: ``Settings.quarantine_topic``; a test keeps them equal).
DEFAULT_TOPIC_PREFIX = "quarantine"
_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}(/[A-Za-z0-9_.-]{1,64}){0,3}")


def parse_topic_prefix(text: str) -> str:
    """A remediation topic prefix: one to four plain topic levels (no wildcards, no ``$``)."""
    if not isinstance(text, str) or not _PREFIX.fullmatch(text):
        raise InvalidInputError(f"quarantine topic prefix {text[:70]!r} is not valid",
                                hint="use one to four topic levels of letters, digits, "
                                "'_', '.', '-' (e.g. 'quarantine')")
    return text


def default_quarantine_role(prefix: str = DEFAULT_TOPIC_PREFIX) -> Role:
    """The built-in quarantine role: the device's own remediation topic only."""
    topic = f"{parse_topic_prefix(prefix)}/${{device.id}}/#"
    return Role.build(QUARANTINE_ROLE, [
        Rule.parse("allow", "publish", topic),
        Rule.parse("allow", "subscribe", topic),
        Rule.parse("allow", "receive", topic),
    ], description="a quarantined device's remediation topic only")


def quarantine_role_of(roles: Sequence[Role], prefix: str = "quarantine") -> Role:
    """The store's role named ``quarantine`` if there is one, else the built-in role."""
    for role in roles:
        if role.name == QUARANTINE_ROLE:
            return role
    return default_quarantine_role(prefix)
