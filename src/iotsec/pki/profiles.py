"""Certificate profiles: what a certificate of a given purpose contains and how long it lives.

Two profiles are built in and always present: ``device`` (clientAuth, 365 days, DNS names
from the deployment's templates) and ``server`` (serverAuth, 397 days). Named profiles add
to them: a validity, the key types a CSR may carry, the extended key usages, where the DNS
names come from (a template with ``{device_id}``, or ``attr:NAME``, the device attribute
NAME), and for short-lived certificates (at most :data:`NO_REVOCATION_MAX_DAYS` days)
whether relying parties are told not to check revocation (RFC 9608, ``noRevAvail``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from iotsec.errors import InvalidInputError, ProfileRefusedError
from iotsec.pki.x509 import OID_CLIENT_AUTH, OID_SERVER_AUTH

__all__ = [
    "BUILTIN_NAMES", "DEVICE", "EKU_NAMES", "KEY_TYPES", "MAX_DNS_SOURCES", "MAX_VALIDITY_DAYS",
    "NO_REVOCATION_MAX_DAYS", "SERVER", "CertProfile", "check_days", "check_dns_name",
    "eku_names", "key_type_of", "parse_dns_sources", "parse_ekus", "parse_key_types",
    "parse_profile_name", "split_list"
]

MAX_VALIDITY_DAYS = 36_500
#: RFC 9608 is meant for short-lived certificates: a profile that says "no revocation
#: information" lives at most this long.
NO_REVOCATION_MAX_DAYS = 7
#: A profile names at most this many DNS name sources.
MAX_DNS_SOURCES = 16
#: The key types a profile may allow: every key the CSR checks accept, by name.
KEY_TYPES = ("p256", "p384", "p521", "ed25519", "rsa2048", "rsa3072", "rsa4096")
#: Extended key usages a profile may name.
EKU_NAMES = {"clientAuth": OID_CLIENT_AUTH, "serverAuth": OID_SERVER_AUTH}
BUILTIN_NAMES = ("device", "server")

_DNS = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                  r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# The device attribute key rule (identity.registry, which pki may not import).
_ATTR_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_CURVES = {"secp256r1": "p256", "secp384r1": "p384", "secp521r1": "p521"}
_RSA = {2048: "rsa2048", 3072: "rsa3072", 4096: "rsa4096"}
_EKU_BY_OID = {oid: name for name, oid in EKU_NAMES.items()}


def _show(text: object) -> str:
    value = str(text)
    return repr(value if len(value) <= 40 else value[:40] + "...")


def check_dns_name(text: str) -> str:
    if not isinstance(text, str) or not _DNS.fullmatch(text):
        raise InvalidInputError(f"{_show(text)} is not a valid DNS name",
                                hint="use letters, digits and '-' in dot-separated labels")
    return text.lower()


def check_days(days: int) -> int:
    if not 1 <= days <= MAX_VALIDITY_DAYS:
        raise InvalidInputError(f"validity of {days} days is out of range",
                                hint=f"give --days between 1 and {MAX_VALIDITY_DAYS}")
    return days


def parse_profile_name(text: str) -> str:
    """A profile name: 1 to 64 characters from ``a-z 0-9 . _ -``, starting with a letter or
    digit (lower case, as certificates record it)."""
    if not isinstance(text, str) or not _NAME.fullmatch(text):
        raise InvalidInputError(f"profile name {_show(text)} is not valid",
                                hint="a profile name is 1 to 64 characters from a-z 0-9 . _ -, "
                                "starting with a letter or digit")
    return text


def split_list(values: str | Iterable[str]) -> list[str]:
    """``a,b`` or ``[a, b]`` or ``[a,b, c]``: the items, stripped, empty ones dropped."""
    items = [values] if isinstance(values, str) else list(values)
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def parse_key_types(values: str | Iterable[str]) -> tuple[str, ...]:
    """Key type names (``p256,ed25519``), each one of :data:`KEY_TYPES`; in that order."""
    names = split_list(values)
    if len(names) > 4 * len(KEY_TYPES):
        raise InvalidInputError("too many key types", hint="name each key type once")
    for name in names:
        if name.lower() not in KEY_TYPES:
            raise InvalidInputError(f"unknown key type {_show(name)}",
                                    hint=f"choose from: {', '.join(KEY_TYPES)}")
    wanted = {n.lower() for n in names}
    if not wanted:
        raise InvalidInputError("a profile allows at least one key type",
                                hint=f"give --key-types from: {', '.join(KEY_TYPES)}")
    return tuple(k for k in KEY_TYPES if k in wanted)


def parse_ekus(values: str | Iterable[str]) -> tuple[str, ...]:
    """Extended key usage names (``clientAuth,serverAuth``) as OIDs, clientAuth first."""
    names = split_list(values)
    by_lower = {k.lower(): k for k in EKU_NAMES}
    if len(names) > 4 * len(EKU_NAMES):
        raise InvalidInputError("too many extended key usages", hint="name each one once")
    wanted = set()
    for name in names:
        key = by_lower.get(name.lower())
        if key is None:
            raise InvalidInputError(f"unknown extended key usage {_show(name)}",
                                    hint=f"choose from: {', '.join(EKU_NAMES)}")
        wanted.add(key)
    if not wanted:
        raise InvalidInputError("a profile names at least one extended key usage",
                                hint=f"give --eku from: {', '.join(EKU_NAMES)}")
    return tuple(oid for name, oid in EKU_NAMES.items() if name in wanted)


def eku_names(oids: Iterable[str]) -> list[str]:
    """The names of extended key usage OIDs (an unknown OID is shown as itself)."""
    return [_EKU_BY_OID.get(oid, oid) for oid in oids]


def parse_dns_sources(values: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """DNS name sources: ``attr:NAME`` (the device attribute NAME) or a template whose
    ``{device_id}`` is replaced by the device id (``{device_id}.devices.example.com``).
    Returns ``(templates, attribute names)``, duplicates dropped, order kept."""
    items = list(values)
    if len(items) > MAX_DNS_SOURCES:
        raise InvalidInputError(f"a profile names at most {MAX_DNS_SOURCES} DNS name sources")
    templates: list[str] = []
    attributes: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidInputError(f"DNS name source {_show(item)} is not text")
        text = item.strip()
        if text.startswith("attr:"):
            key = text[5:]
            if not _ATTR_KEY.fullmatch(key):
                raise InvalidInputError(f"{_show(text)} does not name a device attribute",
                                        hint="write attr:NAME, NAME as in 'device add "
                                        "--attr NAME=VALUE'")
            if key not in attributes:
                attributes.append(key)
            continue
        # A template must give a DNS name for any device id; 'x' stands in for one.
        if text.count("{device_id}") > 1 or not _DNS.fullmatch(text.replace("{device_id}", "x")):
            raise InvalidInputError(f"DNS name source {_show(text)} is neither attr:NAME nor "
                                    "a DNS name template",
                                    hint="give attr:NAME, or a DNS name in which {device_id} "
                                    "stands for the device id, e.g. {device_id}.example.com")
        if text.lower() not in templates:
            templates.append(text.lower())
    return tuple(templates), tuple(attributes)


def key_type_of(public_key: CertificatePublicKeyTypes) -> str:
    """The name of a public key's type as profiles write it (``p256``, ``rsa3072``...);
    an RSA key of another size is ``rsa<bits>``, which no profile allows."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _CURVES.get(public_key.curve.name, public_key.curve.name)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(public_key, rsa.RSAPublicKey):
        return _RSA.get(public_key.key_size, f"rsa{public_key.key_size}")
    return type(public_key).__name__


@dataclass(frozen=True, slots=True)
class CertProfile:
    """A certificate profile. ``dns_templates`` may use ``{device_id}``; ``dns_attributes``
    name device attributes whose values become DNS names. No ``key_types`` means every key
    the CSR checks accept. The constructor checks the rules, so a profile in hand is valid."""

    name: str
    validity_days: int
    extended_key_usage: tuple[str, ...]
    dns_templates: tuple[str, ...] = ()
    dns_attributes: tuple[str, ...] = ()
    key_types: tuple[str, ...] = ()
    #: RFC 9608: the certificates carry noRevAvail and no CRL or OCSP pointers.
    no_revocation: bool = False
    #: Whether ``days`` given at issuance may exceed ``validity_days`` (the built-ins).
    builtin: bool = False

    def __post_init__(self) -> None:
        check_days(self.validity_days)
        if self.no_revocation and self.validity_days > NO_REVOCATION_MAX_DAYS:
            raise InvalidInputError(
                f"a profile without revocation lives at most {NO_REVOCATION_MAX_DAYS} days; "
                f"{self.validity_days} were asked",
                hint=f"give --days {NO_REVOCATION_MAX_DAYS} or less, or drop --no-revocation")
        if any(k not in KEY_TYPES for k in self.key_types):
            raise InvalidInputError("unknown key type in the profile",
                                    hint=f"choose from: {', '.join(KEY_TYPES)}")
        if not self.extended_key_usage:
            raise InvalidInputError("a profile names at least one extended key usage")

    @classmethod
    def parse(cls, name: str, *, days: int, key_types: str | Iterable[str],
              ekus: str | Iterable[str], dns_from: Iterable[str] = (),
              no_revocation: bool = False) -> CertProfile:
        """A named profile from loose input (CLI options, an API body). The built-in names
        are refused: those profiles always exist."""
        key = parse_profile_name(name)
        if key in BUILTIN_NAMES:
            raise InvalidInputError(f"{key!r} is a built-in profile and cannot be redefined",
                                    hint="choose another name")
        if isinstance(days, bool) or not isinstance(days, int):
            raise InvalidInputError("the validity must be a whole number of days")
        templates, attributes = parse_dns_sources(dns_from)
        return cls(name=key, validity_days=check_days(days), extended_key_usage=parse_ekus(ekus),
                   dns_templates=templates, dns_attributes=attributes,
                   key_types=parse_key_types(key_types), no_revocation=bool(no_revocation))

    @property
    def dns_from(self) -> tuple[str, ...]:
        """The DNS name sources as they are written: templates, then ``attr:NAME``."""
        return self.dns_templates + tuple(f"attr:{a}" for a in self.dns_attributes)

    def dns_names(self, device_id: str, attributes: Mapping[str, str] | None = None
                  ) -> tuple[str, ...]:
        """The DNS names of a certificate for ``device_id`` with ``attributes``; a missing
        attribute, or a value that is not a DNS name, refuses the issuance."""
        # Plain substitution, not str.format: a template cannot reach attributes.
        names = [check_dns_name(t.replace("{device_id}", device_id.lower()))
                 for t in self.dns_templates]
        for key in self.dns_attributes:
            value = (attributes or {}).get(key)
            if value is None:
                raise ProfileRefusedError(
                    f"profile {self.name!r} takes a DNS name from the attribute {key!r}, "
                    f"which device {device_id!r} does not have",
                    hint=f"give the device the attribute ('--attr {key}=NAME.example.com' "
                    "when it is registered), or select another profile")
            if not _DNS.fullmatch(value):
                raise ProfileRefusedError(
                    f"the attribute {key!r} of device {device_id!r} is not a DNS name: "
                    f"{_show(value)}", hint="use letters, digits and '-' in dot-separated labels")
            names.append(value.lower())
        return tuple(dict.fromkeys(names))

    def check_key(self, public_key: CertificatePublicKeyTypes) -> None:
        """Refuse a key whose type the profile does not allow."""
        if not self.key_types:
            return
        kind = key_type_of(public_key)
        if kind not in self.key_types:
            raise ProfileRefusedError(
                f"profile {self.name!r} allows {', '.join(self.key_types)} keys; the CSR's "
                f"key is {kind}",
                hint=f"generate a {self.key_types[0]} key, or use another profile")

    def check_validity(self, days: int | None) -> int:
        """The validity of a certificate: the profile's, or ``days`` when given; a named
        profile's validity is also its maximum."""
        if days is None:
            return self.validity_days
        check_days(days)
        if not self.builtin and days > self.validity_days:
            raise ProfileRefusedError(
                f"profile {self.name!r} issues certificates for at most {self.validity_days} "
                f"days; {days} were asked",
                hint=f"give --days {self.validity_days} or less, or use another profile")
        return days


DEVICE = CertProfile(name="device", validity_days=365, extended_key_usage=(OID_CLIENT_AUTH,),
                     builtin=True)
SERVER = CertProfile(name="server", validity_days=397, extended_key_usage=(OID_SERVER_AUTH,),
                     builtin=True)
