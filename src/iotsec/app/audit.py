"""The fleet audit service: load a snapshot of the fleet's state with set-based queries,
run the pure checks of :mod:`iotsec.audit`, record an ``audit.run`` event.

Only the certificates valid now are read with their DER (for their keys, read from the
SubjectPublicKeyInfo without a full X.509 parse); expired and revoked certificates are read
without it, and only for the devices that matter (active devices without a valid
certificate, devices seen connecting in the window). Broker facts come from the rendered
Mosquitto directory (``--broker-dir`` or ``IOTSEC_BROKER_DIR``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from sqlalchemy import Connection, and_, func, or_, select

from iotsec.app.access.policy import lint_policy
from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.audit.brokerconf import MAX_CONF_BYTES, MAX_CRL_BYTES, parse_conf, parse_crls
from iotsec.audit.checks import history_needed, run_checks
from iotsec.audit.keyinfo import KeyReadError, certificate_facts, spki_facts
from iotsec.audit.model import AuditResult
from iotsec.audit.snapshot import (
    AuditOptions,
    AuthorityFacts,
    BrokerFacts,
    CertFacts,
    DeviceKeyFacts,
    EventFacts,
    FirmwareFacts,
    Snapshot,
    TokenFacts,
)
from iotsec.broker.mosquitto import Layout
from iotsec.errors import AuditBrokerDirError, IotsecError
from iotsec.findings.model import count_by_severity
from iotsec.firmware.image import ImageVersion
from iotsec.pki.serial import format_serial
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import ts

__all__ = ["EVENT_KINDS", "load_snapshot", "run_audit"]

#: The events the checks read (the window's connections, collisions and token uses).
EVENT_KINDS = ("broker.connect", "broker.disconnect", "broker.collision", "device-token")
MAX_DETAIL = 4096
FETCH = 20_000
CHUNK = 500


def _live(c: Any, now: int) -> Any:
    return and_(c.not_after > now, c.not_before <= now,
                or_(c.revoked_at.is_(None), c.revoked_at > now))


def _authorities(conn: Connection) -> list[AuthorityFacts]:
    a = m.authorities.c
    rows = conn.execute(select(a.id, a.role, a.subject, a.cert_der, a.not_after, a.active,
                               a.state).order_by(a.id)).all()
    out = []
    for row in rows:
        try:
            facts = certificate_facts(row.cert_der)
            serial = format_serial(x509.load_der_x509_certificate(row.cert_der).serial_number)
        except (KeyReadError, ValueError):
            facts, serial = None, ""
        out.append(AuthorityFacts(id=row.id, role=row.role, subject=row.subject,
                                  not_after=row.not_after, active=bool(row.active),
                                  serial=serial, facts=facts, state=row.state))
    serials = [x.serial for x in out if x.serial]
    if serials:
        c = m.certificates.c
        revoked = dict(conn.execute(select(c.serial, c.revoked_at).where(
            c.serial.in_(serials), c.revoked_at.is_not(None))).all())
        out = [AuthorityFacts(id=x.id, role=x.role, subject=x.subject, not_after=x.not_after,
                              active=x.active, serial=x.serial, facts=x.facts,
                              revoked_at=revoked.get(x.serial), state=x.state) for x in out]
    return out


def _live_certs(conn: Connection, now: int) -> list[CertFacts]:
    c = m.certificates.c
    result = conn.execute(
        select(c.serial, c.device_id, c.authority_id, c.kind, c.not_before, c.not_after,
               c.revoked_at, c.der).where(_live(c, now))
        .execution_options(stream_results=True, max_row_buffer=FETCH))
    out = []
    for serial, device, authority, kind, nb, na, revoked, der in result:
        try:
            facts = certificate_facts(der)
        except KeyReadError:
            facts = None
        out.append(CertFacts(serial, device, authority, kind, nb, na, revoked, facts))
    return out


def _past_certs(conn: Connection, now: int, devices: Iterable[str]) -> list[CertFacts]:
    """Expired or revoked certificates of ``devices`` (without their DER), in chunks that
    use the device index."""
    c = m.certificates.c
    out: list[CertFacts] = []
    ids = sorted(devices)
    for i in range(0, len(ids), CHUNK):
        rows = conn.execute(
            select(c.serial, c.device_id, c.authority_id, c.kind, c.not_before, c.not_after,
                   c.revoked_at)
            .where(c.device_id.in_(ids[i:i + CHUNK]), ~_live(c, now))).all()
        out.extend(CertFacts(*row) for row in rows)
    return out


def _detail(kind: str, actor: str | None, text: str) -> dict[str, object]:
    """The parts of an event's detail the checks read. A connection whose client id is its
    own identity (the rendered broker's rule) is recognised without a JSON parse: device
    ids cannot contain quotes or escapes, and the detail is written with sorted keys."""
    if kind == "broker.disconnect" or len(text) > MAX_DETAIL:
        return {}
    if kind == "broker.connect" and actor is not None and \
            f'"client_id": "{actor}"' in text:
        return {"client_id": actor}
    try:
        parsed = json.loads(text)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _events(conn: Connection, since: int) -> tuple[list[EventFacts], int]:
    e = m.events.c
    total = int(conn.execute(select(func.count()).select_from(m.events)
                             .where(e.at >= since)).scalar_one())
    rows = conn.execute(
        select(e.at, e.kind, e.outcome, e.actor, e.source, e.detail)
        .where(e.at >= since, e.kind.in_(EVENT_KINDS)).order_by(e.at, e.id)).all()
    return [EventFacts(at, kind, outcome, actor, source, _detail(kind, actor, detail))
            for at, kind, outcome, actor, source, detail in rows], total


def _device_keys(conn: Connection) -> list[DeviceKeyFacts]:
    k = m.device_keys.c
    out = []
    for kid, device, algorithm, spki in conn.execute(
            select(k.kid, k.device_id, k.algorithm, k.public_key_der)
            .where(k.revoked_at.is_(None), k.source == "registered")):
        try:
            key = spki_facts(spki)
        except KeyReadError:
            key = None
        out.append(DeviceKeyFacts(kid, device, algorithm, key, bytes(spki)))
    return out


def _tokens(conn: Connection) -> list[TokenFacts]:
    t = m.api_tokens.c
    return [TokenFacts(*row) for row in conn.execute(
        select(t.id, t.name, t.role, t.created_at, t.expires_at, t.last_used_at)
        .where(t.revoked.is_(False)).order_by(t.name, t.id))]


def _version_key(text: str) -> str:
    try:
        return str(ImageVersion.parse(text))
    except (IotsecError, ValueError):
        return text


def _firmware(conn: Connection) -> tuple[list[FirmwareFacts], dict[tuple[str, str], int]]:
    r = m.ota_releases.c
    releases = conn.execute(select(r.id, r.product, r.channel, r.version, r.security_counter)
                            .order_by(r.id)).all()
    heads: dict[tuple[str, str], int] = {}
    counters: dict[tuple[str, str], int] = {}
    for _, product, channel, version, counter in releases:
        heads[(product, channel)] = counter or 0  # ordered by id: the last is the head
        key = (product, _version_key(version))
        counters[key] = max(counters.get(key, 0), counter or 0)
    f = m.ota_device_firmware.c
    cd = m.ota_campaign_devices.c
    oc = m.ota_campaigns.c
    latest = (select(cd.device_id, func.max(cd.campaign_id).label("campaign_id"))
              .group_by(cd.device_id).subquery())
    channels = dict(conn.execute(
        select(latest.c.device_id, r.channel)
        .join(m.ota_campaigns, oc.id == latest.c.campaign_id)
        .join(m.ota_releases, r.id == oc.release_id)).all())
    out = []
    for device, product, version, recorded in conn.execute(
            select(f.device_id, f.product, f.version, f.security_counter)):
        running = counters.get((product or "", _version_key(version)), recorded)
        out.append(FirmwareFacts(device, product, version, running, channels.get(device)))
    return out, heads


def _read_limited(path: Path, limit: int) -> bytes:
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise AuditBrokerDirError(f"{path} is larger than {limit} bytes")
    return data


def _broker(directory: Path) -> BrokerFacts:
    try:
        layout = Layout.parse(directory)
    except IotsecError as exc:
        raise AuditBrokerDirError(str(exc), hint=exc.hint) from None
    name = str(layout.root)
    try:
        text = _read_limited(layout.conf, MAX_CONF_BYTES).decode("utf-8", "replace")
    except FileNotFoundError:
        raise AuditBrokerDirError(f"{name} is not a rendered broker directory (no "
                                  "mosquitto.conf)",
                                  hint="give the directory made by 'iotsec broker mosquitto "
                                  "render -o DIR'") from None
    except OSError as exc:
        raise AuditBrokerDirError(f"cannot read {layout.conf}: {exc.strerror}",
                                  hint="run the audit as the account that owns the broker "
                                  "directory") from None
    conf = parse_conf(text)
    problem = None
    if conf.includes:
        # Mosquitto reads every '*.conf' of an include_dir, in order, after the main file.
        try:
            parts = [text]
            for included in conf.includes:
                if not Path(included).is_dir():
                    raise AuditBrokerDirError(f"{included} is not a directory")
                for extra in sorted(Path(included).glob("*.conf")):
                    parts.append(_read_limited(extra, MAX_CONF_BYTES).decode("utf-8",
                                                                             "replace"))
            conf = parse_conf("\n".join(parts))
        except (OSError, AuditBrokerDirError) as exc:
            problem = f"an include_dir cannot be read ({exc})"[:300]
    crls = None
    crl_problem = None
    crlfile = next((x.crlfile for x in conf.listeners if x.crlfile), None)
    if crlfile is not None:
        try:
            crls = parse_crls(_read_limited(Path(crlfile), MAX_CRL_BYTES))
        except FileNotFoundError:
            crl_problem = f"{crlfile} does not exist"
        except OSError as exc:
            crl_problem = f"{crlfile}: {exc.strerror}"
        except AuditBrokerDirError as exc:
            crl_problem = str(exc)
    log_file = conf.log_files[0] if conf.log_files else None
    log_size = 0
    if log_file is not None:
        try:
            log_size = os.stat(log_file).st_size
        except OSError:
            log_size = 0
    offset: int | None = None
    ingested_at: int | None = None
    state = layout.private / "ingest.json"
    try:
        stat = state.stat()
        data = json.loads(_read_limited(state, 4096))
        if isinstance(data, dict) and isinstance(data.get("offset"), int):
            offset, ingested_at = data["offset"], int(stat.st_mtime)
    except (OSError, ValueError, AuditBrokerDirError):
        pass
    return BrokerFacts(directory=name, problem=problem, allow_anonymous=conf.allow_anonymous,
                       per_listener_anonymous=conf.per_listener_anonymous,
                       listeners=conf.listeners, crls=crls, crl_problem=crl_problem,
                       log_file=log_file, connection_messages=conf.connection_messages,
                       log_size=log_size, ingested_offset=offset, ingested_at=ingested_at)


def load_snapshot(rt: Runtime, options: AuditOptions, *, broker_dir: Path | None = None
                  ) -> Snapshot:
    """Everything the checks read, in one read-only unit of work."""
    now = ts(rt.now())
    since = now - int(options.window.total_seconds())
    directory = broker_dir or rt.settings.broker_dir
    broker = _broker(directory) if directory is not None else None
    lint = lint_policy(rt)
    c = m.certificates.c
    with reading(rt.engine) as conn:
        authorities = _authorities(conn)
        states = dict(conn.execute(select(m.devices.c.id, m.devices.c.state)).all())
        live = _live_certs(conn, now)
        events, total = _events(conn, since)
        past = _past_certs(conn, now, history_needed(states, live, events, since))
        firmware, heads = _firmware(conn)
        roles = int(conn.execute(select(func.count()).select_from(m.roles)).scalar_one())
        crl_numbers = dict(conn.execute(select(m.crls.c.authority_id, m.crls.c.number))
                           .all())
        last_revocation = dict(conn.execute(
            select(c.authority_id, func.max(c.revoked_at)).where(c.revoked_at <= now)
            .group_by(c.authority_id)).all())
        return Snapshot(
            now=now, authorities=authorities, device_states=states, live_certs=live,
            past_certs=past, device_keys=_device_keys(conn), events=events,
            events_in_window=total, tokens=_tokens(conn), firmware=firmware,
            channel_counters=heads, lint=lint, policy_roles=roles, broker=broker,
            crl_numbers=crl_numbers, last_revocation=last_revocation)


def _facts(s: Snapshot, options: AuditOptions, seconds: float) -> dict[str, Any]:
    return {
        "devices": len(s.device_states), "active_devices": len(s.active_devices),
        "valid_certificates": len(s.live_certs),
        "authorities": len(s.authorities),
        "registered_device_keys": len(s.device_keys), "policy_roles": s.policy_roles,
        "api_tokens": len(s.tokens), "events_in_window": s.events_in_window,
        "firmware_records": len(s.firmware),
        "broker_dir": s.broker.directory if s.broker else None,
        "options": options.to_dict(), "seconds": round(seconds, 3),
    }


def run_audit(rt: Runtime, options: AuditOptions | None = None, *,
              broker_dir: Path | None = None, actor: str | None = None,
              record: bool = True) -> AuditResult:
    """Audit the fleet: every check of :mod:`iotsec.audit.rules` over the current state.
    Records an ``audit.run`` event (with the counts, never the findings' details)."""
    options = options or AuditOptions()
    started: datetime = rt.now()
    t0 = time.monotonic()
    snapshot = load_snapshot(rt, options, broker_dir=broker_dir)
    findings, outcomes = run_checks(snapshot, options)
    seconds = time.monotonic() - t0
    finished = max(rt.now(), started)
    result = AuditResult(started_at=started, finished_at=finished, findings=findings,
                         outcomes=outcomes, facts=_facts(snapshot, options, seconds))
    if record:
        skipped = sorted(k for k, o in outcomes.items() if not o.ran)
        rt.events.record(Event(finished, "audit.run", "success", actor=actor,
                               detail={"findings": len(findings),
                                       "by_severity": count_by_severity(findings),
                                       "skipped": skipped, "seconds": round(seconds, 3)}))
    return result

