"""The device registry's pure model: ids, groups, attributes and lifecycle states."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from iotsec.errors import DeviceStateError, InvalidDeviceIdError, InvalidInputError

__all__ = [
    "MAX_ATTRIBUTES", "MAX_ATTRIBUTE_VALUE", "Device", "DeviceState", "is_device_id",
    "parse_attributes", "parse_device_id", "parse_group_name"
]

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: A match (true) when a text is a valid device id, None otherwise: what
#: :func:`parse_device_id` accepts, without its error, for loops over many ids (an
#: import's); the function then says what is wrong with one that fails.
is_device_id = _ID.fullmatch
_ATTR_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_VALUE = 1024


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def parse_device_id(text: str) -> str:
    """Return ``text`` if it is a valid device id, else raise :class:`InvalidDeviceIdError`.

    Ids end up in certificate subjects, URIs (``urn:iotsec:device:<id>``) and MQTT topics,
    so ``/``, ``+``, ``#``, white space and anything non-ASCII are refused.
    """
    if not isinstance(text, str) or not text:
        raise InvalidDeviceIdError("the device id is empty")
    if len(text) > 128:
        raise InvalidDeviceIdError(
            f"device id {_show(text)} has {len(text)} characters; at most 128 are allowed")
    if not _ID.fullmatch(text):
        raise InvalidDeviceIdError(
            f"device id {_show(text)} contains characters that are not allowed")
    return text


def parse_group_name(text: str) -> str:
    if not isinstance(text, str) or not _ID.fullmatch(text):
        raise InvalidInputError(
            f"group name {_show(text)} is not valid",
            hint="a group name follows the device id rules: [A-Za-z0-9][A-Za-z0-9._:-]{0,127}",
        )
    return text


def parse_attributes(pairs: Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    """Turn ``k=v`` strings (CLI) or a mapping (API) into validated attributes."""
    items: list[tuple[str, str]] = []
    if isinstance(pairs, Mapping):
        items = [(str(k), v) for k, v in pairs.items()]
    else:
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise InvalidInputError(f"attribute {_show(pair)} is not of the form key=value",
                                        hint="write attributes as --attr key=value")
            items.append((key, value))
    result: dict[str, str] = {}
    for key, value in items:
        if not _ATTR_KEY.fullmatch(key):
            raise InvalidInputError(f"attribute name {_show(key)} is not valid",
                                    hint="attribute names are letters, digits, '_', '.', '-'")
        if not isinstance(value, str) or len(value) > MAX_ATTRIBUTE_VALUE:
            raise InvalidInputError(f"attribute {key!r} must be a string of at most "
                                    f"{MAX_ATTRIBUTE_VALUE} characters")
        result[key] = value
    if len(result) > MAX_ATTRIBUTES:
        raise InvalidInputError(f"a device has at most {MAX_ATTRIBUTES} attributes")
    return result


class DeviceState(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    DISABLED = "disabled"
    RETIRED = "retired"
    #: Enrolled through a template that requires approval: no certificate, denied by the
    #: decision engine and left out of broker ACLs until an operator approves it.
    AWAITING_APPROVAL = "awaiting-approval"
    #: Isolated during an incident: the decision engine and the broker give it only the
    #: quarantine role's rules (its remediation topic); it gets no new certificate.
    #: Released, it returns to the state it had (active or pending).
    QUARANTINED = "quarantined"

    @property
    def may_hold_certificates(self) -> bool:
        return self in (DeviceState.PENDING, DeviceState.ACTIVE)

    def check_transition(self, target: DeviceState, device_id: str) -> None:
        """Allowed moves: pending->active (first certificate), active<->disabled,
        pending->disabled, awaiting-approval->pending (approved) or ->disabled,
        active|pending->quarantined, quarantined->disabled, and anything->retired.
        Retired is final. A release (not a transition) returns a quarantined device to its
        previous state."""
        allowed = {
            DeviceState.AWAITING_APPROVAL: {DeviceState.PENDING, DeviceState.DISABLED,
                                            DeviceState.RETIRED},
            DeviceState.PENDING: {DeviceState.ACTIVE, DeviceState.DISABLED, DeviceState.RETIRED,
                                  DeviceState.QUARANTINED},
            DeviceState.ACTIVE: {DeviceState.DISABLED, DeviceState.RETIRED,
                                 DeviceState.QUARANTINED},
            DeviceState.DISABLED: {DeviceState.ACTIVE, DeviceState.RETIRED},
            # Out of quarantine only by a release (which restores the previous state and
            # closes the incident), or for good by disabling or retiring it.
            DeviceState.QUARANTINED: {DeviceState.DISABLED, DeviceState.RETIRED},
            DeviceState.RETIRED: set(),
        }
        if target not in allowed[self]:
            raise DeviceStateError(
                f"device {device_id!r} is {self.value} and cannot become {target.value}",
                hint="a retired device is final; register a new id instead"
                if self is DeviceState.RETIRED
                else "release it with 'iotsec incident release'"
                if self is DeviceState.QUARANTINED
                else "check the device's state with 'iotsec device show'",
            )


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    state: DeviceState
    groups: tuple[str, ...]
    attributes: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: The roles bound to the device itself, sorted (its groups' roles are the policy's).
    roles: tuple[str, ...] = ()
