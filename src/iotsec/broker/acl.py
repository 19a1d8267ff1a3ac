"""The access-control policy compiled into a Mosquitto 2.0 ``acl_file`` (pure).

What Mosquitto 2.0.11's ``acl_file`` does, measured against the real broker (see
``tests/broker``), and what this compiler does about it:

- Only PUBLISH (``write``) and delivery (``read``, checked per message against the
  message's topic name) are checked. SUBSCRIBE is never checked: every SUBACK is a grant,
  also for ``#``. Topic isolation therefore rests on the ``read`` check at delivery, which
  also covers retained messages and ``$share/...`` subscriptions. A message on topic T is
  delivered to a device only if its roles allow both ``receive`` on T and ``subscribe`` to
  T, so ``read`` lines are the pairwise intersections of the allow-receive and
  allow-subscribe filters.
- A client's own ``user`` block is checked first (its ``deny`` lines, then its grants),
  then the ``pattern`` lines (``deny``, then grants). A user block's grant therefore beats a
  pattern ``deny``: every user block repeats all the deny rules that apply to its device.
- ``deny`` lines deny every kind of access. A policy ``deny publish`` on T therefore also
  stops delivery of T at the broker (stricter than the policy, never looser); the compiler
  reports each such case as a warning.
- ``pattern`` lines apply to every username. Rules whose only variables are
  ``${device.id}`` / ``${cert.cn}`` (both the certificate CN, which Mosquitto uses as the
  username) and that belong to roles every enabled device holds (and that a newly
  registered device gets by default) become ``pattern`` lines with ``%u``. Everything
  else is expanded per device in a ``user`` block. ``%c`` (the client id, which a client
  chooses) is never used.
- Mosquitto keeps user blocks in a linked list: loading N blocks costs O(N^2) (10,000
  blocks about 1 s, 30,000 about 24 s on the reference machine), so per-device blocks are
  emitted only for devices that hold a currently valid certificate and need one.
- Disabled devices (and devices that a ``deny connect`` rule matches) get ``topic deny #``
  (plus ``$``-prefixed roots the patterns grant): Mosquitto cannot refuse a valid
  certificate at CONNECT when the identity comes from the certificate, so such a device
  may complete a connection but can neither publish nor receive anything.
- Quarantined devices get a ``user`` block of their own: a ``topic deny`` line for each
  ``pattern`` topic (with ``%u`` filled in), so the patterns grant them nothing, then the
  quarantine role's grants (their remediation topic). A pattern that overlaps the
  remediation topic shadows it (denies win): the compiler warns.
- A value that cannot be written safely into the file (control characters, a leading
  space, an over-long line) drops an allow line and widens a deny line to ``+`` / ``#``:
  never the other way round.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from iotsec.access.engine import CompiledPolicy
from iotsec.access.policy import Effect, Identity, Role, check_identity_value
from iotsec.access.quarantine import default_quarantine_role
from iotsec.access.topics import TopicFilter
from iotsec.broker.acl_grants import Grants, Template, Var, grants, intersect, overlap_warnings

__all__ = [
    "ADMIN_USER", "GATEWAY_USER", "INTERNAL_USERS", "LARGE_USER_BLOCKS", "MAX_EXPANSION",
    "MAX_LINE_BYTES", "PROBE_USER", "CompiledAcl", "FleetDevice", "compile_acl",
    "every_device_needs_block", "has_connect_denials", "writable"
]

#: Longest ACL line written (Mosquitto reads lines into a 1024-byte buffer).
MAX_LINE_BYTES = 1000
#: Cartesian expansions of multi-valued variables beyond this become ``+`` (deny) or are
#: dropped (allow) for one rule and one device.
MAX_EXPANSION = 256
#: Above this many user blocks, the compiler warns (Mosquitto's load time grows fast).
LARGE_USER_BLOCKS = 10_000
#: Usernames iotsec itself uses on the broker. They are not valid device ids (a device id
#: starts with a letter or digit), so no device can ever hold them.
ADMIN_USER = "_iotsec_admin"
PROBE_USER = "_iotsec_probe"
INTERNAL_USERS = (ADMIN_USER, PROBE_USER)
#: The CoAP gateway's bridge account. It may publish and receive every topic: the gateway
#: decides each CoAP request with the requesting device's roles before anything reaches the
#: broker (``iotsec gateway coap``).
GATEWAY_USER = "_iotsec_gateway"


@dataclass(frozen=True, slots=True)
class FleetDevice:
    """What the ACL needs to know about one registered device."""

    id: str
    #: Active or pending: the device may connect. Disabled and retired ones may not.
    enabled: bool
    #: Effective roles: the device's own, then those of its groups.
    roles: tuple[str, ...]
    groups: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)
    #: Serials of the device's certificates that are valid now (not expired, not revoked).
    serials: tuple[str, ...] = ()
    #: Quarantined: it may connect, but gets the quarantine role's rules only.
    quarantined: bool = False


@dataclass(frozen=True, slots=True)
class CompiledAcl:
    text: str
    pattern_lines: int
    user_blocks: int
    #: Devices refused everything (disabled, retired, or matched by a ``deny connect`` rule).
    blocked: tuple[str, ...]
    warnings: tuple[str, ...]
    #: Quarantined devices (given the quarantine role's rules only).
    quarantined: tuple[str, ...] = ()


def _pattern_text(t: Template) -> str | None:
    """The template as a ``pattern`` topic, or ``None`` if it must be expanded per device."""
    parts = []
    for level in t:
        if isinstance(level, Var):
            if level.name != "device.id":
                return None
            parts.append("%u")
        elif "%" in level:
            return None  # Mosquitto would substitute a literal '%u' or '%c'
        else:
            parts.append(level)
    return "/".join(parts)


def writable(value: str) -> bool:
    """Can this text be written into the ACL file and read back unchanged?"""
    return bool(value) and not value.startswith(" ") and all(" " <= c != "\x7f" for c in value)


def _values(device: FleetDevice, name: str) -> tuple[str, ...]:
    if name == "device.id":
        raw: Iterable[str | None] = (device.id,)
    elif name == "device.group":
        raw = device.groups
    elif name == "cert.serial":
        raw = device.serials
    elif name.startswith("device.attr."):
        raw = (device.attributes.get(name[12:]),)
    else:
        raw = ()
    out = []
    for v in raw:
        checked = check_identity_value(v)
        if checked is not None and writable(checked):
            out.append(checked)
    return tuple(out)


def _expand(t: Template, device: FleetDevice, *, deny: bool) -> list[tuple[str, ...]]:
    """Concrete filters (as levels) for one device. A deny widens what it cannot write."""
    choices: list[tuple[str, ...]] = []
    for level in t:
        if isinstance(level, Var):
            values = _values(device, level.name)
            if not values:
                if not deny:
                    return []
                values = ("+",)
            choices.append(values)
        else:
            choices.append((level,))
    if math.prod(map(len, choices)) > MAX_EXPANSION:
        if not deny:
            return []
        choices = [c if len(c) == 1 else ("+",) for c in choices]
    return [tuple(p) for p in itertools.product(*choices)]


def _fit_deny(levels: tuple[str, ...], prefix: str) -> str:
    """A deny filter that fits on one line: cut and end with '#' (a wider deny)."""
    text = "/".join(levels)
    if len((prefix + text).encode("utf-8")) <= MAX_LINE_BYTES:
        return text
    kept: list[str] = []
    for level in levels:
        candidate = "/".join([*kept, level, "#"])
        if len((prefix + candidate).encode("utf-8")) > MAX_LINE_BYTES:
            break
        kept.append(level)
    return "/".join([*kept, "#"])


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def grant(self, keyword: str, access: str, topic: str) -> None:
        line = f"{keyword} {access} {topic}"
        if not writable(topic) or len(line.encode("utf-8")) > MAX_LINE_BYTES:
            self.warnings.append(f"left out {access} on {topic[:60]!r}: it cannot be written "
                                 "into Mosquitto's ACL file (length or characters)")
            return
        self.lines.append(line)

    def deny(self, keyword: str, levels: tuple[str, ...]) -> None:
        safe = tuple(level if writable(level) else "+" for level in levels)
        self.lines.append(f"{keyword} deny " + _fit_deny(safe, f"{keyword} deny "))


def _merge(read: Iterable[str], write: Iterable[str]) -> list[tuple[str, str]]:
    """(access, topic) with read+write on the same topic as ``readwrite``; order kept."""
    reads = list(dict.fromkeys(read))
    writes = list(dict.fromkeys(write))
    both = set(reads) & set(writes)
    out = [("readwrite", t) for t in reads if t in both]
    out += [("read", t) for t in reads if t not in both]
    out += [("write", t) for t in writes if t not in both]
    return out


def _connect_denied(policy: CompiledPolicy, device: FleetDevice) -> bool:
    identity = Identity(device_id=device.id, groups=device.groups,
                        attributes=device.attributes, cert_cn=device.id, roles=device.roles)
    decision = policy.decide(identity, "connect", device.id)
    return not decision.allowed and decision.rule is not None


def _needs_every_device(base: Grants) -> bool:
    """Does a rule of the roles every device holds need per-device expansion (a variable
    other than the device id)? Then every device with a certificate needs a user block."""
    covered = {t for t in base.read if _pattern_text(t) is not None}
    covered_write = {t for t in base.write if _pattern_text(t) is not None}
    return (len(covered) < len(base.read) or len(covered_write) < len(base.write)
            or bool(base.read_pairs)
            or sum(_pattern_text(t) is not None for t in base.deny) < len(base.deny))


def has_connect_denials(roles: Sequence[Role]) -> bool:
    """Does a role deny ``connect``? Then each device is decided on its own (its id,
    groups and attributes) before the ACL is written."""
    return any(r.action == "connect" and r.effect is Effect.DENY
               for role in roles for r in role.rules)


def every_device_needs_block(roles: Sequence[Role], universal: Sequence[str]) -> bool:
    """Would :func:`compile_acl` write a user block for every device with a certificate,
    when ``universal`` are the roles every enabled device holds?"""
    by_name = {r.name: r for r in roles}
    return _needs_every_device(grants(r for name in universal if name in by_name
                                      for r in by_name[name].rules))


def compile_acl(roles: Sequence[Role], devices: Sequence[FleetDevice], *,
                new_device_roles: tuple[str, ...] | None = None,
                header: str = "", quarantine_role: Role | None = None) -> CompiledAcl:
    """Compile roles and the fleet into an ``acl_file`` (see the module docstring).

    ``new_device_roles`` are the roles a device registered later gets by default: they
    take part in choosing the pattern lines, so that such a device, until the next sync,
    is given no more than its roles allow (and an empty fleet still gets its patterns).
    ``quarantine_role``: the rules of quarantined devices (default: the built-in role)."""
    by_name = {r.name: r for r in roles}
    w = _Writer()
    deny_connect = has_connect_denials(roles)
    if any(r.action == "connect" and r.effect is Effect.ALLOW
           for role in roles for r in role.rules):
        w.warnings.append("allow connect rules need no broker line: the client id is the "
                          "certificate CN (use_username_as_clientid)")
    # Each identity carries its device's effective roles (``_connect_denied``).
    policy = CompiledPolicy(roles) if deny_connect else None
    blocked: list[FleetDevice] = []
    enabled: list[FleetDevice] = []
    quarantined: list[FleetDevice] = []
    for d in devices:
        if not d.enabled:
            blocked.append(d)
        elif d.quarantined:
            quarantined.append(d)
        elif policy is not None and _connect_denied(policy, d):
            blocked.append(d)
        else:
            enabled.append(d)
    # Roles every enabled device holds: their device-id-only rules can be pattern lines.
    universal: list[str] = []
    role_sets = [d.roles for d in enabled]
    if new_device_roles is not None:
        role_sets.append(new_device_roles)
    if role_sets:
        common = set(role_sets[0])
        for held in role_sets[1:]:
            if len(common) == 0:
                break
            common.intersection_update(held)
        universal = [r for r in role_sets[0] if r in common and r in by_name]
    if new_device_roles is not None and any(
            rule.effect is Effect.DENY for name in new_device_roles
            if name not in universal and name in by_name for rule in by_name[name].rules):
        # A device registered after this ACL has no user block: the patterns alone apply to
        # it, and they hold no deny of its other roles. A pattern could then allow what one
        # of those denies: no patterns (every enabled device gets its own block, and a new
        # device nothing until the next sync).
        universal = []
    base = grants(r for name in universal for r in by_name[name].rules)
    if new_device_roles is not None and any(_pattern_text(t) is None for t in base.deny):
        # A deny that no pattern can say (its topic names the device's group, an attribute
        # or its certificate's serial) would be missing for a device registered after this
        # ACL, which the patterns alone serve: no patterns, as above.
        universal = []
        base = grants(())
    w.warnings.extend(overlap_warnings(base))

    pattern_read = [p for p in (_pattern_text(t) for t in base.read) if p is not None]
    pattern_write = [p for p in (_pattern_text(t) for t in base.write) if p is not None]
    pattern_deny = [t for t in base.deny if _pattern_text(t) is not None]
    covered = {t for t in base.read if _pattern_text(t) is not None}
    covered_write = {t for t in base.write if _pattern_text(t) is not None}
    all_blocks = _needs_every_device(base)

    if header:
        w.lines.extend(f"# {line}" for line in header.splitlines())
    first = len(w.lines)
    for t in pattern_deny:
        w.deny("pattern", tuple(_pattern_text((level,)) or "+" for level in t))
    for access, topic in _merge(pattern_read, pattern_write):
        w.grant("pattern", access, topic)
    pattern_count = len(w.lines) - first

    # '$' roots the patterns grant: '#' does not reach them, so blocked users deny them too.
    dollar_roots = sorted({t.split("/", 1)[0] for t in pattern_read + pattern_write
                           if t.startswith("$")})
    blocks = 0
    for user in INTERNAL_USERS:
        w.lines += [f"user {user}", "topic deny #"]
        w.lines += [f"topic deny {root}/#" for root in dollar_roots]
        blocks += 1
    w.lines += [f"user {GATEWAY_USER}", "topic readwrite #"]
    blocks += 1
    for d in blocked:
        if not d.serials:
            continue  # no valid certificate: the TLS handshake already refuses it
        w.lines += [f"user {d.id}", "topic deny #"]
        w.lines += [f"topic deny {root}/#" for root in dollar_roots]
        blocks += 1

    cache: dict[tuple[str, ...], Grants] = {}
    universal_set = set(universal)
    for d in enabled:
        if not d.serials:
            continue  # cannot connect; its patterns alone would only grant less
        held = tuple(r for r in d.roles if r in by_name)
        if not all_blocks and all(r in universal_set for r in held):
            continue
        g = cache.get(held)
        if g is None:
            g = grants(r for name in held for r in by_name[name].rules)
            cache[held] = g
            if any(r not in universal_set for r in held):
                w.warnings.extend(f"roles {', '.join(held)}: {m}"
                                  for m in overlap_warnings(g))
        denies, reads, writes = _device_grants(g, d, covered, covered_write)
        if not reads and not writes and all(t in pattern_deny for t in g.deny):
            continue  # the pattern lines already say everything for this device
        w.lines.append(f"user {d.id}")
        for levels in denies:
            w.deny("topic", levels)
        for access, topic in _merge(reads, writes):
            w.grant("topic", access, topic)
        blocks += 1
    q_grants = grants((quarantine_role or default_quarantine_role()).rules)
    pattern_topics = list(dict.fromkeys(pattern_read + pattern_write))
    for d in quarantined:
        if not d.serials:
            continue
        q_denies, q_reads, q_writes = _device_grants(q_grants, d, set(), set())
        w.lines.append(f"user {d.id}")
        shut = [tuple(d.id if level == "%u" else level for level in p.split("/"))
                for p in pattern_topics]
        for levels in [*shut, *q_denies]:
            w.deny("topic", levels)
        w.lines += [f"topic deny {root}/#" for root in dollar_roots]
        for access, topic in _merge(q_reads, q_writes):
            w.grant("topic", access, topic)
            if any(TopicFilter.parse("/".join(x)).overlaps(TopicFilter.parse(topic))
                   for x in shut):
                w.warnings.append(f"the remediation topic {topic!r} of quarantined device "
                                  f"{d.id!r} overlaps a pattern line, whose deny shadows it")
        blocks += 1
    if blocks > LARGE_USER_BLOCKS:
        w.warnings.append(
            f"{blocks:,} per-device ACL blocks: Mosquitto loads them in quadratic time; put "
            "the rules every device shares into the role new devices get ('device'), with "
            "${device.id} as their only variable, so that they become pattern lines")
    return CompiledAcl(text="\n".join(w.lines) + "\n", pattern_lines=pattern_count,
                       user_blocks=blocks, blocked=tuple(d.id for d in blocked),
                       warnings=tuple(dict.fromkeys(w.warnings)),
                       quarantined=tuple(d.id for d in quarantined))


def _device_grants(g: Grants, d: FleetDevice, covered: set[Template],
                   covered_write: set[Template]
                   ) -> tuple[list[tuple[str, ...]], list[str], list[str]]:
    """The deny filters, read topics and write topics of ``g`` expanded for ``d``, leaving
    out what the pattern lines already grant (``covered``, ``covered_write``)."""
    denies: dict[tuple[str, ...], None] = {}
    for t in g.deny:
        for levels in _expand(t, d, deny=True):
            denies[levels] = None
    reads: list[str] = []
    writes: list[str] = []
    for t in g.read:
        if t not in covered:
            reads += ["/".join(x) for x in _expand(t, d, deny=False)]
    for t in g.write:
        if t not in covered_write:
            writes += ["/".join(x) for x in _expand(t, d, deny=False)]
    for r_t, s_t in g.read_pairs:
        for r in _expand(r_t, d, deny=False):
            for s in _expand(s_t, d, deny=False):
                both = intersect(r, s)
                if both is not None:
                    reads.append("/".join(str(x) for x in both))
    return list(denies), reads, writes
