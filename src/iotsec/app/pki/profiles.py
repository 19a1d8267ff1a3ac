"""Certificate profiles: the named ones in the store beside the two built-ins, which
device or group is issued under which, and the profile each certificate of a batch gets.

Which profile a certificate gets, first rule that answers: the one the request names
(``cert issue --profile``), the device's own (``device set-profile``), its groups' (all
the groups of a device that name a profile must name the same one, else the issuance is
refused), the enrolment template's (EST), the built-in ``device``. A renewal keeps the
profile of the certificate it renews.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    Connection,
    String,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    select,
    union_all,
)

from iotsec.app.events import Event
from iotsec.app.pki.profile_reads import device_selection
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError, NotFoundError, ProfileRefusedError
from iotsec.identity.registry import parse_device_id, parse_group_name
from iotsec.pki.profiles import (
    BUILTIN_NAMES,
    DEVICE,
    SERVER,
    CertProfile,
    eku_names,
    parse_dns_sources,
    parse_ekus,
    parse_profile_name,
)
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.store.direct import Direct, Unit, core
from iotsec.timeutil import from_ts, ts

__all__ = [
    "ProfileUsage", "StoredProfile", "add_profile", "device_profile", "device_selection",
    "get_profile",
    "list_profiles", "load_profile", "profiles_for", "remove_profile", "require_profile",
    "set_device_profile", "set_group_profile"
]

_P = m.cert_profiles
_DP = m.device_profiles
_GP = m.group_profiles
_DG = m.device_groups
_LIST_HINT = "see 'iotsec profile list'"


@dataclass(frozen=True, slots=True)
class StoredProfile:
    """A profile as the store knows it: ``created_at`` is ``None`` for the built-ins."""

    profile: CertProfile
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class ProfileUsage:
    """What selects a profile: devices, groups and enrolment templates that name it."""

    devices: int
    groups: int
    templates: int


def device_profile(rt: Runtime) -> CertProfile:
    """The built-in device profile, with the DNS names the deployment configures
    (``IOTSEC_DEVICE_DNS_NAMES``, templates such as ``{device_id}.devices.example.com``)."""
    names = tuple(rt.settings.device_dns_names)
    return replace(DEVICE, dns_templates=names) if names else DEVICE


def _builtin(rt: Runtime, name: str) -> CertProfile | None:
    if name == SERVER.name:
        return SERVER
    if name == DEVICE.name:
        return device_profile(rt)
    return None


_COLUMNS = (_P.c.name, _P.c.validity_days, _P.c.key_types, _P.c.ekus, _P.c.dns_from,
            _P.c.no_revocation)


def _from_row(row: Any, prefix: str = "") -> CertProfile:
    def get(column: str) -> Any:
        return getattr(row, prefix + column)
    templates, attributes = parse_dns_sources(json.loads(get("dns_from")))
    return CertProfile(name=get("name"), validity_days=get("validity_days"),
                       extended_key_usage=parse_ekus(json.loads(get("ekus"))),
                       dns_templates=templates, dns_attributes=attributes,
                       key_types=tuple(json.loads(get("key_types"))),
                       no_revocation=bool(get("no_revocation")))


def _missing(name: str) -> NotFoundError:
    return NotFoundError(f"no certificate profile {name[:64]!r}", hint=_LIST_HINT)


def load_profile(conn: Unit, rt: Runtime, name: str) -> CertProfile:
    """The profile ``name`` (built-in or named) in the caller's unit of work (its read on
    the driver: a renewal's unit of work may be one on the driver)."""
    key = parse_profile_name(name)
    builtin = _builtin(rt, key)
    if builtin is not None:
        return builtin
    row = _ONE_NAMED.first(conn, {"name": key})
    if row is None:
        raise _missing(key)
    return _from_row(row, "p_")


def require_profile(conn: Connection, name: str) -> str:
    """``name`` if such a profile exists (built-in or named), else :class:`NotFoundError`."""
    key = parse_profile_name(name)
    if key not in BUILTIN_NAMES and conn.execute(
            select(_P.c.name).where(_P.c.name == key)).first() is None:
        raise _missing(key)
    return key


def add_profile(rt: Runtime, profile: CertProfile) -> StoredProfile:
    """Store a new named profile (built from :meth:`CertProfile.parse`)."""
    moment = rt.now().replace(microsecond=0)
    with transaction(rt.engine) as conn:
        if profile.name in BUILTIN_NAMES or conn.execute(
                select(_P.c.name).where(_P.c.name == profile.name)).first() is not None:
            raise ConflictError(f"certificate profile {profile.name!r} already exists",
                                hint="choose another name, or remove the profile first")
        conn.execute(insert(_P).values(
            name=profile.name, validity_days=profile.validity_days,
            key_types=json.dumps(list(profile.key_types)),
            ekus=json.dumps(eku_names(profile.extended_key_usage)),
            dns_from=json.dumps(list(profile.dns_from)), no_revocation=profile.no_revocation,
            created_at=ts(moment)))
    rt.events.record(Event(moment, "profile.added", "success", subject=profile.name,
                           detail={"validity_days": profile.validity_days,
                                   "key_types": list(profile.key_types),
                                   "ekus": eku_names(profile.extended_key_usage),
                                   "dns_from": list(profile.dns_from),
                                   "no_revocation": profile.no_revocation}))
    return StoredProfile(profile, moment)


def list_profiles(rt: Runtime) -> list[StoredProfile]:
    """The built-ins, then the named profiles by name."""
    with reading(rt.engine) as conn:
        rows = conn.execute(select(*_COLUMNS, _P.c.created_at).order_by(_P.c.name)).all()
    return ([StoredProfile(device_profile(rt), None), StoredProfile(SERVER, None)]
            + [StoredProfile(_from_row(r), from_ts(r.created_at)) for r in rows])


def _usage(conn: Connection, name: str) -> ProfileUsage:
    def count(table: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(table)
                                .where(table.c.profile == name)).scalar_one())
    return ProfileUsage(devices=count(_DP), groups=count(_GP),
                        templates=count(m.provisioning_templates))


def get_profile(rt: Runtime, name: str) -> tuple[StoredProfile, ProfileUsage]:
    """One profile and what selects it, or :class:`NotFoundError`."""
    key = parse_profile_name(name)
    with reading(rt.engine) as conn:
        builtin = _builtin(rt, key)
        if builtin is not None:
            return StoredProfile(builtin, None), _usage(conn, key)
        row = conn.execute(select(*_COLUMNS, _P.c.created_at).where(_P.c.name == key)).first()
        if row is None:
            raise _missing(key)
        return StoredProfile(_from_row(row), from_ts(row.created_at)), _usage(conn, key)


def remove_profile(rt: Runtime, name: str) -> None:
    """Remove a named profile no device, group or template selects. Certificates issued
    under it stay valid; renewing one is refused until a profile of that name exists."""
    key = parse_profile_name(name)
    if key in BUILTIN_NAMES:
        raise ConflictError(f"{key!r} is a built-in profile and cannot be removed",
                            hint="built-in profiles always exist")
    moment = rt.now().replace(microsecond=0)
    with transaction(rt.engine) as conn:
        if conn.execute(select(_P.c.name).where(_P.c.name == key)
                        .with_for_update()).first() is None:
            raise _missing(key)
        for table, what, how in (
                (_DP, "device", "iotsec device set-profile ID --clear"),
                (_GP, "group", "iotsec group set-profile NAME --clear"),
                (m.provisioning_templates, "enrolment template",
                 "iotsec enrol template add NAME --replace --profile OTHER")):
            column = _DP.c.device_id if table is _DP else (
                _GP.c.group_name if table is _GP else m.provisioning_templates.c.name)
            user = conn.execute(select(column).where(table.c.profile == key).limit(1)).first()
            if user is not None:
                raise ConflictError(f"certificate profile {key!r} is used by {what} "
                                    f"{user[0]!r}",
                                    hint=f"select another profile first ('{how}'); "
                                    f"'iotsec profile show {key}' counts its users")
        conn.execute(delete(_P).where(_P.c.name == key))
    rt.events.record(Event(moment, "profile.removed", "success", subject=key))


def _set(rt: Runtime, table: Any, key_column: Any, subject: str, profile: str | None,
         kind: str) -> str | None:
    moment = rt.now().replace(microsecond=0)
    with transaction(rt.engine) as conn:
        parent = m.devices.c.id if kind == "device" else m.groups.c.name
        if conn.execute(select(parent).where(parent == subject)).first() is None:
            raise NotFoundError(f"{kind} {subject!r} does not exist",
                                hint="see 'iotsec device list'" if kind == "device"
                                else "create it with 'iotsec group add'")
        name = None if profile is None else require_profile(conn, profile)
        conn.execute(delete(table).where(key_column == subject))
        if name is not None:
            conn.execute(insert(table).values({key_column.name: subject, "profile": name}))
    rt.events.record(Event(moment, f"{kind}.profile-set", "success", subject=subject,
                           detail={"profile": name}))
    return name


def set_device_profile(rt: Runtime, device_id: str, profile: str | None) -> str | None:
    """Issue ``device_id``'s certificates under ``profile`` (``None``: its groups', or the
    next rule's). Returns the profile now selected."""
    return _set(rt, _DP, _DP.c.device_id, parse_device_id(device_id), profile, "device")


def set_group_profile(rt: Runtime, group: str, profile: str | None) -> str | None:
    """Issue the certificates of ``group``'s members under ``profile`` (``None``: clear)."""
    return _set(rt, _GP, _GP.c.group_name, parse_group_name(group), profile, "group")


def _selection_queries() -> tuple[Any, Any, Any]:
    """The resolution statements, built once (building them costs more than running them):
    the device's and its groups' selections, and named profiles, each with the stored
    definition it names (absent for the built-ins)."""
    cols = [c.label(f"p_{c.name}") for c in _COLUMNS]
    text, device = String(16), String(128)
    ids: BindParameter[list[str]] = bindparam("ids", expanding=True)
    names: BindParameter[list[str]] = bindparam("names", expanding=True)
    by_device = (select(literal("device", text).label("via"),
                        _DP.c.device_id.label("device_id"), cast(null(), device).label("grp"),
                        _DP.c.profile.label("profile"), *cols)
                 .select_from(_DP.outerjoin(_P, _P.c.name == _DP.c.profile))
                 .where(_DP.c.device_id.in_(ids)))
    by_group = (select(literal("group", text).label("via"), _DG.c.device_id.label("device_id"),
                       _DG.c.group_name.label("grp"), _GP.c.profile.label("profile"), *cols)
                .select_from(_DG.join(_GP, _GP.c.group_name == _DG.c.group_name)
                             .outerjoin(_P, _P.c.name == _GP.c.profile))
                .where(_DG.c.device_id.in_(ids)))
    by_name = (select(literal("named", text).label("via"),
                      cast(null(), device).label("device_id"), cast(null(), device).label("grp"),
                      _P.c.name.label("profile"), *cols).where(_P.c.name.in_(names)))
    return union_all(by_device, by_group), union_all(by_device, by_group, by_name), by_name


_SELECTED, _SELECTED_OR_NAMED, _NAMED = _selection_queries()


def _selections(conn: Connection, ids: Sequence[str], wanted: Sequence[str], *,
                selected: bool) -> list[Any]:
    """One query: the device's own and its groups' profile selections (when ``selected``),
    and the named profiles ``wanted``, each with its definition when it is stored."""
    if selected and wanted:
        return list(conn.execute(_SELECTED_OR_NAMED, {"ids": list(ids), "names": list(wanted)}))
    if selected:
        return list(conn.execute(_SELECTED, {"ids": list(ids)}))
    if wanted:
        return list(conn.execute(_NAMED, {"names": list(wanted)}))
    return []


def _one_device_selection() -> Direct:
    """The device's own and its groups' selections for one device, run on the driver (the
    one-certificate-per-call path: see :mod:`iotsec.store.direct`)."""
    cols = [c.label(f"p_{c.name}") for c in _COLUMNS]
    text, device = String(16), String(128)
    by_device = (select(literal("device", text).label("via"),
                        _DP.c.device_id.label("device_id"), cast(null(), device).label("grp"),
                        _DP.c.profile.label("profile"), *cols)
                 .select_from(_DP.outerjoin(_P, _P.c.name == _DP.c.profile))
                 .where(_DP.c.device_id == bindparam("id")))
    by_group = (select(literal("group", text).label("via"), _DG.c.device_id.label("device_id"),
                       _DG.c.group_name.label("grp"), _GP.c.profile.label("profile"), *cols)
                .select_from(_DG.join(_GP, _GP.c.group_name == _DG.c.group_name)
                             .outerjoin(_P, _P.c.name == _GP.c.profile))
                .where(_DG.c.device_id == bindparam("id")))
    return Direct(union_all(by_device, by_group))


_ONE_SELECTED = _one_device_selection()
#: One named profile with its stored definition (absent for a built-in), on the driver.
_ONE_NAMED = Direct(select(
    literal("named", String(16)).label("via"), cast(null(), String(128)).label("device_id"),
    cast(null(), String(128)).label("grp"), _P.c.name.label("profile"),
    *[c.label(f"p_{c.name}") for c in _COLUMNS]).where(_P.c.name == bindparam("name")))


def profiles_for(conn: Unit, rt: Runtime, device_ids: Sequence[str], *,
                 explicit: str | None = None, fallback: str | None = None
                 ) -> dict[str, CertProfile]:
    """The profile each device's next certificate is issued under (see the module's
    rules), resolved with one query per 500 devices: the request's ``explicit`` profile,
    else the device's, its groups', ``fallback`` (an enrolment template's), the built-in
    device profile."""
    explicit = None if explicit is None else parse_profile_name(explicit)
    fallback = None if fallback is None else parse_profile_name(fallback)
    wanted = [n for n in (explicit, fallback) if n is not None and n not in BUILTIN_NAMES]
    ids = sorted(set(device_ids))
    rows: list[Any] = []
    if len(ids) <= 1:
        # One device's statements run on the driver (a unit of work on the driver runs
        # nothing else): its selections, and each profile named by the request or fallback.
        if explicit is None and ids:
            rows = _ONE_SELECTED.rows(conn, {"id": ids[0]})
        for named in wanted:
            rows += _ONE_NAMED.rows(conn, {"name": named})
    else:
        for i in range(0, max(len(ids), 1), 500):
            rows += _selections(core(conn), ids[i:i + 500], wanted if i == 0 else [],
                                selected=explicit is None and bool(ids))
    known: dict[str, CertProfile] = {}

    def profile(name: str, row: Any | None) -> CertProfile:
        found = known.get(name) or _builtin(rt, name)
        if found is None:
            if row is None or row.p_name is None:
                raise _missing(name)
            found = _from_row(row, "p_")
        known[name] = found
        return found

    own: dict[str, str] = {}
    groups: dict[str, dict[str, str]] = {}
    for row in rows:
        if row.via == "named" or row.p_name is not None:
            profile(row.profile, row)
        if row.via == "device":
            own[row.device_id] = row.profile
        elif row.via == "group":
            groups.setdefault(row.device_id, {})[row.grp] = row.profile
    if explicit is not None:
        chosen = profile(explicit, None)
        return dict.fromkeys(ids, chosen)
    result: dict[str, CertProfile] = {}
    for device_id in ids:
        name = own.get(device_id)
        if name is None:
            by_group = groups.get(device_id, {})
            names = sorted(set(by_group.values()))
            if len(names) > 1:
                which = ", ".join(f"{g} ({p})" for g, p in sorted(by_group.items()))
                raise ProfileRefusedError(
                    f"the groups of device {device_id!r} name different certificate "
                    f"profiles: {which}",
                    hint=f"give the device its own with 'iotsec device set-profile "
                    f"{device_id} NAME', or name the profile in the request (--profile)")
            name = names[0] if names else fallback
        result[device_id] = device_profile(rt) if name is None else profile(name, None)
    return result

