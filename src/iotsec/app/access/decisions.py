"""Access decisions: the compiled policy of the store's current version, the registry
entries decisions need (cached per serving process and kept fresh from a background thread),
``check``, and ``check_many`` for requests that arrive together.

The compiled policy holds the roles and their bindings to groups; a device's own roles are
part of its registry entry and come with its identity, so compiling never reads the fleet
(ADR 0023).
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from iotsec.access.engine import CompiledPolicy, Decision
from iotsec.access.policy import Identity
from iotsec.app import changes
from iotsec.app.access.decide import decide, decide_uncounted, load_policy, with_serial
from iotsec.app.access.policy_reads import policy_version
from iotsec.app.changes import Change
from iotsec.app.counters import COUNTERS
from iotsec.app.identity.device_reads import (
    DecisionEntry,
    decision_entries,
    entry_of,
    get_device,
)
from iotsec.app.identity.registry_cache import DeviceCache
from iotsec.app.runtime import Runtime, Slot
from iotsec.errors import InvalidInputError, NotFoundError
from iotsec.identity.registry import DeviceState, parse_device_id

__all__ = ["GC_YOUNG", "MAX_BATCH", "DecisionRequest", "check", "check_cached", "check_many",
           "compiled_policy", "current_policy", "identity_for", "prefetch", "quarantine_policy",
           "warm_up"]

log = logging.getLogger(__name__)
#: The compiled policy and the version it was compiled from.
_POLICY: Slot[tuple[int, CompiledPolicy]] = Slot("access.policy")
#: The registry entries decisions read, with the runtime's registry generation they hold.
_DEVICES: Slot[tuple[int, DeviceCache]] = Slot("access.devices")
#: The policy of quarantined devices (the quarantine role only), with its version.
_QUARANTINE: Slot[tuple[int, CompiledPolicy]] = Slot("access.quarantine")
#: Set when the background refresher runs; stops it.
_REFRESHER: Slot[threading.Event] = Slot("access.refresher")
#: The youngest generation's threshold of the cyclic garbage collector in a serving process
#: (:func:`warm_up`; the interpreter's default is 700).
GC_YOUNG = 10_000
#: One policy compilation at a time in a process.
_COMPILING = threading.Lock()


def _read_policy_version(rt: Runtime) -> int:
    with rt.reading() as reader:
        return policy_version(reader)


def _policy_version(rt: Runtime) -> int:
    return rt.recent("policy-version", rt.settings.hot_cache_seconds,
                     lambda: _read_policy_version(rt))


def compiled_policy(rt: Runtime) -> CompiledPolicy | None:
    """The compiled policy if it is in memory and current, else ``None`` (no compiling)."""
    cached = rt.get(_POLICY)
    if cached is not None and cached[0] == _policy_version(rt):
        return cached[1]
    return None


def quarantine_policy(rt: Runtime) -> CompiledPolicy:
    """The policy of quarantined devices (the quarantine role only), kept current with the
    store's policy version."""
    current_policy(rt)
    held = rt.get(_QUARANTINE)
    assert held is not None  # set with the policy
    return held[1]


def current_policy(rt: Runtime) -> CompiledPolicy:
    """The compiled policy, rebuilt only when the store's policy version has moved."""
    version = _policy_version(rt)
    cached = rt.get(_POLICY)
    if cached is not None and cached[0] == version:
        return cached[1]
    # One compilation at a time: in a server, the first requests after a change would
    # otherwise each read and compile the whole policy at once.
    with _COMPILING:
        cached = rt.get(_POLICY)
        if cached is not None and cached[0] == version:
            return cached[1]
        with rt.reading() as reader:
            policy, quarantined = load_policy(reader, rt.settings.quarantine_topic)
        rt.put(_QUARANTINE, (version, quarantined))
        rt.put(_POLICY, (version, policy))
    return policy


def _devices(rt: Runtime) -> DeviceCache | None:
    if rt.settings.hot_cache_seconds <= 0:
        return None
    held = rt.get(_DEVICES)
    if held is None or held[0] != rt.registry_generation:
        # A change made by this process drops what it had read: it sees its own changes.
        held = rt.put(_DEVICES, (rt.registry_generation,
                                 DeviceCache(rt, background=rt.get(_REFRESHER) is not None)))
    return held[1]


class _Announced:
    """What the change feed announced since the refresher last looked (filled by the
    listening thread, taken by the refresher)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.everything = False
        self.policy = False
        self.all_devices = False
        self.devices: set[str] = set()

    def add(self, batch: list[Change] | None) -> None:
        with self.lock:
            if batch is None:
                self.everything = True
            else:
                for change in batch:
                    if change.kind == "policy":
                        self.policy = True
                    elif change.kind == "device" and change.key == "*":
                        self.all_devices = True
                    elif change.kind == "device":
                        self.devices.add(change.key)
        self.wake.set()

    def take(self) -> tuple[bool, bool, bool, set[str]]:
        """(everything, policy, all devices, device ids), emptied."""
        with self.lock:
            taken = (self.everything, self.policy, self.all_devices, self.devices)
            self.everything = self.policy = self.all_devices = False
            self.devices = set()
        return taken


def _keep_registry_fresh(rt: Runtime) -> None:
    """Look for registry changes in a background thread of this (serving) process, every
    ``hot_cache_seconds`` until the runtime closes, so that no request waits for a look; the
    same thread reads the policy version twice as often, so that requests find it fresh.
    On PostgreSQL the change feed (:mod:`iotsec.app.changes`) wakes it at once: a device
    or the policy changed through another process is read again as soon as its change
    commits, and after the feed's connection is (re)made everything is looked at."""
    if rt.settings.hot_cache_seconds <= 0 or rt.get(_REFRESHER) is not None:
        return
    stop = rt.put(_REFRESHER, threading.Event())
    announced = _Announced()
    rt.on_close(announced.wake.set)
    rt.on_close(stop.set)
    held = rt.get(_DEVICES)
    if held is not None:
        held[1].background = True
    changes.subscribe(rt, announced.add)
    # The first turn looks at everything: what changed while this process compiled the
    # policy, before it subscribed.
    announced.add(None)

    def run() -> None:
        while True:
            announced.wake.wait(rt.settings.hot_cache_seconds / 2)
            if stop.is_set():
                return
            announced.wake.clear()
            everything, policy, all_devices, device_ids = announced.take()
            try:
                version = rt.refresh("policy-version", lambda: _read_policy_version(rt))
                if (everything or policy) and compiled_policy(rt) is None:
                    # Compiled here rather than by the first request that needs it.
                    current_policy(rt)
                    log.debug("policy version %s compiled after a change", version)
                current = _devices(rt)
                if current is not None:
                    if device_ids and not (everything or all_devices):
                        current.reread(rt, device_ids)
                    current.revalidate(rt, force=everything or all_devices)
            except Exception:  # the store is unreachable for a while: keep what is known
                # What was announced is looked at again at the next turn, all of it.
                announced.add(None)
                announced.wake.clear()
                log.exception("could not look for policy or registry changes; trying again")

    threading.Thread(target=run, name="iotsec-registry", daemon=True).start()
    changes.listen(rt)


def warm_up(rt: Runtime) -> None:
    """For a serving process, before its first request: compile the policy (its size
    grows with roles and groups, not devices) and keep it and the registry entries fresh
    from a background thread. Registry entries are read when a device is first asked about
    (in batches by :func:`check_many`), so start-up time and memory do not grow with the
    fleet."""
    current_policy(rt)
    _keep_registry_fresh(rt)
    _devices(rt)
    # What was loaded so far (modules, applications, the policy) lives as long as the
    # process: keep it out of the cyclic garbage collector's full passes.
    gc.collect()
    gc.freeze()
    # A batch of decisions holds its requests, rows and answers until it ends: with the
    # default threshold (700 new objects) the collector would pass over them several times
    # and move them to its older generations, whose full passes then run more often over
    # every registry entry kept. A larger youngest generation lets them die young (its
    # passes cost the same per object, and hold at most this many objects' worth longer).
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, GC_YOUNG), middle, old)


def _entry(rt: Runtime, device_id: str) -> DecisionEntry:
    cache = _devices(rt)
    return cache.get(rt, device_id) if cache is not None else entry_of(get_device(rt, device_id))


def identity_for(rt: Runtime, device_id: str, cert_serial: str | None = None
                 ) -> tuple[Identity, DeviceState]:
    """The identity a decision is made for: registry data plus the certificate used."""
    entry = _entry(rt, device_id)
    return with_serial(entry.identity, cert_serial), entry.state


def check(rt: Runtime, device_id: str, action: str, resource: str,
          cert_serial: str | None = None) -> Decision:
    """Decide and explain. A device that is not active is denied whatever its roles say."""
    entry = _entry(rt, device_id)
    policy = current_policy(rt)
    if entry.state is DeviceState.QUARANTINED:
        policy = quarantine_policy(rt)
    return decide(policy, entry, action, resource, cert_serial)


#: The most requests :func:`check_many` takes at once.
MAX_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """One question for :func:`check_many`."""

    device_id: str
    action: str
    resource: str
    cert_serial: str | None = None


def check_many(rt: Runtime, requests: Sequence[DecisionRequest]) -> list[Decision]:
    """``check`` for many requests at once, answered in order: the registry entries that are
    not in memory are read together (one indexed statement per 2,000 devices rather than a
    few per device) and each request is decided exactly as ``check`` decides it (device
    state, quarantine, deny before allow, default deny) as soon as its device's entry has
    arrived, while the store reads the next ones.

    Refused as a whole, no answer given or counted: more than :data:`MAX_BATCH` requests,
    or a device id that is not valid (before anything is read). An unregistered device
    raises :class:`~iotsec.errors.NotFoundError`, as ``check`` does, before any error of a
    request's action or resource."""
    if len(requests) > MAX_BATCH:
        raise InvalidInputError(f"at most {MAX_BATCH} decisions are asked at once "
                                f"({len(requests)} were)", hint="split the requests")
    # Where each device is first asked about, and where again (rare: a device asked about
    # twice in one batch).
    first: dict[str, int] = {}
    again: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        device_id = parse_device_id(r.device_id)
        if device_id in first:
            again.setdefault(device_id, []).append(i)
        else:
            first[device_id] = i
    ids = list(first)
    policy = current_policy(rt)
    # Both taken before the entries are read, so that no other read runs while the read
    # transaction of the entries is open.
    quarantined = quarantine_policy(rt)
    cache = _devices(rt)
    parts = (cache.get_parts(rt, ids) if cache is not None
             else iter([decision_entries(rt, ids)]))
    decisions: list[Decision | None] = [None] * len(requests)
    quarantine = DeviceState.QUARANTINED
    failure: Exception | None = None
    arrived = 0
    #: The devices whose entries arrived once a request could not be decided.
    late: set[str] = set()
    for part in parts:
        arrived += len(part)
        if failure is not None:
            # Every entry is still read: an unregistered device is reported first.
            late.update(part)
            continue
        try:
            for device_id, entry in part.items():
                chosen = quarantined if entry.state is quarantine else policy
                i = first[device_id]
                r = requests[i]
                decisions[i] = decide_uncounted(chosen, entry, r.action, r.resource,
                                                r.cert_serial)
                if again and device_id in again:
                    for i in again[device_id]:
                        r = requests[i]
                        decisions[i] = decide_uncounted(chosen, entry, r.action,
                                                        r.resource, r.cert_serial)
        except Exception as exc:  # an action or resource that is not valid
            failure = exc
            late.update(part)
    if arrived < len(first):
        for device_id, i in first.items():
            if decisions[i] is None and device_id not in late:
                raise NotFoundError(f"device {device_id!r} is not registered",
                                    hint="register it with 'iotsec device add'")
    if failure is not None:
        raise failure
    answers = cast(list[Decision], decisions)
    allowed = sum(d.allowed for d in answers)
    # Counted once per batch rather than once per decision (one lock taken, not one each).
    if allowed:
        COUNTERS.inc("decisions", ("allow",), allowed)
    if len(answers) > allowed:
        COUNTERS.inc("decisions", ("deny",), len(answers) - allowed)
    return answers


def prefetch(rt: Runtime, device_ids: Sequence[str]) -> None:
    """Read the registry entries of ``device_ids`` that are not in memory, together, and
    compile the policy if it moved, so that their decisions can then be made from memory
    (``check_cached``). Ids that are not valid or not registered are left for ``check``
    to refuse with its own error; nothing is decided here."""
    ids = []
    for device_id in dict.fromkeys(device_ids):
        try:
            ids.append(parse_device_id(device_id))
        except InvalidInputError:
            continue
    cache = _devices(rt)
    if cache is not None and ids:
        for i in range(0, len(ids), MAX_BATCH):
            cache.get_many(rt, ids[i:i + MAX_BATCH])
    current_policy(rt)


def check_cached(rt: Runtime, device_id: str, action: str, resource: str,
                 cert_serial: str | None = None) -> Decision | None:
    """``check`` from memory alone, or ``None`` when the device's registry entry must first
    be read from the store or the policy compiled (a serving process then calls ``check`` off
    its event loop)."""
    cache = _devices(rt)
    entry = cache.peek(rt, device_id) if cache is not None else None
    policy = compiled_policy(rt) if entry is not None else None
    if entry is None or policy is None:
        return None
    if entry.state is DeviceState.QUARANTINED:
        held = rt.get(_QUARANTINE)
        if held is None:
            return None
        policy = held[1]
    return decide(policy, entry, action, resource, cert_serial)
