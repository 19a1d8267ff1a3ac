"""Access-control use cases: roles, bindings, and decisions."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, select, update

from iotsec.access.engine import CompiledPolicy, Decision
from iotsec.access.policy import Identity, Role, Rule, parse_role_name
from iotsec.app.registry_cache import DeviceCache
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError, NotFoundError
from iotsec.identity.registry import Device, DeviceState, parse_device_id, parse_group_name
from iotsec.pki.serial import format_serial, parse_serial
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import ts

DEFAULT_ROLE = "device"
log = logging.getLogger(__name__)
_DEVICES = "decision-devices"
_REFRESHER = "decision-devices-refresher"
#: One policy compilation at a time in a process.
_COMPILING = threading.Lock()


def bump_policy_version(conn: Connection) -> None:
    conn.execute(update(m.policy_version).where(m.policy_version.c.id == 1)
                 .values(version=m.policy_version.c.version + 1))


def policy_changed(rt: Runtime) -> None:
    """This process sees its own policy and registry changes at once (other serving
    processes within ``hot_cache_seconds``)."""
    rt.forget("policy-version")
    rt.cache.pop(_DEVICES, None)


def _role_exists(conn: Connection, name: str) -> bool:
    return conn.execute(select(m.roles.c.name).where(m.roles.c.name == name)).first() is not None


def _require_roles(conn: Connection, names: Iterable[str]) -> list[str]:
    wanted = sorted({parse_role_name(n) for n in names})
    if not wanted:
        return []
    have = set(conn.execute(select(m.roles.c.name).where(m.roles.c.name.in_(wanted))).scalars())
    missing = [n for n in wanted if n not in have]
    if missing:
        raise NotFoundError(f"role {missing[0]!r} does not exist",
                            hint="create it with 'iotsec role add' (see 'iotsec role list')")
    return wanted


def write_role(conn: Connection, role: Role, now: int, *, replace: bool) -> None:
    """Insert a role (or replace its rules and description) inside a transaction."""
    if _role_exists(conn, role.name):
        if not replace:
            raise ConflictError(f"role {role.name!r} already exists",
                                hint="choose another name, or change it with "
                                "'iotsec policy apply'")
        conn.execute(update(m.roles).where(m.roles.c.name == role.name)
                     .values(description=role.description, updated_at=now))
        conn.execute(delete(m.role_rules).where(m.role_rules.c.role_name == role.name))
    else:
        conn.execute(insert(m.roles).values(name=role.name, description=role.description,
                                            created_at=now, updated_at=now))
    if role.rules:
        conn.execute(insert(m.role_rules), [
            {"role_name": role.name, "position": i, "effect": r.effect.value,
             "action": r.action, "resource": r.resource} for i, r in enumerate(role.rules)])
    bump_policy_version(conn)


def add_role(rt: Runtime, role: Role) -> Role:
    with transaction(rt.engine) as conn:
        write_role(conn, role, ts(rt.now()), replace=False)
    policy_changed(rt)
    return role


def load_roles(conn: Connection, names: Sequence[str] | None = None) -> list[Role]:
    query = select(m.role_rules).order_by(m.role_rules.c.role_name, m.role_rules.c.position)
    role_query = select(m.roles).order_by(m.roles.c.name)
    if names is not None:
        query = query.where(m.role_rules.c.role_name.in_(names))
        role_query = role_query.where(m.roles.c.name.in_(names))
    rules: dict[str, list[Rule]] = {}
    for r in conn.execute(query):
        rules.setdefault(r.role_name, []).append(Rule.parse(r.effect, r.action, r.resource))
    return [Role(name=r.name, rules=tuple(rules.get(r.name, ())), description=r.description)
            for r in conn.execute(role_query)]


@dataclass(frozen=True)
class RoleInfo:
    role: Role
    devices: int
    groups: tuple[str, ...]


def list_roles(rt: Runtime) -> list[RoleInfo]:
    with reading(rt.engine) as conn:
        roles = load_roles(conn)
        counts: dict[str, int] = {
            name: int(n) for name, n in conn.execute(
                select(m.device_roles.c.role_name, func.count())
                .group_by(m.device_roles.c.role_name))}
        groups: dict[str, list[str]] = {}
        for g, r in conn.execute(select(m.group_roles.c.group_name, m.group_roles.c.role_name)
                                 .order_by(m.group_roles.c.group_name)):
            groups.setdefault(r, []).append(g)
    return [RoleInfo(role, int(counts.get(role.name, 0)), tuple(groups.get(role.name, ())))
            for role in roles]


def get_role(rt: Runtime, name: str) -> RoleInfo:
    name = parse_role_name(name)
    for info in list_roles(rt):
        if info.role.name == name:
            return info
    raise NotFoundError(f"role {name!r} does not exist", hint="see 'iotsec role list'")


def assign_roles(conn: Connection, device_ids: Sequence[str], roles: Sequence[str]) -> None:
    """Bind roles to devices inside a transaction (already bound pairs are kept)."""
    wanted = _require_roles(conn, roles)
    if not wanted or not device_ids:
        return
    existing: set[tuple[str, str]] = set()
    for i in range(0, len(device_ids), 500):
        existing.update((d, r) for d, r in conn.execute(
            select(m.device_roles.c.device_id, m.device_roles.c.role_name)
            .where(m.device_roles.c.device_id.in_(device_ids[i:i + 500]))))
    rows = [{"device_id": d, "role_name": r} for d in device_ids for r in wanted
            if (d, r) not in existing]
    if rows:
        conn.execute(insert(m.device_roles), rows)
        bump_policy_version(conn)


def assign_device(rt: Runtime, device_id: str, roles: Sequence[str]) -> list[str]:
    """``iotsec device assign ID --role NAME``; returns the device's roles afterwards."""
    device_id = parse_device_id(device_id)
    with transaction(rt.engine) as conn:
        if conn.execute(select(m.devices.c.id).where(m.devices.c.id == device_id)).first() is None:
            raise NotFoundError(f"device {device_id!r} is not registered",
                                hint="register it with 'iotsec device add'")
        assign_roles(conn, [device_id], roles)
        held = list(conn.execute(select(m.device_roles.c.role_name).where(
            m.device_roles.c.device_id == device_id).order_by(m.device_roles.c.role_name)
        ).scalars())
    policy_changed(rt)
    return held


def add_group(rt: Runtime, name: str, roles: Sequence[str]) -> list[str]:
    """Create a group if needed and bind roles to it; returns the group's roles."""
    name = parse_group_name(name)
    now = ts(rt.now())
    with transaction(rt.engine) as conn:
        wanted = _require_roles(conn, roles)
        exists = conn.execute(select(m.groups.c.name).where(m.groups.c.name == name)).first()
        if exists is None:
            conn.execute(insert(m.groups).values(name=name, created_at=now))
        have = set(conn.execute(select(m.group_roles.c.role_name)
                                .where(m.group_roles.c.group_name == name)).scalars())
        if exists is not None and set(wanted) <= have:
            raise ConflictError(f"group {name!r} already exists with these roles",
                                hint="nothing to do; see 'iotsec role list'")
        new = [r for r in wanted if r not in have]
        if new:
            conn.execute(insert(m.group_roles), [{"group_name": name, "role_name": r}
                                                 for r in new])
            bump_policy_version(conn)
    policy_changed(rt)
    return sorted(have | set(new))


def _load_policy(conn: Connection) -> CompiledPolicy:
    device_roles: dict[str, list[str]] = {}
    for d, r in conn.execute(select(m.device_roles.c.device_id, m.device_roles.c.role_name)
                             .order_by(m.device_roles.c.device_id, m.device_roles.c.role_name)):
        device_roles.setdefault(d, []).append(r)
    group_roles: dict[str, list[str]] = {}
    for g, r in conn.execute(select(m.group_roles.c.group_name, m.group_roles.c.role_name)
                             .order_by(m.group_roles.c.group_name, m.group_roles.c.role_name)):
        group_roles.setdefault(g, []).append(r)
    return CompiledPolicy(load_roles(conn), device_roles, group_roles)


def _read_policy_version(rt: Runtime) -> int:
    with reading(rt.engine) as conn:
        return int(conn.execute(select(m.policy_version.c.version)
                                .where(m.policy_version.c.id == 1)).scalar_one())


def _policy_version(rt: Runtime) -> int:
    return rt.recent("policy-version", rt.settings.hot_cache_seconds,
                     lambda: _read_policy_version(rt))


def compiled_policy(rt: Runtime) -> CompiledPolicy | None:
    """The compiled policy if it is in memory and current, else ``None`` (no compiling)."""
    cached = rt.cache.get("policy")
    if isinstance(cached, tuple) and cached[0] == _policy_version(rt):
        policy: CompiledPolicy = cached[1]
        return policy
    return None


def current_policy(rt: Runtime) -> CompiledPolicy:
    """The compiled policy, rebuilt only when the store's policy version has moved."""
    version = _policy_version(rt)
    cached = rt.cache.get("policy")
    if isinstance(cached, tuple) and cached[0] == version:
        policy: CompiledPolicy = cached[1]
        return policy
    # One compilation at a time: in a server, the first requests after a change would
    # otherwise each read and compile the whole policy at once.
    with _COMPILING:
        cached = rt.cache.get("policy")
        if isinstance(cached, tuple) and cached[0] == version:
            policy = cached[1]
            return policy
        with reading(rt.engine) as conn:
            policy = _load_policy(conn)
        rt.cache["policy"] = (version, policy)
    return policy


def _devices(rt: Runtime) -> DeviceCache | None:
    if rt.settings.hot_cache_seconds <= 0:
        return None
    cache = rt.cache.get(_DEVICES)
    if not isinstance(cache, DeviceCache):
        cache = rt.cache[_DEVICES] = DeviceCache(rt, background=_REFRESHER in rt.cache)
    return cache


def _keep_registry_fresh(rt: Runtime) -> None:
    """Look for registry changes in a background thread of this (serving) process, every
    ``hot_cache_seconds`` until the runtime closes, so that no request waits for a look; the
    same thread reads the policy version twice as often, so that requests find it fresh."""
    if rt.settings.hot_cache_seconds <= 0 or _REFRESHER in rt.cache:
        return
    stop = threading.Event()
    rt.cache[_REFRESHER] = stop
    rt.on_close(stop.set)
    cache = rt.cache.get(_DEVICES)
    if isinstance(cache, DeviceCache):
        cache.background = True

    def run() -> None:
        while not stop.wait(rt.settings.hot_cache_seconds / 2):
            try:
                rt.refresh("policy-version", lambda: _read_policy_version(rt))
                current = _devices(rt)
                if current is not None:
                    current.revalidate(rt)
            except Exception:  # the store is unreachable for a while: keep what is known
                log.exception("could not look for policy or registry changes; trying again")

    threading.Thread(target=run, name="iotsec-registry", daemon=True).start()


def warm_up(rt: Runtime) -> int:
    """For a serving process, before its first request: compile the policy, read the
    registry entries decisions need and keep them fresh from a background thread. Returns
    how many devices were read."""
    current_policy(rt)
    _keep_registry_fresh(rt)
    cache = _devices(rt)
    count = cache.preload(rt) if cache is not None else 0
    # What was just read lives as long as the process: keep it out of the cyclic garbage
    # collector's full passes, which would otherwise walk it again and again (pauses of
    # hundreds of milliseconds with a large fleet).
    gc.collect()
    gc.freeze()
    return count


def _device(rt: Runtime, device_id: str) -> Device:
    from iotsec.app.devices import get_device

    cache = _devices(rt)
    return cache.get(rt, device_id) if cache is not None else get_device(rt, device_id)


def identity_for(rt: Runtime, device_id: str, cert_serial: str | None = None
                 ) -> tuple[Identity, DeviceState]:
    """The identity a decision is made for: registry data plus the certificate used."""
    return _identity(_device(rt, device_id), cert_serial)


def _identity(device: Device, cert_serial: str | None) -> tuple[Identity, DeviceState]:
    serial = format_serial(parse_serial(cert_serial)) if cert_serial else None
    return (Identity(device_id=device.id, groups=device.groups, attributes=device.attributes,
                     cert_cn=device.id, cert_serial=serial), device.state)


def check(rt: Runtime, device_id: str, action: str, resource: str,
          cert_serial: str | None = None) -> Decision:
    """Decide and explain. A device that is not active is denied whatever its roles say."""
    device = _device(rt, device_id)
    return _decide(current_policy(rt), device, action, resource, cert_serial)


def check_cached(rt: Runtime, device_id: str, action: str, resource: str,
                 cert_serial: str | None = None) -> Decision | None:
    """``check`` from memory alone, or ``None`` when the device's registry entry must first
    be read from the store or the policy compiled (a serving process then calls ``check`` off
    its event loop)."""
    cache = _devices(rt)
    device = cache.peek(rt, device_id) if cache is not None else None
    policy = compiled_policy(rt) if device is not None else None
    if device is None or policy is None:
        return None
    return _decide(policy, device, action, resource, cert_serial)


def _decide(policy: CompiledPolicy, device: Device, action: str, resource: str,
            cert_serial: str | None) -> Decision:
    identity, state = _identity(device, cert_serial)
    decision = policy.decide(identity, action, resource)
    if state is not DeviceState.ACTIVE and state is not DeviceState.PENDING:
        return Decision(False, action, resource,
                        reason=f"device {device.id!r} is {state.value} (denied whatever its "
                        "roles allow)")
    return decision
