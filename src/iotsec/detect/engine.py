"""The detector: observations from the broker's telemetry in, detections out (pure).

Counting rules keep one tumbling window per rule and subject (a device, a source address
or the fleet) and fire as soon as the count passes the rule's limit, at most once per
window. A rule with a ``baseline`` learns what its subject usually does: when a window
closes, its count is folded into an exponentially weighted mean and variance
(:class:`Baseline`), and the limit is ``mean + deviations * std`` (never below the floor).
Device profiles (first and last seen, the networks it connects from, the topics it
publishes to, the gaps between its messages) serve the event rules and the silence rule.

Memory is bounded: at most :data:`MAX_SUBJECTS` windows per rule and :data:`MAX_PROFILES`
device profiles (the least recently used are dropped), and each profile keeps at most
:data:`MAX_NETWORKS` networks and :data:`MAX_TOPICS` topics.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from iotsec.detect.rules import Kind, Per, Rule, RuleSet

__all__ = [
    "MAX_NETWORKS", "MAX_PROFILES", "MAX_SUBJECTS", "MAX_TOPICS", "Baseline", "Detection",
    "Detector", "Observation", "Profile", "network_of",
]

MAX_SUBJECTS = 100_000
MAX_PROFILES = 200_000
MAX_NETWORKS = 32
MAX_TOPICS = 256
_ALPHA = 0.1  # weight of a new value in the moving mean and variance
_REFS = 20  # evidence events kept per window


@dataclass(slots=True)
class Baseline:
    """An exponentially weighted moving mean and variance, and how many values it saw."""

    mean: float = 0.0
    var: float = 0.0
    n: int = 0

    def fold(self, value: float) -> None:
        if self.n == 0:
            self.mean, self.var = value, 0.0
        else:
            diff = value - self.mean
            incr = _ALPHA * diff
            self.mean += incr
            self.var = (1 - _ALPHA) * (self.var + diff * incr)
        self.n += 1

    def dump(self) -> dict[str, Any]:
        return {"mean": self.mean, "var": self.var, "n": self.n}

    @classmethod
    def load(cls, data: dict[str, Any]) -> Baseline:
        return cls(float(data.get("mean", 0.0)), float(data.get("var", 0.0)),
                   int(data.get("n", 0)))


@dataclass(slots=True)
class Profile:
    """What the detector knows of one device."""

    first_seen: float
    last_seen: float
    networks: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    gaps: Baseline = field(default_factory=Baseline)
    silent: bool = False  # a silence alert was raised and the device has not spoken since

    def dump(self) -> dict[str, Any]:
        return {"first_seen": self.first_seen, "last_seen": self.last_seen,
                "networks": self.networks, "topics": self.topics, "gaps": self.gaps.dump(),
                "silent": self.silent}

    @classmethod
    def load(cls, data: dict[str, Any]) -> Profile:
        return cls(float(data["first_seen"]), float(data["last_seen"]),
                   [str(n) for n in data.get("networks", [])][:MAX_NETWORKS],
                   [str(t) for t in data.get("topics", [])][:MAX_TOPICS],
                   Baseline.load(data.get("gaps", {})), bool(data.get("silent", False)))


@dataclass(frozen=True, slots=True)
class Observation:
    """One thing the broker saw. ``kind``: authn-failure, authz-denial, connect,
    disconnect, collision or publish. ``ref`` is the id of the event that records it (its
    evidence), when there is one."""

    at: float  # Unix seconds
    kind: str
    device: str | None = None
    source: str | None = None  # the client's address (with or without :port)
    client_id: str | None = None
    topic: str | None = None
    size: int = 0
    abnormal: bool = False
    previous_source: str | None = None
    count: int = 1
    ref: int | None = None


@dataclass(frozen=True, slots=True)
class Detection:
    rule: Rule
    subject: str
    value: float
    limit: float
    summary: str
    evidence: dict[str, Any]
    refs: tuple[int, ...]


_Handler = Callable[["Rule", "Observation", str, "Profile | None"], "Detection | None"]


@dataclass(slots=True)
class _Window:
    start: float
    count: float = 0.0
    fired: bool = False
    refs: list[int] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)


def _address(source: str | None) -> str | None:
    """The address of ``host:port``, ``[v6]:port`` or a bare address."""
    if not source:
        return None
    text = source.strip()
    if text.startswith("["):
        return text[1:text.find("]")] if "]" in text else text
    if text.count(":") == 1:
        return text.rsplit(":", 1)[0]
    return text


@functools.lru_cache(maxsize=8192)
def network_of(source: str | None) -> str | None:
    """The network a client connects from: its IPv4 /24 or IPv6 /64 (a hostname as is)."""
    address = _address(source)
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


#: The rules an observation kind feeds.
_FEEDS: dict[str, tuple[Kind, ...]] = {
    "authn-failure": (Kind.AUTHN_FAILURES,),
    "authz-denial": (Kind.AUTHZ_DENIALS,),
    "connect": (Kind.NEW_NETWORK, Kind.CERT_TWO_PLACES),
    "disconnect": (Kind.DISCONNECT_STORM,),
    "collision": (Kind.CLIENT_ID_CONFLICT, Kind.CERT_TWO_PLACES),
    "publish": (Kind.MESSAGE_RATE, Kind.MESSAGE_SIZE, Kind.UNUSUAL_TOPIC),
}
#: Observations that prove the device itself is there (and so feed its profile).
_ACTIVITY = ("connect", "publish", "authz-denial")


class Detector:
    """Feed it observations in time order; it returns the detections they cause."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        # Per observation kind, the rules it feeds with the handler of each (resolved once:
        # this is the per-line path).
        self.by_kind: dict[str, list[tuple[Rule, _Handler]]] = {}
        for rule in rules.enabled():
            for obs_kind, kinds in _FEEDS.items():
                if rule.kind in kinds:
                    self.by_kind.setdefault(obs_kind, []).append((rule, self._handler(rule)))
        self.silence = [r for r in rules.enabled() if r.kind is Kind.SILENT]
        self.windows: dict[str, OrderedDict[str, _Window]] = {
            r.name: OrderedDict() for r in rules.enabled()}
        self.baselines: dict[tuple[str, str], Baseline] = {}
        self.profiles: OrderedDict[str, Profile] = OrderedDict()
        self.sessions: dict[str, dict[str, str]] = {}  # device -> client id -> address
        self.dirty: set[tuple[str, str]] = set()  # (rule or "", subject) to persist

    # ----------------------------------------------------------------- state in and out

    def restore(self, rule: str, subject: str, data: dict[str, Any]) -> None:
        """Load persisted state: a baseline (``rule``) or a profile (``rule == ""``)."""
        if rule == "":
            self.profiles[subject] = Profile.load(data)
        else:
            self.baselines[(rule, subject)] = Baseline.load(data)

    def take_dirty(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The state changed since the last call, to persist."""
        out = []
        for rule, subject in self.dirty:
            if rule == "":
                profile = self.profiles.get(subject)
                if profile is not None:
                    out.append((rule, subject, profile.dump()))
            else:
                baseline = self.baselines.get((rule, subject))
                if baseline is not None:
                    out.append((rule, subject, baseline.dump()))
        self.dirty.clear()
        return out

    # ----------------------------------------------------------------- observations

    def observe_all(self, observations: Iterable[Observation]) -> list[Detection]:
        out: list[Detection] = []
        for obs in observations:
            out.extend(self.observe(obs))
        return out

    def observe(self, obs: Observation) -> list[Detection]:
        out: list[Detection] = []
        profile = self._profile(obs) if obs.device and obs.kind in _ACTIVITY else None
        for rule, handler in self.by_kind.get(obs.kind, ()):
            if rule.per is Per.DEVICE:
                subject = obs.device
            elif rule.per is Per.FLEET:
                subject = "fleet"
            else:
                subject = _address(obs.source)
            if subject is None:
                continue
            found = handler(rule, obs, subject, profile)
            if found is not None:
                out.append(found)
        if obs.kind == "connect" and obs.device and obs.client_id:
            sessions = self.sessions.setdefault(obs.device, {})
            if len(sessions) < 64:
                sessions[obs.client_id] = _address(obs.source) or ""
        elif obs.kind == "disconnect" and obs.device and obs.client_id:
            self.sessions.get(obs.device, {}).pop(obs.client_id, None)
        if profile is not None:
            self._seen(obs, profile)
        return out

    def _profile(self, obs: Observation) -> Profile:
        device = obs.device or ""
        profile = self.profiles.get(device)
        if profile is None:
            profile = Profile(first_seen=obs.at, last_seen=obs.at)
            self.profiles[device] = profile
            if len(self.profiles) > MAX_PROFILES:
                self.profiles.popitem(last=False)
        else:
            self.profiles.move_to_end(device)
        return profile

    def _seen(self, obs: Observation, profile: Profile) -> None:
        gap = obs.at - profile.last_seen
        if gap > 0:
            profile.gaps.fold(gap)
        profile.last_seen = max(profile.last_seen, obs.at)
        profile.silent = False
        self.dirty.add(("", obs.device or ""))

    def _handler(self, rule: Rule) -> _Handler:
        kind = rule.kind
        if kind is Kind.MESSAGE_SIZE:
            return self._size
        if kind in (Kind.NEW_NETWORK, Kind.UNUSUAL_TOPIC):
            return self._novelty
        if kind is Kind.CERT_TWO_PLACES:
            return self._two_places
        if kind is Kind.DISCONNECT_STORM:
            return self._abnormal
        return self._count

    def _abnormal(self, rule: Rule, obs: Observation, subject: str,
                  profile: Profile | None) -> Detection | None:
        return self._count(rule, obs, subject, profile) if obs.abnormal else None

    def _window(self, rule: Rule, subject: str, at: float) -> _Window:
        windows = self.windows[rule.name]
        window = windows.get(subject)
        if window is None:
            window = _Window(start=at - at % rule.window)
            windows[subject] = window
            if len(windows) > MAX_SUBJECTS:
                windows.popitem(last=False)
            return window
        windows.move_to_end(subject)
        if at >= window.start + rule.window:
            if rule.baseline is not None:
                baseline = self.baselines.setdefault((rule.name, subject), Baseline())
                baseline.fold(window.count)
                # Quiet windows in between count as zeros (a few: enough to pull the mean
                # down without a long loop after a pause).
                skipped = int((at - window.start) // rule.window) - 1
                for _ in range(min(skipped, 10)):
                    baseline.fold(0.0)
                self.dirty.add((rule.name, subject))
            window.start = at - at % rule.window
            window.count, window.fired = 0.0, False
            window.refs.clear()
            window.sources.clear()
        return window

    def _limit(self, rule: Rule, subject: str) -> float:
        if rule.baseline is None:
            return rule.threshold if rule.threshold is not None else 0.0
        b = self.baselines.get((rule.name, subject))
        return rule.limit(b.mean, b.var, b.n) if b is not None else rule.limit(0.0, 0.0, 0)

    def _count(self, rule: Rule, obs: Observation, subject: str, profile: Profile | None
               ) -> Detection | None:
        window = self._window(rule, subject, obs.at)
        window.count += obs.count
        if obs.ref is not None and len(window.refs) < _REFS:
            window.refs.append(obs.ref)
        if obs.source and len(window.sources) < 20:
            window.sources.add(_address(obs.source) or "")
        if window.fired:
            return None
        limit = self._limit(rule, subject)
        if window.count <= limit:
            return None
        window.fired = True
        what = {Kind.AUTHN_FAILURES: "failed authentications",
                Kind.AUTHZ_DENIALS: "denied publishes or subscriptions",
                Kind.MESSAGE_RATE: "messages", Kind.DISCONNECT_STORM: "abnormal disconnects",
                Kind.CLIENT_ID_CONFLICT: "client-id take-overs"}.get(rule.kind, "events")
        return Detection(rule, subject, window.count, limit,
                         f"{window.count:.0f} {what} from {rule.per.value} {subject} within "
                         f"{rule.window} s (limit {limit:.0f})",
                         {"count": window.count, "limit": limit, "window_seconds": rule.window,
                          "window_start": window.start, "sources": sorted(window.sources)},
                         tuple(window.refs))

    def _size(self, rule: Rule, obs: Observation, subject: str, profile: Profile | None
              ) -> Detection | None:
        limit = self._limit(rule, subject)
        fired = obs.size > limit
        if rule.baseline is not None and not fired:
            # Only ordinary messages teach the baseline: an attacker cannot raise it with the
            # very messages that should fire.
            self.baselines.setdefault((rule.name, subject), Baseline()).fold(float(obs.size))
            self.dirty.add((rule.name, subject))
        if not fired:
            return None
        return Detection(rule, subject, obs.size, limit,
                         f"device {subject} published {obs.size} bytes to {obs.topic!r} "
                         f"(limit {limit:.0f})",
                         {"size": obs.size, "limit": limit, "topic": obs.topic},
                         (obs.ref,) if obs.ref is not None else ())

    def _novelty(self, rule: Rule, obs: Observation, subject: str, profile: Profile | None
                 ) -> Detection | None:
        if profile is None:
            return None
        network = rule.kind is Kind.NEW_NETWORK
        value = network_of(obs.source) if network else obs.topic
        if not value:
            return None
        known = profile.networks if network else profile.topics
        if value in known:
            return None
        cap = MAX_NETWORKS if network else MAX_TOPICS
        learning = obs.at < profile.first_seen + rule.learn
        if len(known) < cap:
            known.append(value)
            self.dirty.add(("", subject))
        if learning:
            return None
        what = "connected from the new network" if network else "published to the new topic"
        return Detection(rule, subject, 1, 0, f"device {subject} {what} {value}",
                         {"value": value, "known": known[:20], "source": obs.source},
                         (obs.ref,) if obs.ref is not None else ())

    def _two_places(self, rule: Rule, obs: Observation, subject: str,
                    profile: Profile | None) -> Detection | None:
        here = _address(obs.source)
        if obs.kind == "collision":
            there = _address(obs.previous_source)
        else:
            sessions = self.sessions.get(subject, {})
            there = next((a for cid, a in sessions.items()
                          if cid != obs.client_id and a and a != here), None)
        if not here or not there or here == there:
            return None
        return Detection(rule, subject, 2, 1,
                         f"the certificate of device {subject} is in use from {there} and "
                         f"{here} at once", {"addresses": sorted({here, there}),
                                             "client_id": obs.client_id},
                         (obs.ref,) if obs.ref is not None else ())

    # ----------------------------------------------------------------- time

    def tick(self, now: float) -> list[Detection]:
        """The time-driven rules: devices silent past their heartbeat."""
        out: list[Detection] = []
        for rule in self.silence:
            for device, profile in self.profiles.items():
                if profile.silent:
                    continue
                g = profile.gaps
                limit = rule.limit(g.mean, g.var, g.n)
                quiet = now - profile.last_seen
                if quiet > limit > 0:
                    profile.silent = True
                    self.dirty.add(("", device))
                    out.append(Detection(
                        rule, device, quiet, limit,
                        f"device {device} has been silent for {quiet:.0f} s (limit "
                        f"{limit:.0f} s)", {"last_seen": profile.last_seen, "limit": limit},
                        ()))
        return out
