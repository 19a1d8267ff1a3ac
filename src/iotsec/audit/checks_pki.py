"""Audit checks over the PKI: CA and device certificates, keys, and revocation in
practice. Pure functions of a :class:`Snapshot`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from iotsec.audit import rules as r
from iotsec.audit.keyinfo import CertKeyFacts, KeyFacts
from iotsec.audit.model import CheckOutcome
from iotsec.audit.snapshot import DAY, AuditOptions, CertFacts, EventFacts, Snapshot
from iotsec.findings.model import Finding, Location, Severity
from iotsec.timeutil import from_ts

__all__ = [
    "CONNECT_KINDS", "IDENTITY_KINDS", "Checked", "ca_expiring", "ca_key_problems", "ca_location",
    "ca_weak_key", "cert_location", "device_cert_expiring", "device_cert_old",
    "device_key_problem", "device_location", "device_weak_key", "revoked_ca_active_certs",
    "revoked_cert_connecting", "when"
]

Checked = tuple[list[Finding], CheckOutcome]

CONNECT_KINDS = ("broker.connect", "broker.collision")
#: Events that show an identity in use: its certificate's history matters.
IDENTITY_KINDS = (*CONNECT_KINDS, "device-token")


def when(seconds: int) -> str:
    return from_ts(seconds).isoformat().replace("+00:00", "Z")


def ca_location(label: str, subject: str) -> Location:
    return Location(uri=f"ca:{label}", kind="ca", name=subject)


def cert_location(serial: str, device: str | None) -> Location:
    return Location(uri=f"cert:{serial}", kind="certificate", name=serial, device=device)


def device_location(device: str) -> Location:
    return Location(uri=f"device:{device}", kind="device", name=device, device=device)


def _worst(severities: Iterable[Severity]) -> Severity:
    return max(severities, key=lambda s: s.rank)


# --------------------------------------------------------------------------- CAs


def ca_expiring(s: Snapshot, o: AuditOptions) -> Checked:
    findings = []
    active = [a for a in s.authorities if a.active]
    for a in active:
        left = a.not_after - s.now
        if left > o.ca_days * DAY:
            continue
        severity = Severity.CRITICAL if left < 30 * DAY else Severity.HIGH
        what = "has expired" if left <= 0 else f"expires in {s.days(left)} days"
        findings.append(r.CA_EXPIRING.at(
            ca_location(a.label, a.subject), f"the {a.role} CA certificate {what}",
            severity=severity,
            evidence={"subject": a.subject, "not_after": when(a.not_after),
                      "days_left": s.days(left), "threshold_days": o.ca_days}))
    return findings, CheckOutcome(r.CA_EXPIRING.id, len(active))


def ca_key_problems(facts: CertKeyFacts) -> list[tuple[Severity, str]]:
    key, problems = facts.key, []
    if key.algorithm == "rsa" and key.bits < 2048:
        problems.append((Severity.CRITICAL, f"RSA key of {key.bits} bits (below 2048)"))
    elif key.algorithm == "rsa" and key.bits < 3072:
        problems.append((Severity.HIGH, f"RSA key of {key.bits} bits (policy: 3072 or more)"))
    elif key.algorithm == "ec" and key.bits < 256:
        problems.append((Severity.HIGH, f"EC key on {key.curve} (below P-256)"))
    elif key.algorithm in ("dsa", "unknown"):
        problems.append((Severity.HIGH, f"{key.label} key (not an accepted CA algorithm)"))
    if facts.weak_signature:
        problems.append((Severity.HIGH, f"certificate signed with {facts.signature}"))
    return problems


def ca_weak_key(s: Snapshot, o: AuditOptions) -> Checked:
    findings = []
    active = [a for a in s.authorities if a.active]
    for a in active:
        if a.facts is None:
            problems = [(Severity.HIGH, "the CA certificate could not be read")]
            key_label, signature = "unreadable", "unreadable"
        else:
            problems = ca_key_problems(a.facts)
            key_label, signature = a.facts.key.label, a.facts.signature
        if not problems:
            continue
        findings.append(r.CA_WEAK_KEY.at(
            ca_location(a.label, a.subject),
            f"the {a.role} CA has a " + "; ".join(p for _, p in problems),
            severity=_worst(s for s, _ in problems),
            evidence={"subject": a.subject, "key": key_label, "signature": signature}))
    return findings, CheckOutcome(r.CA_WEAK_KEY.id, len(active))


# --------------------------------------------------------------------------- device certs


def device_cert_expiring(s: Snapshot, o: AuditOptions) -> Checked:
    findings = []
    live = s.live_by_device()
    past = s.past_by_device()
    states = s.device_states
    limit = s.now + o.cert_days * DAY
    checked = 0
    for device, valid in live.items():
        if states.get(device) != "active":
            continue
        checked += 1
        if len(valid) == 1:
            newest = valid[0]
        else:
            # A certificate already superseded (revocation scheduled) is not the one in use.
            current = [c for c in valid if c.revoked_at is None] or valid
            newest = max(current, key=lambda c: c.not_after)
        if newest.not_after > limit:
            continue
        left = newest.not_after - s.now
        findings.append(r.DEVICE_CERT_EXPIRING.at(
            cert_location(newest.serial, device),
            f"device {device}'s newest certificate expires in {s.days(left)} days",
            severity=Severity.HIGH if left < 7 * DAY else Severity.MEDIUM,
            fix=f"renew it from a new CSR: iotsec cert renew {newest.serial} --csr FILE",
            evidence={"device": device, "serial": newest.serial,
                      "not_after": when(newest.not_after), "days_left": s.days(left),
                      "threshold_days": o.cert_days}))
    for device, state in states.items():
        if state != "active" or device in live:
            continue
        old = past.get(device)
        if not old:
            continue  # no certificate at all: a device that authenticates otherwise
        checked += 1
        if all(c.revoked_by(s.now) for c in old):
            continue  # revoked, not expired: the revocation checks judge it
        newest = max(old, key=lambda c: c.not_after)
        findings.append(r.DEVICE_CERT_EXPIRING.at(
            device_location(device),
            f"active device {device} has no valid certificate: all {len(old)} have expired "
            "or been revoked",
            severity=Severity.HIGH,
            fix=f"issue a new certificate from a new CSR: iotsec cert issue {device} --csr "
            "FILE (or retire the device: iotsec device retire " + device + ")",
            evidence={"device": device, "certificates": len(old),
                      "newest_serial": newest.serial,
                      "expired_at": when(newest.not_after)}))
    return findings, CheckOutcome(r.DEVICE_CERT_EXPIRING.id, checked)


def device_cert_old(s: Snapshot, o: AuditOptions) -> Checked:
    findings = []
    limit = o.max_cert_age * DAY
    in_use = [c for c in s.live_certs if c.kind == "device" and c.revoked_at is None
              and c.device_id is not None and s.device_states.get(c.device_id) == "active"]
    for c in in_use:
        age = s.now - c.not_before
        if age <= limit:
            continue
        device = c.device_id or ""
        findings.append(r.DEVICE_CERT_OLD.at(
            cert_location(c.serial, device),
            f"device {device}'s certificate was issued {s.days(age)} days ago "
            f"(rotation policy: {o.max_cert_age} days)",
            severity=Severity.MEDIUM if age > 2 * limit else Severity.LOW,
            fix=f"rotate it: iotsec cert renew {c.serial} --csr FILE",
            evidence={"device": device, "serial": c.serial, "not_before": when(c.not_before),
                      "age_days": s.days(age), "max_age_days": o.max_cert_age}))
    return findings, CheckOutcome(r.DEVICE_CERT_OLD.id, len(in_use))


def device_key_problem(key: KeyFacts | None) -> tuple[Severity, str] | None:
    if key is None:
        return Severity.MEDIUM, "the key could not be read"
    if key.algorithm == "rsa" and key.bits < 1024:
        return Severity.CRITICAL, f"RSA key of {key.bits} bits"
    if key.algorithm == "rsa" and key.bits < 2048:
        return Severity.HIGH, f"RSA key of {key.bits} bits (below 2048)"
    if key.algorithm == "ec" and key.bits < 256:
        return Severity.HIGH, f"EC key on {key.curve} (below P-256)"
    if key.algorithm in ("dsa", "unknown"):
        return Severity.HIGH, f"{key.label} key (not an accepted algorithm)"
    return None


def device_weak_key(s: Snapshot, o: AuditOptions) -> Checked:
    findings = []
    certs = [c for c in s.live_certs if c.kind == "device"]
    for c in certs:
        problem = device_key_problem(c.facts.key if c.facts else None)
        if problem is None:
            continue
        device = c.device_id or ""
        findings.append(r.DEVICE_WEAK_KEY.at(
            cert_location(c.serial, c.device_id),
            f"device {device}'s certificate has a {problem[1]}", severity=problem[0],
            fix=f"have the device generate an EC P-256 key, issue a certificate for it, then "
            f"revoke this one: iotsec cert revoke {c.serial} --reason superseded",
            evidence={"device": device, "serial": c.serial,
                      "key": c.facts.key.label if c.facts else "unreadable"}))
    for k in s.device_keys:
        problem = device_key_problem(k.key)
        if problem is None:
            continue
        findings.append(r.DEVICE_WEAK_KEY.at(
            Location(uri=f"device:{k.device_id}#key:{k.kid}", kind="device-key", name=k.kid,
                     device=k.device_id),
            f"device {k.device_id}'s registered token key {k.kid} has a {problem[1]}",
            severity=problem[0],
            fix=f"register an EC P-256 or Ed25519 key and revoke this one: iotsec "
            f"device-token key revoke {k.kid}",
            evidence={"device": k.device_id, "kid": k.kid, "algorithm": k.algorithm,
                      "key": k.key.label if k.key else "unreadable"}))
    return findings, CheckOutcome(r.DEVICE_WEAK_KEY.id, len(certs) + len(s.device_keys))


# --------------------------------------------------------------------------- revocation


def revoked_cert_connecting(s: Snapshot, o: AuditOptions) -> Checked:
    findings = []
    live, past = s.live_by_device(), s.past_by_device()
    serials: dict[str, CertFacts] = {}
    examined = 0
    token_uses: dict[str, list[int]] = defaultdict(list)
    connects: dict[str, list[EventFacts]] = defaultdict(list)
    since = min((e.at for e in s.events), default=s.now)
    # A device holding a certificate valid since before the first event (and still valid)
    # was entitled to connect at any time in the window: nothing to look at.
    entitled = {c.device_id for c in s.live_certs
                if c.not_before <= since and c.kind == "device"}
    for e in s.events:
        if e.kind == "device-token" and e.outcome == "success":
            examined += 1
            kid = e.detail.get("kid")
            if not isinstance(kid, str):
                continue
            if not serials:
                serials = {c.serial: c for c in (*s.live_certs, *s.past_certs)}
            cert = serials.get(kid)
            if cert is not None and cert.revoked_before(e.at):
                token_uses[cert.serial].append(e.at)
        elif e.kind in CONNECT_KINDS and e.actor:
            examined += 1
            if e.actor in entitled:
                continue
            certs = [*live.get(e.actor, ()), *past.get(e.actor, ())]
            if certs and not any(c.may_be_valid_at(e.at) for c in certs) and \
                    any(c.revoked_before(e.at) for c in certs):
                connects[e.actor].append(e)
    for serial, times in sorted(token_uses.items()):
        cert = serials[serial]
        findings.append(r.REVOKED_CERT_CONNECTING.at(
            cert_location(serial, cert.device_id),
            f"revoked certificate {serial} signed {len(times)} accepted device token(s) after "
            "its revocation",
            fix=f"disable the device and find why the revoked key is accepted: iotsec device "
            f"disable {cert.device_id}",
            evidence={"device": cert.device_id, "serial": serial,
                      "revoked_at": when(cert.revoked_at or 0), "uses": len(times),
                      "last_use": when(max(times))}))
    for device, events in sorted(connects.items()):
        revoked = [c for c in (*live.get(device, ()), *past.get(device, ()))
                   if c.revoked_at is not None]
        last_revoked = max(c.revoked_at or 0 for c in revoked)
        sources = sorted({e.source for e in events if e.source})
        findings.append(r.REVOKED_CERT_CONNECTING.at(
            device_location(device),
            f"device {device}, whose certificates are all revoked, connected to the broker "
            f"{len(events)} time(s) after the revocation",
            fix=f"iotsec device disable {device}; iotsec broker mosquitto sync DIR (the "
            "broker's CRL is behind)",
            evidence={"device": device, "connections": len(events),
                      "revoked_at": when(last_revoked), "last_connect": when(events[-1].at),
                      "sources": sources,
                      "serials": sorted(c.serial for c in revoked)}))
    return findings, CheckOutcome(r.REVOKED_CERT_CONNECTING.id, examined)


def revoked_ca_active_certs(s: Snapshot, o: AuditOptions) -> Checked:
    findings = []
    retired = {a.id: a for a in s.authorities
               if a.role == "issuing" and (not a.active or a.revoked_at is not None)}
    for c in s.live_certs:
        ca = retired.get(c.authority_id)
        if ca is None or c.kind != "device" or c.revoked_at is not None:
            continue
        if ca.revoked_at is None and ca.state == "retiring":
            # A rollover's overlap: the certificate still works; the device should move to
            # the new CA before the overlap ends ('ca retire').
            findings.append(r.REVOKED_CA_ACTIVE_CERTS.at(
                cert_location(c.serial, c.device_id),
                f"certificate {c.serial} of device {c.device_id} is from the retiring CA "
                f"{ca.id}: it stops working when that CA is retired",
                severity=Severity.MEDIUM,
                fix="re-enrol the device onto the active CA (EST simplereenroll, or "
                f"iotsec cert renew {c.serial} --csr FILE) before 'iotsec ca retire {ca.id}'",
                evidence={"device": c.device_id, "serial": c.serial, "ca": ca.subject,
                          "ca_id": ca.id, "not_after": when(c.not_after)}))
            continue
        state = "was revoked" if ca.revoked_at is not None else "is no longer active"
        findings.append(r.REVOKED_CA_ACTIVE_CERTS.at(
            cert_location(c.serial, c.device_id),
            f"certificate {c.serial} of device {c.device_id} is still valid, but its issuing "
            f"CA {state}",
            severity=Severity.CRITICAL if ca.revoked_at is not None else Severity.HIGH,
            fix=f"iotsec cert revoke {c.serial} --reason "
            + ("cACompromise" if ca.revoked_at is not None else "superseded")
            + f", then issue a new certificate: iotsec cert issue {c.device_id} --csr FILE",
            evidence={"device": c.device_id, "serial": c.serial, "ca": ca.subject,
                      "ca_id": ca.id, "not_after": when(c.not_after)}))
    checked = len(s.live_certs)
    return findings, CheckOutcome(r.REVOKED_CA_ACTIVE_CERTS.id, checked)
