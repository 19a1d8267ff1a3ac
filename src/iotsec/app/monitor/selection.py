"""Which devices an incident response acts on: device ids, a group, or a query.

A query is one or more ``field=value`` terms, all of which a device must match:
``group=NAME``, ``state=active|pending|...``, ``attr.NAME=VALUE`` and ``id=TEXT`` (a
trailing ``*`` matches every id that starts with ``TEXT``). An empty selection, and a
query that restricts nothing (``id=*``), are refused: acting on "every device" must be
asked for by name, never reached by leaving something out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select

from iotsec.app.runtime import Runtime
from iotsec.errors import InvalidInputError
from iotsec.identity.registry import DeviceState, parse_device_id, parse_group_name
from iotsec.store import models as m
from iotsec.store.db import reading

__all__ = ["MAX_SELECTED", "MAX_TERMS", "Selected", "Selector", "select_devices"]

#: At most this many devices in one selection (a larger incident is split by group).
MAX_SELECTED = 10_000
MAX_TERMS = 16
_FIELDS = "group, state, id, attr.NAME"


@dataclass(frozen=True, slots=True)
class Selector:
    devices: tuple[str, ...] = ()
    group: str | None = None
    query: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, devices: tuple[str, ...] | list[str] = (), group: str | None = None,
              query: tuple[str, ...] | list[str] = ()) -> Selector:
        """Validate a selection; refused when it is empty or restricts nothing."""
        ids = tuple(dict.fromkeys(parse_device_id(d) for d in devices))
        if len(ids) > MAX_SELECTED:
            raise InvalidInputError(f"at most {MAX_SELECTED} device ids at once")
        if len(query) > MAX_TERMS:
            raise InvalidInputError(f"a query has at most {MAX_TERMS} terms")
        terms = tuple(_term(t) for t in query)
        if not ids and group is None and not terms:
            raise InvalidInputError(
                "no devices selected", hint="name devices, or give --group G or --query "
                f"field=value ({_FIELDS}); an empty selection never means every device")
        if ids and (group is not None or terms):
            raise InvalidInputError("give device ids, or a group and a query, not both",
                                    hint="a selection is either a list of ids or a filter")
        if terms and all(f == "id" and v == "*" for f, v in terms) and group is None:
            raise InvalidInputError("the query 'id=*' restricts nothing",
                                    hint="name a group, a state, an attribute or an id prefix")
        return cls(ids, parse_group_name(group) if group is not None else None, terms)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.devices:
            out["devices"] = list(self.devices[:100])
            out["device_count"] = len(self.devices)
        if self.group is not None:
            out["group"] = self.group
        if self.query:
            out["query"] = [f"{f}={v}" for f, v in self.query]
        return out


def _term(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key or not value:
        raise InvalidInputError(f"query term {text[:60]!r} is not field=value",
                                hint=f"fields: {_FIELDS}")
    if key == "group":
        return key, parse_group_name(value)
    if key == "state":
        try:
            return key, DeviceState(value).value
        except ValueError:
            raise InvalidInputError(f"unknown state {value[:30]!r}", hint="states: " + ", ".join(
                s.value for s in DeviceState)) from None
    if key == "id":
        parse_device_id(value[:-1] + "x" if value.endswith("*") else value)
        return key, value
    if key.startswith("attr.") and len(key) > 5 and len(key) <= 69 and len(value) <= 1024:
        return key, value
    raise InvalidInputError(f"unknown query field {key[:40]!r}", hint=f"fields: {_FIELDS}")


@dataclass(frozen=True, slots=True)
class Selected:
    id: str
    state: DeviceState


def _filtered(sel: Selector) -> Select[Any]:
    d = m.devices.c
    query = select(d.id, d.state, d.attributes).order_by(d.id)
    if sel.devices:
        query = query.where(d.id.in_(sel.devices))
    groups = [sel.group] if sel.group is not None else []
    groups += [v for f, v in sel.query if f == "group"]
    for g in groups:
        query = query.where(d.id.in_(select(m.device_groups.c.device_id)
                                     .where(m.device_groups.c.group_name == g)))
    for f, v in sel.query:
        if f == "state":
            query = query.where(d.state == v)
        elif f == "id" and v.endswith("*"):
            prefix = v[:-1]
            if prefix:
                query = query.where(d.id.startswith(prefix, autoescape=True))
        elif f == "id":
            query = query.where(d.id == v)
    return query


def select_devices(rt: Runtime, sel: Selector) -> tuple[list[Selected], list[str]]:
    """The registered devices the selector matches (by id), and the ids it named that are
    not registered. Refused when more than :data:`MAX_SELECTED` match."""
    attrs = [(f[5:], v) for f, v in sel.query if f.startswith("attr.")]
    found: list[Selected] = []
    with reading(rt.engine) as conn:
        for row in conn.execute(_filtered(sel)):
            if attrs:
                have = json.loads(row.attributes)
                if any(have.get(k) != v for k, v in attrs):
                    continue
            found.append(Selected(str(row.id), DeviceState(row.state)))
            if len(found) > MAX_SELECTED:
                raise InvalidInputError(
                    f"the selection matches more than {MAX_SELECTED} devices",
                    hint="narrow it (a group, a state or an attribute) and act in parts")
    known = {s.id for s in found}
    return found, [d for d in sel.devices if d not in known]
