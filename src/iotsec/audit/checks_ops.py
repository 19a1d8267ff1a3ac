"""Audit checks over operations: the policy, the broker's configuration and CRL, event
recording, firmware and operator tokens. Pure functions of a :class:`Snapshot`."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from iotsec.audit import rules as r
from iotsec.audit.model import CheckOutcome
from iotsec.audit.snapshot import DAY, AuditOptions, BrokerFacts, BrokerListener, Snapshot
from iotsec.findings.model import Finding, Location, Severity
from iotsec.timeutil import from_ts

__all__ = [
    "BROKER_RULES", "NO_BROKER", "PERMISSIVE_LINT", "Checked", "broker", "firmware_below_counter",
    "logging_disabled", "policy", "token_no_expiry"
]

Checked = tuple[list[Finding], CheckOutcome]

#: Policy lint codes (iotsec.access.lint) that grant too much; the others are mistakes.
PERMISSIVE_LINT = frozenset({"wildcard-all", "unscoped-shared-prefix", "connect-any"})
NO_BROKER = ("no broker directory is known: set IOTSEC_BROKER_DIR or pass --broker-dir DIR "
             "(a directory made by 'iotsec broker mosquitto render')")
BROKER_RULES = (r.BROKER_ANONYMOUS, r.BROKER_PLAINTEXT, r.BROKER_CRL_MISSING,
                r.BROKER_CRL_STALE)


def _when(seconds: int) -> str:
    return from_ts(seconds).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- policy


def policy(s: Snapshot, o: AuditOptions) -> list[Checked]:
    if s.lint is None:
        reason = "the policy could not be loaded"
        return [([], CheckOutcome(rule.id, 0, reason))
                for rule in (r.POLICY_PERMISSIVE, r.POLICY_MISCONFIGURED)]
    permissive: list[Finding] = []
    misconfigured: list[Finding] = []
    for item in s.lint:
        code, role, index = item.rule.code, item.location.name, item.location.index
        rule = r.POLICY_PERMISSIVE if code in PERMISSIVE_LINT else r.POLICY_MISCONFIGURED
        # The audit report's schema fixes a location's keys: the rule index goes in the
        # evidence (and stays in the uri), not in the location.
        finding = rule.at(
            replace(item.location, index=None), item.message, severity=item.severity,
            fix=f"{item.fix}: iotsec policy export > policy.yaml; edit role {role}; "
            "iotsec policy apply policy.yaml",
            evidence={"lint": code, "role": role, "rule_index": index})
        (permissive if rule is r.POLICY_PERMISSIVE else misconfigured).append(finding)
    return [(permissive, CheckOutcome(r.POLICY_PERMISSIVE.id, s.policy_roles)),
            (misconfigured, CheckOutcome(r.POLICY_MISCONFIGURED.id, s.policy_roles))]


# --------------------------------------------------------------------------- broker


def _broker_location(b: BrokerFacts, listener: BrokerListener | None = None) -> Location:
    if listener is None:
        return Location(uri=f"broker:{b.directory}", kind="broker", name=b.directory)
    return Location(uri=f"broker:{b.directory}#listener:{listener.port}", kind="broker",
                    name=b.directory, host=listener.bind, port=listener.port,
                    transport="tcp")


def _loopback(bind: str | None) -> bool:
    if bind is None:
        return False
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


def broker(s: Snapshot, o: AuditOptions) -> list[Checked]:
    b = s.broker
    if b is None or b.problem is not None:
        reason = NO_BROKER if b is None else f"the broker configuration: {b.problem}"
        return [([], CheckOutcome(rule.id, 0, reason)) for rule in BROKER_RULES]
    sync = f"iotsec broker mosquitto sync {b.directory}"
    render = f"iotsec broker mosquitto render -o {b.directory}"
    out: list[Checked] = []

    anonymous = []
    if b.allow_anonymous or b.per_listener_anonymous:
        where = ("every listener" if b.allow_anonymous else "listeners on port(s) "
                 + ", ".join(str(p) for p in b.per_listener_anonymous))
        anonymous.append(r.BROKER_ANONYMOUS.at(
            _broker_location(b), f"the broker allows anonymous clients on {where}",
            fix=f"set allow_anonymous false, or re-render it: {render}",
            evidence={"allow_anonymous": True,
                      "listeners": [str(p) for p in b.per_listener_anonymous]}))
    out.append((anonymous, CheckOutcome(r.BROKER_ANONYMOUS.id, 1)))

    plaintext = []
    network = [x for x in b.listeners if x.network]
    for x in network:
        if x.tls:
            continue
        local = _loopback(x.bind)
        bind = x.bind or "every interface"
        plaintext.append(r.BROKER_PLAINTEXT.at(
            _broker_location(b, x),
            f"listener {x.port} on {bind} accepts MQTT without TLS"
            + (" (loopback only)" if local else ""),
            severity=Severity.LOW if local else Severity.HIGH,
            fix=f"remove the plaintext listener and re-render without --plain-localhost: "
            f"{render}",
            evidence={"port": x.port, "bind": bind, "config_line": x.line}))
    out.append((plaintext, CheckOutcome(r.BROKER_PLAINTEXT.id, len(network))))

    missing = []
    tls = [x for x in network if x.tls and x.require_certificate]
    issuing = {a.subject for a in s.authorities if a.role == "issuing" and a.active}
    for x in tls:
        problem = None
        if x.crlfile is None:
            problem = "has no crlfile"
        elif b.crls is None:
            problem = f"has a crlfile that cannot be read ({b.crl_problem or 'unreadable'})"
        elif issuing and not issuing & {c.issuer for c in b.crls}:
            problem = "has a CRL, but none from the active issuing CA"
        if problem is not None:
            missing.append(r.BROKER_CRL_MISSING.at(
                _broker_location(b, x), f"TLS listener {x.port} {problem}: revoked "
                "certificates are accepted", fix=f"sync the broker: {sync}",
                evidence={"port": x.port, "crlfile": x.crlfile}))
    out.append((missing, CheckOutcome(r.BROKER_CRL_MISSING.id, len(tls))))

    stale = []
    subjects = {a.subject: a for a in s.authorities if a.active}
    for crl in b.crls or ():
        ca = subjects.get(crl.issuer)
        label = ca.role if ca else crl.issuer
        problems: list[tuple[Severity, str]] = []
        if crl.next_update is None or crl.next_update <= s.now:
            problems.append((Severity.CRITICAL, "is past its nextUpdate (Mosquitto refuses "
                             "every certificate of this CA)"))
        elif crl.next_update - s.now < o.crl_hours * 3600:
            problems.append((Severity.HIGH, f"reaches its nextUpdate in "
                             f"{round((crl.next_update - s.now) / 3600, 1)} hours"))
        store_number = s.crl_numbers.get(ca.id) if ca else None
        newest = s.last_revocation.get(ca.id) if ca else None
        if newest is not None and newest > crl.this_update:
            problems.append((Severity.HIGH, "misses revocations made after its thisUpdate "
                             f"({_when(crl.this_update)})"))
        elif store_number is not None and crl.number is not None \
                and crl.number < store_number and not crl.broker_scope:
            problems.append((Severity.MEDIUM, f"(number {crl.number}) is older than the "
                             f"store's (number {store_number})"))
        if not problems:
            continue
        stale.append(r.BROKER_CRL_STALE.at(
            Location(uri=f"broker:{b.directory}#crl:{label}", kind="broker",
                     name=b.directory),
            f"the broker's {label} CRL " + "; ".join(p for _, p in problems),
            severity=max((p for p, _ in problems), key=lambda v: v.rank),
            fix=f"sync the broker: {sync}",
            evidence={"issuer": crl.issuer, "number": crl.number,
                      "next_update": _when(crl.next_update) if crl.next_update else None,
                      "store_number": store_number}))
    out.append((stale, CheckOutcome(r.BROKER_CRL_STALE.id, len(b.crls or ()))))
    return out


# --------------------------------------------------------------------------- logging


def logging_disabled(s: Snapshot, o: AuditOptions) -> Checked:
    findings = []
    checked = 1
    window_h = round(o.window.total_seconds() / 3600, 1)
    active = len(s.active_devices)
    if s.events_in_window == 0 and active:
        findings.append(r.LOGGING_DISABLED.at(
            Location(uri="events:store", kind="events", name="security events"),
            f"no security event was recorded in the last {window_h} hours while {active} "
            "devices are active",
            fix="check that the API server and the broker log ingestion run: iotsec serve; "
            "iotsec broker mosquitto ingest-log DIR",
            evidence={"active_devices": active, "window_hours": window_h}))
    b = s.broker
    if b is not None and b.problem is None:
        checked += 1
        where = Location(uri=f"broker:{b.directory}#log", kind="broker", name=b.directory)
        render = f"iotsec broker mosquitto render -o {b.directory}"
        ingest = f"iotsec broker mosquitto ingest-log {b.directory}"
        if b.log_file is None:
            findings.append(r.LOGGING_DISABLED.at(
                where, "the broker does not log to a file iotsec can ingest",
                fix=f"re-render the broker (log_dest file): {render}",
                evidence={"log_dest": "none"}))
        elif not b.connection_messages:
            findings.append(r.LOGGING_DISABLED.at(
                where, "the broker does not log connections (connection_messages false)",
                fix=f"re-render the broker (connection_messages true): {render}",
                evidence={"connection_messages": False}))
        unread = b.log_size - (b.ingested_offset or 0)
        if b.log_file is not None and unread > 0 and (
                b.ingested_at is None or s.now - b.ingested_at > o.window.total_seconds()):
            last = _when(b.ingested_at) if b.ingested_at is not None else "never"
            findings.append(r.LOGGING_DISABLED.at(
                Location(uri=f"broker:{b.directory}#ingest", kind="broker", name=b.directory),
                f"the broker log is not being ingested ({unread} bytes unread; last ingested "
                f"{last})",
                fix=f"ingest it now and regularly (e.g. from cron): {ingest}",
                evidence={"log_file": b.log_file, "unread_bytes": unread,
                          "last_ingest": last}))
    return findings, CheckOutcome(r.LOGGING_DISABLED.id, checked)


# --------------------------------------------------------------------------- firmware


def firmware_below_counter(s: Snapshot, o: AuditOptions) -> Checked:
    findings = []
    checked = 0
    by_product: dict[str, list[int]] = {}
    for (product, _), counter in s.channel_counters.items():
        by_product.setdefault(product, []).append(counter)
    for f in s.firmware:
        if f.product is None or f.product not in by_product:
            continue
        checked += 1
        if f.channel is not None and (f.product, f.channel) in s.channel_counters:
            required, channel = s.channel_counters[(f.product, f.channel)], f.channel
        else:
            # The channel is unknown: judge against the least any channel requires, so a
            # device is flagged only when it is behind every channel of its product.
            required, channel = min(by_product[f.product]), None
        if f.running_counter >= required:
            continue
        findings.append(r.FIRMWARE_BELOW_COUNTER.at(
            Location(uri=f"device:{f.device_id}", kind="device", name=f.device_id,
                     device=f.device_id),
            f"device {f.device_id} runs {f.product} {f.version} (security counter "
            f"{f.running_counter}); {'channel ' + channel if channel else 'every channel'} "
            f"requires {required}",
            fix=f"roll the current release out to it: iotsec ota campaign create --name "
            f"update-{f.device_id} --product {f.product}"
            + (f" --channel {channel}" if channel else "") + " --device " + f.device_id,
            evidence={"device": f.device_id, "product": f.product, "version": f.version,
                      "security_counter": f.running_counter, "required": required,
                      "channel": channel}))
    skipped = None if checked else "no device has reported firmware of a published product"
    return findings, CheckOutcome(r.FIRMWARE_BELOW_COUNTER.id, checked, skipped)


# --------------------------------------------------------------------------- tokens


def token_no_expiry(s: Snapshot, o: AuditOptions) -> Checked:
    findings = []
    live = [t for t in s.tokens if t.expires_at is None or t.expires_at > s.now]
    names: dict[str, int] = {}
    for t in live:
        names[t.name] = names.get(t.name, 0) + 1
    unused_limit = o.token_unused_days * DAY
    for t in live:
        problems: list[tuple[Severity, str]] = []
        if t.expires_at is None:
            severity = {"admin": Severity.HIGH, "operator": Severity.MEDIUM}.get(
                t.scope, Severity.LOW)
            problems.append((severity, "never expires"))
        last = t.last_used_at if t.last_used_at is not None else t.created_at
        if s.now - last > unused_limit:
            what = "was never used" if t.last_used_at is None else "has not been used"
            problems.append((Severity.MEDIUM, f"{what} for {s.days(s.now - last)} days"))
        if not problems:
            continue
        uri = f"token:{t.name}" if names[t.name] == 1 else f"token:{t.name}#{t.id}"
        findings.append(r.TOKEN_NO_EXPIRY.at(
            Location(uri=uri, kind="token", name=t.name),
            f"{t.scope} token '{t.name}' " + " and ".join(p for _, p in problems),
            severity=max((p for p, _ in problems), key=lambda v: v.rank),
            # Create first: the last admin token cannot be revoked.
            fix=f"iotsec token create {t.name} --scope {t.scope} --expires 90d; "
            f"iotsec token revoke {t.id}",
            evidence={"id": t.id, "scope": t.scope,
                      "expires_at": _when(t.expires_at) if t.expires_at else None,
                      "last_used_at": _when(t.last_used_at) if t.last_used_at else None}))
    return findings, CheckOutcome(r.TOKEN_NO_EXPIRY.id, len(live))
