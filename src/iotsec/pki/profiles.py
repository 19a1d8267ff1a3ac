"""Certificate profiles: what a certificate of a given purpose contains and how long it lives."""

from __future__ import annotations

import re
from dataclasses import dataclass

from iotsec.errors import InvalidInputError
from iotsec.pki.x509 import OID_CLIENT_AUTH, OID_SERVER_AUTH

__all__ = ["DEVICE", "MAX_VALIDITY_DAYS", "SERVER", "CertProfile", "check_days", "check_dns_name"]

MAX_VALIDITY_DAYS = 36_500
_DNS = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                  r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def check_dns_name(text: str) -> str:
    if not _DNS.fullmatch(text):
        raise InvalidInputError(f"{text[:80]!r} is not a valid DNS name",
                                hint="use letters, digits and '-' in dot-separated labels")
    return text.lower()


def check_days(days: int) -> int:
    if not 1 <= days <= MAX_VALIDITY_DAYS:
        raise InvalidInputError(f"validity of {days} days is out of range",
                                hint=f"give --days between 1 and {MAX_VALIDITY_DAYS}")
    return days


@dataclass(frozen=True, slots=True)
class CertProfile:
    """A certificate profile. ``dns_templates`` may use ``{device_id}``."""

    name: str
    validity_days: int
    extended_key_usage: tuple[str, ...]
    dns_templates: tuple[str, ...] = ()

    def dns_names(self, device_id: str) -> tuple[str, ...]:
        # Plain substitution, not str.format: a template cannot reach attributes.
        return tuple(check_dns_name(t.replace("{device_id}", device_id.lower()))
                     for t in self.dns_templates)


DEVICE = CertProfile(name="device", validity_days=365, extended_key_usage=(OID_CLIENT_AUTH,))
SERVER = CertProfile(name="server", validity_days=397, extended_key_usage=(OID_SERVER_AUTH,))
