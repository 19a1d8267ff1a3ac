"""Building one broker generation: the options ``render`` was given (kept in
``private/settings.json`` for ``sync``), and the files of generation N+1 (the ACL from the
policy and the fleet, the CRLs, the CA chain, the server certificate, the admin password and
the manifest), written into a hidden directory for :mod:`iotsec.app.broker.mosquitto` to
validate and swap in.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from iotsec.access.quarantine import quarantine_role_of
from iotsec.app.broker.files import Owner, read_json, write
from iotsec.app.broker.fleet import load_acl_fleet, new_device_roles
from iotsec.app.broker.holds import held_certificates, held_digest, with_holds
from iotsec.app.broker.pki import ServerNames, server_certificate
from iotsec.app.pki.authorities import (
    AuthorityRecord,
    authority_crl,
    has_crl,
    trusted_authorities,
)
from iotsec.app.pki.bundles import trust_bundle_pem
from iotsec.app.runtime import Runtime
from iotsec.broker.acl import ADMIN_USER, INTERNAL_USERS, compile_acl
from iotsec.broker.mosquitto import (
    CrlInfo,
    Layout,
    ListenerSettings,
    check_acl,
    check_crl,
    password_line,
)
from iotsec.errors import BrokerConfigError
from iotsec.pki import x509 as enc
from iotsec.timeutil import ts

__all__ = [
    "ACL_HEADER", "MIN_CRL_REMAINING", "BrokerOptions", "Built", "build", "crl_bundle",
    "new_device_roles", "options_of", "trusted_crls"
]

MIN_CRL_REMAINING = timedelta(hours=1)
ACL_HEADER = ("Written by iotsec from the access-control policy ('iotsec broker mosquitto "
              "sync'); do not edit.")


@dataclass(frozen=True)
class BrokerOptions:
    """What ``render`` was asked for; kept in ``private/settings.json`` for ``sync``."""

    port: int = 8883
    bind: str = "127.0.0.1"
    plain_localhost_port: int | None = None
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    broker_user: str | None = None
    debug_log: bool = True
    persistence: bool = True
    mosquitto: str = "mosquitto"

    def listener(self) -> ListenerSettings:
        return ListenerSettings.parse(port=self.port, bind=self.bind,
                                      plain_localhost_port=self.plain_localhost_port,
                                      debug_log=self.debug_log, persistence=self.persistence)


def options_of(layout: Layout) -> BrokerOptions:
    data = read_json(layout.private / "settings.json")
    if not data:
        raise BrokerConfigError(f"{layout.root} is not a rendered broker directory",
                                hint="run 'iotsec broker mosquitto render -o DIR' first")
    data["dns"] = tuple(data.get("dns", ()))
    data["ips"] = tuple(data.get("ips", ()))
    known = set(BrokerOptions.__dataclass_fields__)
    return BrokerOptions(**{k: v for k, v in data.items() if k in known})


@dataclass
class Built:
    number: int
    path: Path
    manifest: dict[str, Any]
    blocked: tuple[str, ...]
    warnings: tuple[str, ...]
    user_blocks: int
    pattern_lines: int
    crl: CrlInfo
    server_issued: bool
    dry_run: bool = False
    quarantined: tuple[str, ...] = ()


def _crl(rt: Runtime, authority: AuthorityRecord, previous: int | None
         ) -> tuple[bytes, CrlInfo]:
    lifetime = timedelta(hours=rt.settings.crl_lifetime_hours)
    published = authority_crl(rt, authority.id)
    if published.next_update - rt.now() < lifetime / 2 and not authority.key_offline:
        published = authority_crl(rt, authority.id, force=True)
    info = check_crl(published.der, authority.certificate, now=rt.now(),
                     min_remaining=MIN_CRL_REMAINING, previous_number=previous)
    return published.der, info


def trusted_crls(rt: Runtime, previous: dict[str, Any]
                 ) -> list[tuple[AuthorityRecord, bytes, CrlInfo]]:
    """The CRL of every trusted CA (active or retiring issuing CAs and roots), checked
    against the numbers the broker has (``previous``, by CA id): the broker checks a
    device's certificate against the CRL of whichever CA issued it."""
    out = []
    for authority in trusted_authorities(rt):
        if authority.role == "cross":
            continue  # the same subject and key as a root: that root's CRL covers it
        if authority.key_offline and authority.role == "root" and not has_crl(rt, authority.id):
            # An imported enterprise root publishes its CRL itself; Mosquitto checks the
            # CRL of a device certificate's issuer (X509_V_FLAG_CRL_CHECK), not the root's.
            continue
        number = previous.get(str(authority.id))
        der, info = _crl(rt, authority, number if isinstance(number, int) else None)
        out.append((authority, der, info))
    return out


def crl_bundle(crls: list[tuple[AuthorityRecord, bytes, CrlInfo]]) -> bytes:
    return b"".join(enc.to_pem(der, "X509 CRL") for _, der, _ in crls)


def build(rt: Runtime, layout: Layout, options: BrokerOptions, owner: Owner,
           previous: dict[str, Any], password: str) -> Built:
    t0 = time.monotonic()
    number = int(previous.get("generation", 0)) + 1
    while layout.generation(number).exists():
        number += 1
    tmp = layout.root / f".gen-{number:06d}.{secrets.token_hex(4)}"
    tmp.mkdir(mode=0o700)
    try:
        owner.share(tmp, 0o750)
        crls = trusted_crls(rt, previous.get("crl_numbers", {}))
        issuing_info = next(info for a, _, info in crls
                            if a.role == "issuing" and a.state == "active")
        roles, devices = load_acl_fleet(rt)
        acl = compile_acl(roles, devices, header=ACL_HEADER,
                          new_device_roles=new_device_roles(roles),
                          quarantine_role=quarantine_role_of(roles, rt.settings.quarantine_topic))
        check_acl(acl.text, required_users=INTERNAL_USERS)
        prev_dir = (layout.generation(int(previous["generation"]))
                    if previous.get("generation") else None)
        names = ServerNames.parse(options.bind, options.dns, options.ips)
        chain, key, issued = server_certificate(rt, prev_dir, names, options.bind)
        holds = held_certificates(rt)
        public_pem = crl_bundle(crls)
        loaded, broker_numbers, hold_warnings = with_holds(
            rt, crls, holds, previous.get("broker_crl_numbers", {}), rt.now())
        crl_pem = crl_bundle(loaded)
        write(tmp / "acl", acl.text.encode("utf-8"), owner)
        write(tmp / "crl.pem", crl_pem, owner)
        # The trust bundle: during a rollover both issuing CAs (and both roots, with the
        # cross certificate) authenticate devices; a retired CA is no longer in it.
        bundle = trust_bundle_pem(rt).encode("ascii")
        write(tmp / "ca.pem", bundle, owner)
        write(tmp / "server.pem", chain, owner)
        write(tmp / "server.key", key, owner)
        write(tmp / "passwd", password_line(ADMIN_USER, password, os.urandom(12))
               .encode("ascii"), owner)
        manifest = {
            "generation": number, "created_at": rt.now().isoformat(),
            "synced_at": ts(rt.now()),
            "crl_numbers": {str(a.id): info.number for a, _, info in crls},
            "authorities": {str(a.id): a.state for a, _, _ in crls},
            "crl_next_update": issuing_info.next_update.isoformat(),
            "acl_sha256": hashlib.sha256(acl.text.encode("utf-8")).hexdigest(),
            # The published CRLs (what sync_needed compares), the holds added to them for
            # the broker (see iotsec.app.broker.holds), and the file the broker loads.
            "crl_sha256": hashlib.sha256(public_pem).hexdigest(),
            "held_sha256": held_digest(holds), "held": len(holds),
            "broker_crl_numbers": broker_numbers,
            "crl_file_sha256": hashlib.sha256(crl_pem).hexdigest(),
            "ca_sha256": hashlib.sha256(bundle).hexdigest(),
            "server_sha256": hashlib.sha256(chain).hexdigest(),
            "blocked": list(acl.blocked), "quarantined": list(acl.quarantined),
            "user_blocks": acl.user_blocks,
            "pattern_lines": acl.pattern_lines,
            "seconds_build": round(time.monotonic() - t0, 3),
        }
        write(tmp / "manifest.json", json.dumps(manifest, indent=1).encode("utf-8"), owner)
        return Built(number, tmp, manifest, acl.blocked, (*acl.warnings, *hold_warnings),
                     acl.user_blocks,
                      acl.pattern_lines, issuing_info, issued, quarantined=acl.quarantined)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
