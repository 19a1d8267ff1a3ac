"""Driving Mosquitto: render a broker directory, and sync a running broker with the store.

Layout of ``DIR`` (see :class:`iotsec.broker.mosquitto.Layout`)::

    mosquitto.conf      stable; every file the broker reads is under current/
    current -> gen-N    symbolic link, swapped with one atomic rename
    gen-N/              acl, passwd, ca.pem, crl.pem, server.pem, server.key, manifest.json
    run/                the broker's own: control socket, log, pid file, persistence
    private/            iotsec's own (0700): control password, probe and canary keys, state

A sync is fail-closed and atomic:

1. build generation N+1 in a hidden directory: the ACL from the policy and the fleet, the
   CRLs (rebuilt first if less than half their lifetime is left), the CA chain, the
   server certificate (renewed 30 days before expiry);
2. validate before anything is swapped: the CRLs (readable, issued and signed by the CA,
   not older than the broker's, nextUpdate at least an hour away), the ACL (read the way
   Mosquitto reads it), then a dry run of the real ``mosquitto`` on the new files;
3. rename it into place and swap ``current``; send ``SIGHUP``; wait for the reload in the
   broker's log and refuse any reload error;
4. confirm: the probe certificate connects and is refused a publish (the ACL is loaded),
   the revoked canary certificate is refused with ``certificate_revoked`` (the CRL is
   loaded). Otherwise swap back, reload, and raise;
5. end the live sessions of devices revoked, disabled, blocked or quarantined since the
   last sync
   (see :mod:`iotsec.brokerctl`); record security events.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path, PurePosixPath

from sqlalchemy import select

from iotsec import brokerctl as control
from iotsec.access.quarantine import quarantine_role_of
from iotsec.app.broker.build import (
    ACL_HEADER,
    BrokerOptions,
    build,
    crl_bundle,
    new_device_roles,
    options_of,
    trusted_crls,
)
from iotsec.app.broker.confirm import confirm
from iotsec.app.broker.files import (
    Owner,
    current_generation,
    default_broker_user,
    locked,
    prepare,
    prune,
    read_json,
    replace_shared,
    swap,
    write_json_private,
)
from iotsec.app.broker.fleet import load_acl_fleet, load_fleet
from iotsec.app.broker.holds import held_certificates, held_digest
from iotsec.app.broker.pki import (
    ServerNames,
    admin_password,
    client_certificate,
)
from iotsec.app.events import Event
from iotsec.app.pki.bundles import trust_bundle_pem
from iotsec.app.runtime import Runtime
from iotsec.broker.acl import ADMIN_USER, compile_acl
from iotsec.broker.adapter import PkiFiles
from iotsec.broker.mosquitto import Layout, render_conf
from iotsec.broker.mosquitto_adapter import MosquittoAdapter
from iotsec.errors import (
    BrokerError,
    BrokerProcessError,
    BrokerReloadError,
    BrokerValidationError,
)
from iotsec.filesystem import publish_directory
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import ts

log = logging.getLogger("iotsec.broker")


@dataclass(frozen=True)
class SyncResult:
    directory: str
    generation: int
    previous: int | None
    changed: bool
    reloaded: bool
    confirmed: bool
    dry_run: bool
    kicked: tuple[str, ...]
    blocked: int
    user_blocks: int
    pattern_lines: int
    crl_number: int
    crl_next_update: str
    server_certificate_issued: bool
    warnings: tuple[str, ...]
    seconds: dict[str, float] = field(default_factory=dict)


# --- render and sync -----------------------------------------------------------------------


def _revoked_since(rt: Runtime, since: int | None) -> set[str]:
    """Devices with a certificate revoked since ``since`` (inclusive: times are whole
    seconds, and ending a session twice does no harm)."""
    if since is None:
        return set()
    c = m.certificates.c
    with reading(rt.engine) as conn:
        return set(conn.execute(select(c.device_id).distinct().where(
            c.device_id.is_not(None), c.revoked_at >= since, c.revoked_at <= ts(rt.now())
        )).scalars())


#: SIGHUPs sent at most per reload, and seconds to wait for each to show in the log.
_RELOAD_ATTEMPTS = 3
_RELOAD_WAIT = 5.0


def _read_log(layout: Layout, offset: int) -> list[str]:
    try:
        with layout.log_file.open("rb") as fh:
            fh.seek(offset)
            return fh.read(4 * 1024 * 1024).decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def _reload_and_confirm(layout: Layout, options: BrokerOptions,
                        process: control.BrokerProcess) -> None:
    offset = control.log_size(layout.log_file)
    # Mosquitto clears its reload flag after a reload: a SIGHUP that lands while the previous
    # reload runs (a rollback right after a failed one) can be lost. Reloading the same files
    # twice is harmless, so the signal is sent again when no reload shows up in the log.
    for _ in range(_RELOAD_ATTEMPTS):
        process.reload()
        try:
            control.wait_for_reload(layout.log_file, offset, timeout=_RELOAD_WAIT)
            break
        except TimeoutError:
            continue
    else:
        raise BrokerReloadError(f"the broker did not log a reload in {layout.log_file}")
    confirm(layout, options)
    # The reload is done once the probe was served (the broker is single-threaded).
    lines = _read_log(layout, offset)
    start = next((i for i, ln in enumerate(lines) if ln.endswith("Reloading config.")), 0)
    errors = control.reload_errors(lines[start:])
    if errors:
        raise BrokerReloadError("the broker reported errors on reload: "
                                + " | ".join(errors)[:500])


def _sync_locked(rt: Runtime, layout: Layout, options: BrokerOptions, owner: Owner,
                 process: control.BrokerProcess | None, *, dry_run: bool) -> SyncResult:
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    prev_gen = current_generation(layout)
    previous = read_json(layout.current / "manifest.json") if prev_gen is not None else {}
    password = admin_password(layout.private)
    client_certificate(rt, layout.private, "probe", revoked=False)
    client_certificate(rt, layout.private, "canary", revoked=True)
    built = build(rt, layout, options, owner, previous, password)
    seconds["build"] = round(time.monotonic() - t0, 3)
    try:
        t1 = time.monotonic()
        binary = shutil.which(options.mosquitto)
        if dry_run and binary is not None:
            socket_path = layout.run / f"check-{secrets.token_hex(4)}.sock"
            try:
                control.dry_run(binary, render_conf(layout, options.listener(),
                                                    files=built.path, check_socket=socket_path,
                                                    user=owner.user), built.path)
            finally:
                # The check broker is killed, so it never removes its own socket file.
                socket_path.unlink(missing_ok=True)
            built.dry_run = True
        elif dry_run and process is not None:
            raise BrokerValidationError(f"{options.mosquitto!r} was not found for the dry run",
                                        hint="install mosquitto or put it on PATH")
        seconds["validate"] = round(time.monotonic() - t1, 3)
        final = layout.generation(built.number)
        publish_directory(built.path, final)
    except BaseException:
        shutil.rmtree(built.path, ignore_errors=True)
        raise
    built.manifest["applied_at"] = (ts(rt.now()) if process is not None or prev_gen is None
                                    else previous.get("applied_at"))
    for key, ids in (("kicked_blocked", built.blocked),
                     ("kicked_quarantined", built.quarantined)):
        built.manifest[key] = list(ids) if process is not None else previous.get(key, [])
    swap(layout, built.number)
    kicked: list[str] = []
    if process is not None:
        t2 = time.monotonic()
        try:
            _reload_and_confirm(layout, options, process)
        except (BrokerError, OSError) as exc:
            restored = ""
            if prev_gen is not None:
                swap(layout, prev_gen)
                try:
                    _reload_and_confirm(layout, options, process)
                    restored = f"; rolled back to generation {prev_gen}"
                except (BrokerError, OSError) as again:
                    restored = f"; rolling back to generation {prev_gen} failed too: {again}"
            shutil.rmtree(final, ignore_errors=True)
            raise BrokerReloadError(f"{exc}{restored}") from exc
        seconds["reload"] = round(time.monotonic() - t2, 3)
        t3 = time.monotonic()
        since = previous.get("applied_at")
        # A device quarantined since the last sync is dropped too: it comes back under
        # the quarantine role's rules only.
        newly_quarantined = set(built.quarantined) - set(previous.get("kicked_quarantined", []))
        targets = (set(built.blocked) - set(previous.get("kicked_blocked", []))
                   ) | newly_quarantined | _revoked_since(rt, since if isinstance(since, int)
                                                          else None)
        try:
            kicked = control.kick(layout.admin_socket, ADMIN_USER, password, sorted(targets))
        except (OSError, ConnectionError) as exc:
            raise BrokerError(
                f"generation {built.number} is live, but ending the sessions of "
                f"{', '.join(sorted(targets))[:200]} failed: {exc}",
                hint=f"check that the broker was started with {layout.conf} (its control "
                "socket is DIR/run/admin.sock) and run the sync again") from exc
        seconds["kick"] = round(time.monotonic() - t3, 3)
        # One event per session ended, written together (a first sync may end thousands).
        blocked = set(built.blocked)
        rt.events.record_many([
            Event(rt.now(), "broker.kick", "success", actor=device_id,
                  subject=str(layout.root),
                  detail={"reason": "blocked" if device_id in blocked
                          else "quarantined" if device_id in newly_quarantined
                          else "certificate revoked"}) for device_id in kicked])
    # The manifest is rewritten in place: the broker never reads it.
    replace_shared(layout.generation(built.number) / "manifest.json",
                   json.dumps(built.manifest, indent=1).encode("utf-8"), owner)
    prune(layout, {built.number, prev_gen or 0})
    changed = any(previous.get(k) != built.manifest[k]
                  for k in ("acl_sha256", "crl_sha256", "held_sha256", "server_sha256",
                            "ca_sha256"))
    seconds["total"] = round(time.monotonic() - t0, 3)
    result = SyncResult(
        directory=str(layout.root), generation=built.number, previous=prev_gen,
        changed=changed, reloaded=process is not None, confirmed=process is not None,
        dry_run=built.dry_run, kicked=tuple(kicked), blocked=len(built.blocked),
        user_blocks=built.user_blocks, pattern_lines=built.pattern_lines,
        crl_number=built.crl.number, crl_next_update=built.crl.next_update.isoformat(),
        server_certificate_issued=built.server_issued, warnings=built.warnings,
        seconds=seconds)
    rt.events.record(Event(rt.now(), "broker.sync", "success", subject=str(layout.root),
                           detail={"generation": built.number, "changed": changed,
                                   "reloaded": result.reloaded, "kicked": len(kicked)}))
    return result


def _record_failure(rt: Runtime, layout: Layout, exc: BaseException) -> None:
    with contextlib.suppress(Exception):
        rt.events.record(Event(rt.now(), "broker.sync", "failure", subject=str(layout.root),
                               detail={"error": str(exc)[:200], "type": type(exc).__name__}))


def render(rt: Runtime, directory: Path, options: BrokerOptions, *,
           dry_run: bool = True) -> SyncResult:
    """Write a complete broker setup to ``directory`` (first generation, or a new one with
    new options). Changing the port or the bind address needs a broker restart."""
    layout = Layout.parse(directory)
    listener = options.listener()
    ServerNames.parse(options.bind, options.dns, options.ips)
    owner = Owner.resolve(options.broker_user)
    prepare(layout, owner)
    with locked(layout):
        write_json_private(layout.private / "settings.json", asdict(options))
        conf = MosquittoAdapter(layout, listener, user=owner.user).render_config(
            PkiFiles(PurePosixPath(layout.current)))
        replace_shared(layout.conf, conf.encode("utf-8"), owner)
        try:
            return _sync_locked(rt, layout, options, owner, None, dry_run=dry_run)
        except BaseException as exc:
            _record_failure(rt, layout, exc)
            raise


def find_process(layout: Layout, *, pid: int | None = None, pidfile: Path | None = None
                 ) -> control.BrokerProcess | None:
    """The broker to reload: the one given, else the one in ``run/mosquitto.pid`` if that
    process is alive, else None (files are updated, nothing is reloaded)."""
    if pid is not None or pidfile is not None:
        return control.BrokerProcess.find(pid=pid, pidfile=pidfile)
    if layout.pid_file.exists():
        try:
            return control.BrokerProcess.find(pidfile=layout.pid_file)
        except BrokerProcessError:
            return None
    return None


def sync(rt: Runtime, directory: Path, *, pid: int | None = None,
         pidfile: Path | None = None, dry_run: bool = True) -> SyncResult:
    """Re-render ``directory`` from the store and make the running broker apply it."""
    layout = Layout.parse(directory)
    options = options_of(layout)
    owner = Owner.resolve(options.broker_user)
    process = find_process(layout, pid=pid, pidfile=pidfile)
    with locked(layout):
        try:
            return _sync_locked(rt, layout, options, owner, process, dry_run=dry_run)
        except BaseException as exc:
            _record_failure(rt, layout, exc)
            raise


def sync_needed(rt: Runtime, directory: Path) -> bool:
    """Would a sync change what the broker enforces? True when the ACL or the CRL would
    differ, or the broker's CRL has less than half its lifetime left (the long-running
    server calls this periodically, so the broker's CRL never expires)."""
    layout = Layout.parse(directory)
    previous = read_json(layout.current / "manifest.json")
    if not previous:
        return True
    from datetime import datetime

    lifetime = timedelta(hours=rt.settings.crl_lifetime_hours)
    try:
        next_update = datetime.fromisoformat(str(previous["crl_next_update"]))
    except (KeyError, ValueError):
        return True
    if next_update - rt.now() < lifetime / 2:
        return True
    roles, devices = load_acl_fleet(rt)
    acl = compile_acl(roles, devices, header=ACL_HEADER, new_device_roles=new_device_roles(roles),
                      quarantine_role=quarantine_role_of(roles, rt.settings.quarantine_topic))
    if hashlib.sha256(acl.text.encode("utf-8")).hexdigest() != previous.get("acl_sha256"):
        return True
    crls = crl_bundle(trusted_crls(rt, {}))
    if hashlib.sha256(crls).hexdigest() != previous.get("crl_sha256"):
        return True
    if held_digest(held_certificates(rt)) != previous.get("held_sha256"):
        return True  # a device disabled or enabled again: the broker's CRL changes
    # A CA rotated, imported or retired by another process: the trust bundle changed.
    bundle = trust_bundle_pem(rt).encode("ascii")
    if hashlib.sha256(bundle).hexdigest() != previous.get("ca_sha256"):
        return True
    return bool(_revoked_since(rt, previous.get("applied_at")))


def refresh_loop(rt: Runtime, directory: Path, stop: threading.Event, *,
                 interval: float = 300.0) -> None:
    """For a long-running server: every ``interval`` seconds, sync the broker in
    ``directory`` when :func:`sync_needed` says so (a changed ACL or CRL, a revocation, or a
    CRL past half its lifetime), so the broker's CRL never reaches its nextUpdate. Errors
    are logged and recorded as events; the loop goes on until ``stop`` is set."""
    while not stop.wait(interval):
        try:
            if sync_needed(rt, directory):
                result = sync(rt, directory)
                log.info("broker %s synced: generation %d", directory, result.generation)
        except Exception:  # keep refreshing; the failure is in the log and the events
            log.exception("broker sync of %s failed", directory)


__all__ = ["BrokerOptions", "SyncResult", "confirm", "current_generation", "default_broker_user",
           "find_process", "load_fleet", "options_of", "refresh_loop", "render", "sync",
           "sync_needed"]
