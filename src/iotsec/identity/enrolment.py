"""Enrolment's pure model: provisioning templates, enrolment secrets, the device id a
template gives, and claim allow lists.

A template says what a device enrolling under it becomes (groups, roles, attributes, a
certificate profile, whether an operator approves it first) and where its device id comes
from. An enrolment secret is a bootstrap credential: an id the client sends as the HTTP
Basic user name, and a 256-bit secret stored only as its SHA-256 (a password hash would add
nothing to that much entropy).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from iotsec.errors import InvalidInputError
from iotsec.identity.registry import parse_attributes, parse_device_id, parse_group_name

__all__ = [
    "MAX_ALLOW_ENTRIES", "MAX_ALLOW_LIST", "MAX_TEMPLATE_GROUPS", "MAX_TEMPLATE_ROLES",
    "PROFILES", "IdFrom", "Template", "device_id_for", "new_enrolment_secret", "on_allow_list",
    "parse_allow_list", "parse_profile", "parse_secret", "parse_secret_id",
    "parse_template_name", "secret_digest"
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_SECRET_ID = re.compile(r"es_[a-z2-7]{16}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
_ALLOW_ENTRY = re.compile(r"[\x21-\x7e]{1,128}")
_HEX = re.compile(r"(?:0[xX])?[0-9A-Fa-f]{1,40}")

#: The built-in certificate profiles; a template may also name any named profile.
PROFILES = ("device", "server")
# The profile name rule of pki.profiles (which identity may not import).
_PROFILE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MAX_TEMPLATE_GROUPS = 32
MAX_TEMPLATE_ROLES = 32
#: An allow list file holds at most this many bytes and entries.
MAX_ALLOW_LIST = 4 * 1024 * 1024
MAX_ALLOW_ENTRIES = 100_000


def _show(text: object) -> str:
    value = str(text)
    return repr(value if len(value) <= 40 else value[:40] + "...")


def parse_template_name(text: str) -> str:
    """Return ``text`` if it is a valid template (or claim CA, or EST label) name:
    ``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``; else raise :class:`InvalidInputError`."""
    if not isinstance(text, str) or not _NAME.fullmatch(text):
        raise InvalidInputError(f"name {_show(text)} is not valid",
                                hint="a name is 1 to 64 characters from A-Z a-z 0-9 . _ -, "
                                "starting with a letter or digit")
    return text


def parse_profile(text: str) -> str:
    """The certificate profile a template names: a built-in (``device``, ``server``) or a
    named profile (whether it exists is the service's to check)."""
    if not isinstance(text, str) or not _PROFILE.fullmatch(text):
        raise InvalidInputError(f"certificate profile name {_show(text)} is not valid",
                                hint=f"give {' or '.join(PROFILES)}, or a profile from "
                                "'iotsec profile list'")
    return text


class IdFrom(enum.StrEnum):
    """Where a template takes a new device's id from."""

    CSR_CN = "csr-cn"
    SERIAL_NUMBER = "serial-number"
    SECRET = "secret"  # noqa: S105 (the name of an id source, not a password)

    @classmethod
    def parse(cls, text: str) -> IdFrom:
        try:
            return cls(text)
        except ValueError:
            raise InvalidInputError(f"unknown id source {_show(text)}",
                                    hint="choose one of: csr-cn, serial-number, secret"
                                    ) from None


def _role_name(text: str) -> str:
    # The same rule as access.policy.parse_role_name; identity may not import access.
    if not isinstance(text, str) or not _ROLE.fullmatch(text):
        raise InvalidInputError(f"role name {_show(text)} is not valid",
                                hint="a role name is 1 to 64 characters from A-Z a-z 0-9 . _ : -")
    return text


@dataclass(frozen=True, slots=True)
class Template:
    """A provisioning template. Built through :meth:`parse` (or the constructor, which
    checks the same rules), so a template in hand is valid."""

    name: str
    groups: tuple[str, ...] = ()
    #: Roles bound to a device created from the template; none means the default role.
    roles: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)
    id_from: IdFrom = IdFrom.CSR_CN
    require_approval: bool = False
    profile: str = "device"
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        parse_template_name(self.name)
        if len(self.groups) > MAX_TEMPLATE_GROUPS or len(self.roles) > MAX_TEMPLATE_ROLES:
            raise InvalidInputError(f"a template names at most {MAX_TEMPLATE_GROUPS} groups "
                                    f"and {MAX_TEMPLATE_ROLES} roles")
        for group in self.groups:
            parse_group_name(group)
        for role in self.roles:
            _role_name(role)
        parse_attributes(self.attributes)
        IdFrom.parse(self.id_from)
        parse_profile(self.profile)

    @classmethod
    def parse(cls, name: str, *, groups: Iterable[str] = (), roles: Iterable[str] = (),
              attributes: Iterable[str] | Mapping[str, str] = (),
              id_from: str = IdFrom.CSR_CN.value, require_approval: bool = False,
              profile: str = "device", created_at: datetime | None = None) -> Template:
        """A template from loose input (CLI options, an API body): duplicates dropped,
        names sorted, ``k=v`` attributes or a mapping."""
        group_list, role_list = list(groups), list(roles)
        if len(group_list) > MAX_TEMPLATE_GROUPS or len(role_list) > MAX_TEMPLATE_ROLES:
            raise InvalidInputError(f"a template names at most {MAX_TEMPLATE_GROUPS} groups "
                                    f"and {MAX_TEMPLATE_ROLES} roles")
        return cls(name=parse_template_name(name),
                   groups=tuple(sorted({parse_group_name(g) for g in group_list})),
                   roles=tuple(sorted({_role_name(r) for r in role_list})),
                   attributes=parse_attributes(attributes), id_from=IdFrom.parse(id_from),
                   require_approval=bool(require_approval), profile=parse_profile(profile),
                   created_at=created_at)


def new_enrolment_secret() -> tuple[str, str]:
    """A fresh ``(id, secret)``: the id is ``es_`` and 16 lower-case base32 characters
    (80 random bits, public), the secret 256 random bits, URL-safe base64 (43 characters)."""
    secret_id = "es_" + base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
    return secret_id, secrets.token_urlsafe(32)


def secret_digest(secret: str) -> str:
    """The SHA-256 (hex) under which a secret is stored."""
    return hashlib.sha256(parse_secret(secret).encode("ascii")).hexdigest()


def parse_secret_id(text: str) -> str:
    """Return ``text`` if it has the shape of an enrolment secret id, else raise."""
    if not isinstance(text, str) or len(text) != 19 or not _SECRET_ID.fullmatch(text):
        raise InvalidInputError(f"{_show(text)} is not an enrolment secret id",
                                hint="an id looks like es_ and 16 characters a-z 2-7; "
                                "see 'iotsec enrol secret list'")
    return text


def parse_secret(text: str) -> str:
    """Return ``text`` if it has the shape of an enrolment secret; the message never
    repeats it."""
    if not isinstance(text, str) or len(text) != 43 or not _SECRET.fullmatch(text):
        raise InvalidInputError("the enrolment secret is not well formed",
                                hint="give the 43-character secret printed when it was created")
    return text


def device_id_for(template: Template, *, csr_subject_cn: str | None,
                  csr_subject_serial: str | None, claim_subject_cn: str | None = None,
                  claim_subject_serial: str | None = None,
                  secret_id: str | None = None) -> str:
    """The device id ``template`` gives an enrolling device.

    ``csr-cn``: the CSR's subject CN. ``serial-number``: the claim certificate's subject
    serialNumber when the device enrols by claim (the manufacturer vouches for it), else
    the CSR's. ``secret``: the enrolment secret's id. The claim certificate's CN is never
    an id source (``claim_subject_cn`` is accepted so that callers pass what they have).
    A missing source is an :class:`InvalidInputError`; the id is checked as any device id.
    """
    del claim_subject_cn
    claimed = claim_subject_serial is not None
    sources: dict[IdFrom, tuple[str | None, str]] = {
        IdFrom.CSR_CN: (csr_subject_cn, "the CSR has no subject CN"),
        IdFrom.SERIAL_NUMBER: (
            claim_subject_serial if claimed else csr_subject_serial,
            "the CSR has no subject serialNumber"),
        IdFrom.SECRET: (secret_id, "the template takes the device id from an enrolment "
                                   "secret, and none was used"),
    }
    value, missing = sources[template.id_from]
    if not value:
        raise InvalidInputError(f"{missing}: template {template.name!r} takes the device id "
                                f"from {template.id_from.value}",
                                hint="put the device id where the template expects it")
    return parse_device_id(value)


def parse_allow_list(text: str) -> frozenset[str]:
    """A claim allow list: one certificate serial (hex) or hardware id per line; blank
    lines and ``#`` comments (whole lines, or after white space) are ignored. At most
    :data:`MAX_ALLOW_LIST` characters and :data:`MAX_ALLOW_ENTRIES` entries of printable
    ASCII without spaces, 128 characters each."""
    if not isinstance(text, str) or len(text) > MAX_ALLOW_LIST:
        raise InvalidInputError(f"an allow list holds at most {MAX_ALLOW_LIST} characters")
    entries: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        entry = re.split(r"\s#|^#", line, maxsplit=1)[0].strip()
        if not entry:
            continue
        if not _ALLOW_ENTRY.fullmatch(entry):
            raise InvalidInputError(f"line {number} of the allow list is not a serial or a "
                                    f"hardware id: {_show(entry)}",
                                    hint="one entry per line, up to 128 printable characters "
                                    "without spaces; '#' starts a comment")
        entries.add(entry)
        if len(entries) > MAX_ALLOW_ENTRIES:
            raise InvalidInputError(f"an allow list holds at most {MAX_ALLOW_ENTRIES} entries")
    return frozenset(entries)


def _hex_value(entry: str) -> int | None:
    bare = entry.replace(":", "")
    return int(bare.removeprefix("0x").removeprefix("0X"), 16) if _HEX.fullmatch(bare) else None


def on_allow_list(allow: frozenset[str], *, serial: int, hardware_id: str | None) -> bool:
    """Is a claim certificate on ``allow``: its serial written in hex (any case, with or
    without colons, leading zeros or ``0x``), or its hardware id (the subject serialNumber)
    written exactly?"""
    if hardware_id is not None and hardware_id in allow:
        return True
    return any(_hex_value(entry) == serial for entry in allow)
