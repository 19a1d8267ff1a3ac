"""Audit checks over identities in use: one key on several devices, one identity from
several addresses at once, conflicting MQTT client ids. Pure functions of a
:class:`Snapshot`."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable

from iotsec.audit import rules as r
from iotsec.audit.checks_pki import CONNECT_KINDS, Checked, device_location, when
from iotsec.audit.model import CheckOutcome
from iotsec.audit.snapshot import AuditOptions, EventFacts, Snapshot
from iotsec.findings.model import Location

__all__ = ["client_id_conflict", "shared_certificate"]


def _host(source: str | None) -> str | None:
    if not source:
        return None
    host = source.rsplit(":", 1)[0] if source.count(":") == 1 or source.startswith("[") \
        else source
    return host.strip("[]") or None


def _overlaps(events: Iterable[EventFacts]) -> dict[str, list[tuple[int, str, str]]]:
    """Per identity: (time, open address, new address) where a session started from one
    address while a session from another was still open (no disconnect in between)."""
    open_at: dict[str, dict[str, int]] = defaultdict(dict)  # actor -> host -> since
    found: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    events = list(events)
    # An identity seen in one event cannot overlap with itself: most of a fleet.
    counts = Counter(e.actor for e in events)
    for e in events:
        actor = e.actor
        if not actor or counts[actor] < 2:
            continue
        host = _host(e.source)
        sessions = open_at[actor]
        if e.kind in CONNECT_KINDS and host:
            if e.kind == "broker.collision":
                previous = e.detail.get("previous_source")
                prev_host = _host(previous) if isinstance(previous, str) else None
                if prev_host:
                    sessions.setdefault(prev_host, e.at)
            for other in sessions:
                if other != host:
                    found[actor].append((e.at, other, host))
            if e.kind == "broker.collision":
                sessions.clear()  # the broker ended the older session
            sessions[host] = e.at
        elif e.kind == "broker.disconnect":
            if host is not None:
                sessions.pop(host, None)
            else:
                sessions.clear()
    return found


def shared_certificate(s: Snapshot, o: AuditOptions) -> Checked:
    findings = []
    # Most keys are held once: remember the first holder, group only on a second one.
    first: dict[bytes, tuple[str, str]] = {}
    shared: dict[bytes, dict[str, list[str]]] = {}

    def hold(spki: bytes, device: str, use: str) -> None:
        seen = first.setdefault(spki, (device, use))
        if seen[1] is use:
            return
        group = shared.get(spki)
        if group is None:
            group = shared[spki] = defaultdict(list)
            group[seen[0]].append(seen[1])
        group[device].append(use)

    for c in s.live_certs:
        if c.device_id is not None and c.facts is not None:
            hold(c.facts.spki, c.device_id, "cert " + c.serial)
    for k in s.device_keys:
        hold(k.spki, k.device_id, "key " + k.kid)
    for spki, devices in shared.items():
        if len(devices) < 2:
            continue
        digest = hashlib.sha256(spki).hexdigest()
        names = sorted(devices)
        used = sorted(u for uses in devices.values() for u in uses)
        serials = [u.split(" ", 1)[1] for u in used if u.startswith("cert ")]
        fix = "; ".join(f"iotsec cert revoke {sn} --reason keyCompromise" for sn in serials[:5])
        findings.append(r.SHARED_CERTIFICATE.at(
            Location(uri=f"key:{digest}", kind="public-key", name=digest[:16]),
            f"one public key is registered for {len(names)} devices: {', '.join(names[:5])}"
            + ("..." if len(names) > 5 else ""),
            fix=(fix or "revoke the shared keys: iotsec device-token key revoke KID")
            + "; then give each device its own key",
            evidence={"devices": names, "uses": used, "spki_sha256": digest}))
    connections = [e for e in s.events if e.kind in (*CONNECT_KINDS, "broker.disconnect")]
    for actor, overlaps in sorted(_overlaps(connections).items()):
        addresses = sorted({a for _, x, y in overlaps for a in (x, y)})
        findings.append(r.SHARED_CERTIFICATE.at(
            device_location(actor),
            f"identity {actor} was connected from {len(addresses)} addresses at the same time",
            fix=f"iotsec cert revoke --device {actor} --reason keyCompromise; iotsec device "
            f"disable {actor} (then re-provision the genuine device)",
            evidence={"device": actor, "addresses": addresses, "overlaps": len(overlaps),
                      "first": when(overlaps[0][0])}))
    checked = len(first) + len({e.actor for e in connections if e.actor})
    return findings, CheckOutcome(r.SHARED_CERTIFICATE.id, checked)


def client_id_conflict(s: Snapshot, o: AuditOptions) -> Checked:
    findings = []
    collisions: dict[str, list[EventFacts]] = defaultdict(list)
    foreign: dict[str, list[EventFacts]] = defaultdict(list)
    examined = 0
    for e in s.events:
        if e.kind == "broker.collision" and e.actor:
            examined += 1
            collisions[e.actor].append(e)
        elif e.kind == "broker.connect" and e.actor:
            examined += 1
            cid = e.detail.get("client_id")
            if isinstance(cid, str) and cid != e.actor:
                foreign[cid].append(e)
    for cid, events in sorted(collisions.items()):
        sources = sorted({x for e in events for x in (e.source, e.detail.get("previous_source"))
                          if isinstance(x, str) and x})
        findings.append(r.CLIENT_ID_CONFLICT.at(
            device_location(cid),
            f"a second connection took over client id {cid}'s session {len(events)} time(s)",
            fix=f"iotsec cert revoke --device {cid} --reason keyCompromise; iotsec device "
            f"disable {cid} (then re-provision the genuine device)",
            evidence={"device": cid, "collisions": len(events), "sources": sources,
                      "last": when(events[-1].at)}))
    for cid, events in sorted(foreign.items()):
        users = sorted({e.actor or "" for e in events})
        findings.append(r.CLIENT_ID_CONFLICT.at(
            Location(uri=f"client:{cid}", kind="client-id", name=cid),
            f"client id {cid} was used by identities that do not own it: {', '.join(users)}",
            fix="re-render the broker so the client id is the certificate's identity "
            "(use_username_as_clientid): iotsec broker mosquitto render -o DIR",
            evidence={"client_id": cid, "identities": users, "connections": len(events)}))
    return findings, CheckOutcome(r.CLIENT_ID_CONFLICT.id, examined)
