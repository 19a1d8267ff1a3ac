"""What iotsec establishes about its own configuration and state, as compliance evidence.

Every fact is read from the store, the settings and the home at the time of the report,
never assumed: a fact that cannot be established (a feature that is not set up) is
``ok=None`` and says why, so the provisions that rest on it are not passed blindly.
"""

from __future__ import annotations

import re
import stat
from datetime import datetime

from sqlalchemy import Connection, select

from iotsec.app.detect.status import detect_status
from iotsec.app.ota import repo as ota_repo
from iotsec.app.runtime import Runtime
from iotsec.compliance.evidence import Fact
from iotsec.errors import IotsecError
from iotsec.findings.model import Severity
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import ts

__all__ = ["BRUTE_FORCE_LIMIT", "DETECTION_STALE_SECONDS", "gather_facts"]

#: Failed API authentications per source and minute above which brute force is considered
#: practicable (iotsec's throttle refuses the source for a minute after the limit).
BRUTE_FORCE_LIMIT = 100
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MAX_REFS = 50
#: A detector whose lease was renewed longer ago than this has stopped examining telemetry.
DETECTION_STALE_SECONDS = 15 * 60


def _private_ca(conn: Connection, now: int) -> Fact:
    a = m.authorities.c
    rows = conn.execute(select(a.role, a.not_after).where(a.active.is_(True))).all()
    roles = {r.role: int(r.not_after) for r in rows}
    missing = [role for role in ("root", "issuing") if role not in roles]
    if missing:
        return Fact("identity.private-ca", False, f"no active {' or '.join(missing)} CA",
                    Severity.CRITICAL)
    expired = [role for role, not_after in roles.items() if not_after <= now]
    if expired:
        return Fact("identity.private-ca", False, f"the {', '.join(expired)} CA has expired",
                    Severity.CRITICAL, tuple(f"ca:{r}" for r in expired))
    return Fact("identity.private-ca", True, "devices get their identity from the home's "
                "private CA (an active, unexpired root and issuing CA)",
                refs=("ca:root", "ca:issuing"))


def _device_credentials(conn: Connection, now: int) -> Fact:
    d, c, k = m.devices.c, m.certificates.c, m.device_keys.c
    active = [r.id for r in conn.execute(select(d.id).where(d.state == "active"))]
    if not active:
        return Fact("identity.device-credentials", None, "there is no active device")
    with_cert = {r.device_id for r in conn.execute(
        select(c.device_id).where(c.kind == "device", c.device_id.is_not(None),
                                  c.not_after > now,
                                  (c.revoked_at.is_(None)) | (c.revoked_at > now)))}
    with_key = {r.device_id for r in conn.execute(
        select(k.device_id).where(k.revoked_at.is_(None)))}
    lacking = sorted(set(active) - with_cert - with_key)
    if lacking:
        return Fact("identity.device-credentials", False,
                    f"{len(lacking)} of {len(active)} active devices have no valid certificate "
                    "or registered key", Severity.MEDIUM,
                    tuple(f"device:{x}" for x in lacking[:_MAX_REFS]))
    return Fact("identity.device-credentials", True,
                f"each of the {len(active)} active devices has its own valid certificate or "
                "registered public key")


def _no_default_passwords(conn: Connection) -> Fact:
    t, s = m.api_tokens.c, m.device_secrets.c
    tokens = conn.execute(select(t.name, t.secret_sha256)).all()
    bad_tokens = [r.name for r in tokens if not _HEX64.match(r.secret_sha256 or "")]
    secrets = conn.execute(select(s.kid, s.ciphertext)).all()
    # An encrypted secret starts with the envelope marker (0x00).
    bad_secrets = [r.kid for r in secrets if bytes(r.ciphertext)[:1] != b"\x00"]
    if bad_tokens or bad_secrets:
        refs = tuple([f"token:{n}" for n in bad_tokens] + [f"secret:{k}" for k in bad_secrets])
        return Fact("auth.no-default-passwords", False,
                    "credentials stored in a form iotsec does not write", Severity.CRITICAL,
                    refs[:_MAX_REFS])
    return Fact("auth.no-default-passwords", True,
                f"no password logins: {len(tokens)} operator tokens, each random and stored "
                f"as a digest only; {len(secrets)} legacy device secrets, server-generated "
                "and stored encrypted; devices authenticate with certificates or signed "
                "tokens")


def _brute_force(rt: Runtime) -> Fact:
    limit = rt.settings.auth_failure_limit
    if limit > BRUTE_FORCE_LIMIT:
        return Fact("auth.brute-force-limit", False,
                    f"IOTSEC_AUTH_FAILURE_LIMIT is {limit} failures per source and minute "
                    f"(more than {BRUTE_FORCE_LIMIT})", Severity.MEDIUM)
    return Fact("auth.brute-force-limit", True,
                f"a source is refused for a minute after {limit} failed authentications; "
                "operator tokens carry 256 random bits")


def _api_tls(conn: Connection, now: int) -> Fact:
    c = m.certificates.c
    rows = conn.execute(select(c.serial, c.not_after, c.revoked_at)
                        .where(c.kind == "server")).all()
    valid = [r.serial for r in rows if r.not_after > now
             and (r.revoked_at is None or r.revoked_at > now)]
    if valid:
        return Fact("api.tls", True, "the API is served over HTTPS with a certificate from "
                    "the private CA (plain HTTP is refused except on loopback)",
                    refs=tuple(f"cert:{s}" for s in valid[:_MAX_REFS]))
    if rows:
        return Fact("api.tls", False, "every server certificate has expired or been revoked",
                    Severity.HIGH, tuple(f"cert:{r.serial}" for r in rows[:_MAX_REFS]))
    return Fact("api.tls", None, "'iotsec serve' has not issued its TLS certificate yet")


def _custody(rt: Runtime) -> Fact:
    if rt.settings.keystore == "pkcs11":
        return Fact("keys.custody", True,
                    f"CA keys and key-encryption keys are generated non-extractable in the "
                    f"PKCS#11 token {rt.settings.pkcs11_token or ''}".strip(),
                    refs=("keystore:pkcs11",))
    keys_dir = rt.settings.keys_dir
    exposed = []
    if keys_dir.is_dir():
        for path in sorted(keys_dir.iterdir()):
            if path.is_file() and stat.S_IMODE(path.stat().st_mode) & 0o077:
                exposed.append(path.name)
    if exposed:
        return Fact("keys.custody", False, f"key files readable by other users: "
                    f"{', '.join(exposed[:10])}", Severity.HIGH,
                    tuple(f"key:{n}" for n in exposed[:_MAX_REFS]))
    return Fact("keys.custody", True, "keys are encrypted PKCS#8 files (scrypt) readable by "
                "the owner only; a PKCS#11 token ('init --keystore pkcs11') would keep them "
                "non-extractable", refs=("keystore:file",))


def _at_rest(conn: Connection) -> Fact:
    s = m.device_secrets.c
    rows = conn.execute(select(s.kid, s.ciphertext)).all()
    legacy = [r.kid for r in rows if bytes(r.ciphertext)[:1] != b"\x00"]
    if legacy:
        return Fact("data.at-rest", False,
                    f"{len(legacy)} of {len(rows)} device secrets are not in the format "
                    "iotsec writes (per-record envelopes): replace them with 'iotsec device-token "
                    "secret rotate'",
                    Severity.LOW, tuple(f"secret:{k}" for k in legacy[:_MAX_REFS]))
    return Fact("data.at-rest", True, f"{len(rows)} device secrets, each sealed in its own "
                "envelope (AES-256-GCM data key wrapped by a key-encryption key in custody)")


def _firmware(rt: Runtime, conn: Connection, now: datetime) -> list[Fact]:
    r = m.ota_releases.c
    releases = conn.execute(select(r.product, r.version, r.security_counter)).all()
    repo_dir = rt.settings.resolved_home / "tuf"
    facts = []
    if not (repo_dir / "config.json").exists():
        facts.append(Fact("firmware.ota-repository", None,
                          "no update repository is set up ('iotsec ota repo init')"))
        facts.append(Fact("firmware.metadata-fresh", None, "no update repository"))
    else:
        facts.append(Fact("firmware.ota-repository", True,
                          "updates are distributed through a TUF repository (signed root, "
                          "targets, snapshot and timestamp metadata)", refs=(str(repo_dir),)))
        facts.append(_metadata_fresh(rt, now))
    if not releases:
        facts.append(Fact("firmware.signed-releases", None, "no firmware release is published"))
        facts.append(Fact("firmware.anti-rollback", None, "no firmware release is published"))
        return facts
    facts.append(Fact("firmware.signed-releases", True,
                      f"{len(releases)} releases, each published only after its MCUboot "
                      "signature was verified"))
    without = [f"release:{x.product}/{x.version}" for x in releases if x.security_counter is None]
    if without:
        facts.append(Fact("firmware.anti-rollback", False,
                          f"{len(without)} releases carry no security counter",
                          Severity.MEDIUM, tuple(without[:_MAX_REFS])))
    else:
        facts.append(Fact("firmware.anti-rollback", True,
                          "every release carries a security counter, and the server refuses "
                          "reports of versions below a device's recorded counter"))
    return facts


def _metadata_fresh(rt: Runtime, now: datetime) -> Fact:
    try:
        status = ota_repo.status(rt)
    except IotsecError as exc:
        return Fact("firmware.metadata-fresh", False, f"the repository cannot be read: {exc}",
                    Severity.HIGH)
    expired = [role.role for role in status.roles
               if role.expires is None or datetime.fromisoformat(role.expires) <= now]
    if expired:
        return Fact("firmware.metadata-fresh", False,
                    f"update metadata missing or expired: {', '.join(expired)}",
                    Severity.HIGH, tuple(f"tuf:{x}" for x in expired))
    return Fact("firmware.metadata-fresh", True, "root, targets, snapshot and timestamp "
                "metadata are all present and unexpired")


def _detection(rt: Runtime, now: int) -> Fact:
    """Telemetry is examined: the detector held its lease recently, with rules in force."""
    status = detect_status(rt)
    rules = status.rules
    enabled = len(rules.rules.enabled())
    which = f"rules version {rules.version}" if rules.version is not None else \
        "the built-in rules"
    refs = (f"detect-rules:{rules.digest[:16]}",)
    if status.lease is None:
        return Fact("monitor.detection", None, "detection has not run yet: 'iotsec serve' "
                    "runs it", refs=refs)
    if enabled == 0:
        return Fact("monitor.detection", False, f"{which} enable no rule: telemetry is read "
                    "but nothing is looked for", Severity.HIGH, refs)
    renewed = ts(status.lease.renewed_at)
    if now - renewed > DETECTION_STALE_SECONDS:
        return Fact("monitor.detection", False, "the detector last ran at "
                    f"{status.lease.renewed_at.isoformat()}: no 'iotsec serve' runs it now",
                    Severity.MEDIUM, (*refs, f"detector:{status.lease.holder}"))
    read = ", ".join(f"{x.lines} from {x.source}" for x in status.sources) or "nothing yet"
    return Fact("monitor.detection", True,
                f"the broker log and the EMQX hook decisions are examined continuously by "
                f"the detector ({status.lease.holder}, last renewed "
                f"{status.lease.renewed_at.isoformat()}) with {enabled} rules of {which}; "
                f"read so far: {read}", refs=(*refs, f"detector:{status.lease.holder}"))


def gather_facts(rt: Runtime) -> dict[str, Fact]:
    """Every fact, established now from the store, the settings and the home."""
    now = rt.now()
    moment = ts(now)
    with reading(rt.engine) as conn:
        facts = [_private_ca(conn, moment), _device_credentials(conn, moment),
                 _no_default_passwords(conn), _brute_force(rt), _api_tls(conn, moment),
                 _custody(rt), _at_rest(conn), *_firmware(rt, conn, now)]
    facts.append(_detection(rt, moment))
    return {f.name: f for f in facts}
