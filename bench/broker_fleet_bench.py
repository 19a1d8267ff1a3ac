"""Broker at fleet scale (issue 18): ``iotsec broker mosquitto render`` and ``sync`` with
1,000,000 devices on PostgreSQL, each whole command <= 5 s and <= 300 MB peak RSS.

Setup (not timed, done once and reused with ``--reuse``): ``iotsec init`` of a home whose
store is the PostgreSQL database ``--database-url``, then seeded with SQL
(``generate_series``): N devices with the default role ``device``, half in group ``g1``,
one valid certificate each; 1 % of the certificates revoked (with their CRL entries),
0.1 % of the devices disabled (their certificates held in the broker's CRL), 0.01 %
quarantined, 0.1 % holding an extra ``gateway`` role (so the ACL has real per-device
blocks besides the pattern lines).

Ours: the whole commands as child processes, timed, with their peak RSS from
``getrusage(RUSAGE_CHILDREN)``: ``render -o DIR`` (with its dry run of the real mosquitto),
then, with ``mosquitto -c DIR/mosquitto.conf`` running, ``sync DIR`` (build, validate,
swap, SIGHUP, wait for the reload, confirm with the probe and canary certificates).
Reference, same run: Mosquitto's own cold start on the same files (exec to "running").
Attribution, same run, each in a child process: the whole-fleet read (``load_fleet``, the
previous path) beside the bounded one (``load_acl_fleet``), time and peak RSS.

    python bench/broker_fleet_bench.py          # a fresh database, seeded, dropped after
    python bench/broker_fleet_bench.py --database-url URL --home DIR          # seed once
    python bench/broker_fleet_bench.py --database-url URL --home DIR --reuse  # then reuse
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url, text

from common import load_average, machine_info, print_machine, run_child
from iotsec.access.policy import Role, Rule
from iotsec.app.access.roles import add_role
from iotsec.app.runtime import open_runtime
from iotsec.app.setup import init_home
from iotsec.config import Settings
from iotsec.pki.crl import RevocationReason, encode_entry
from iotsec.timeutil import from_ts

GOAL_SECONDS = 5.0
#: The PostgreSQL server a fresh database is made on when none is given.
SERVER = os.environ.get("IOTSEC_BENCH_DATABASE_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
GOAL_MB = 300.0


def seed(url: str, home: Path, n: int) -> float:
    start = time.perf_counter()
    settings = Settings(home=home, database_url=url)
    init_home(settings, store_passphrase=True)
    rt = open_runtime(settings)
    add_role(rt, Role.build("gateway", [
        Rule.parse("allow", "subscribe", "devices/+/telemetry"),
        Rule.parse("allow", "receive", "devices/+/telemetry")]))
    ca = rt.issuing_id()
    now = int(time.time())
    rt.close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO groups (name, created_at) VALUES ('g1', :now)"),
                     {"now": now})
        conn.execute(text(
            "INSERT INTO devices (id, state, attributes, created_at, updated_at) "
            "SELECT 'dev-' || lpad(i::text, 7, '0'), "
            "CASE WHEN i % 1000 = 1 THEN 'disabled' WHEN i % 10000 = 5 THEN 'quarantined' "
            "ELSE 'active' END, '{}', :now, :now FROM generate_series(1, :n) i"),
            {"n": n, "now": now})
        conn.execute(text(
            "INSERT INTO device_groups (device_id, group_name) "
            "SELECT 'dev-' || lpad(i::text, 7, '0'), 'g1' FROM generate_series(1, :n, 2) i"),
            {"n": n})
        conn.execute(text(
            "INSERT INTO device_roles (device_id, role_name) "
            "SELECT 'dev-' || lpad(i::text, 7, '0'), 'device' FROM generate_series(1, :n) i"),
            {"n": n})
        conn.execute(text(
            "INSERT INTO device_roles (device_id, role_name) "
            "SELECT 'dev-' || lpad(i::text, 7, '0'), 'gateway' "
            "FROM generate_series(2, :n, 1000) i"), {"n": n})
        conn.execute(text(
            "INSERT INTO certificates (serial, authority_id, device_id, kind, profile, subject,"
            " not_before, not_after, sha256, der, created_at) "
            "SELECT upper(md5(i::text)), :ca, 'dev-' || lpad(i::text, 7, '0'), 'device', "
            "'device', 'CN=dev-' || i, :now - 86400, :now + 300 * 86400, "
            "md5(i::text) || md5((i + 1)::text), '\\x00'::bytea, :now "
            "FROM generate_series(1, :n) i"), {"n": n, "now": now, "ca": ca})
        # 1 % revoked, with the CRL entries the CRL is built from.
        revoked = []
        for i in range(3, n + 1, 100):
            serial = hashlib.md5(str(i).encode(), usedforsecurity=False).hexdigest().upper()
            entry = encode_entry(int(serial, 16), from_ts(now - 3600),
                                 RevocationReason.keyCompromise)
            revoked.append({"at": now - 3600, "entry": entry, "old": serial})
        conn.execute(text("UPDATE certificates SET revoked_at = :at, revocation_reason = 1, "
                          "crl_entry = :entry WHERE serial = :old"), revoked)
        conn.execute(text("UPDATE crls SET stale = true"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(*args: str) -> tuple[float, float, dict[str, Any]]:
    """Seconds and peak RSS (MiB, the child's own) of one whole ``iotsec`` command, and
    its JSON answer."""
    run = run_child([str(Path(sys.executable).parent / "iotsec"), *args, "--json"])
    if run.returncode != 0:
        raise RuntimeError(f"iotsec {' '.join(args)} failed: {run.stderr[-500:]}")
    return run.seconds, run.peak_rss_mib, json.loads(run.stdout)


def cold_start(conf: Path, log: Path) -> tuple[float, subprocess.Popen[bytes]]:
    offset = log.stat().st_size if log.exists() else 0
    t0 = time.perf_counter()
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited on {conf}")
        try:
            with log.open("rb") as fh:
                fh.seek(offset)
                if b" running" in fh.read():
                    return time.perf_counter() - t0, proc
        except FileNotFoundError:
            pass
        time.sleep(0.005)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


_LOADER = """
import sys, time
from iotsec.app.broker import fleet
from iotsec.app.runtime import open_runtime
from iotsec.config import Settings
rt = open_runtime(Settings())
t0 = time.perf_counter()
_, devices = getattr(fleet, sys.argv[1])(rt)
print(time.perf_counter() - t0, len(devices))
"""


def attribution() -> dict[str, float]:
    """The whole-fleet read (the previous path) and the bounded one, each in a child of
    its own: seconds of the read, devices returned, the child's peak RSS."""
    out: dict[str, float] = {}
    for label, loader in (("bounded", "load_acl_fleet"), ("whole", "load_fleet")):
        run = run_child([sys.executable, "-c", _LOADER, loader])
        if run.returncode != 0:
            raise RuntimeError(f"{loader} failed: {run.stderr[-500:]}")
        seconds, count = run.stdout.split()
        out[f"{label}_s"] = float(seconds)
        out[f"{label}_devices"] = float(count)
        out[f"{label}_peak_mb"] = run.peak_rss_mib
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="the database to seed (or reuse); default: a "
                        f"fresh one on {SERVER}, dropped at the end")
    parser.add_argument("--home", type=Path, help="the home to seed (or reuse); default: a "
                        "temporary one")
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 devices, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reuse", action="store_true", help="the home is seeded already")
    parser.add_argument("--no-attribution", action="store_true")
    args = parser.parse_args(argv)
    if args.reuse and not (args.database_url and args.home):
        parser.error("--reuse needs --database-url and --home")
    if args.quick:
        args.devices, args.rounds = 100_000, 1
    print_machine(machine_info())
    scratch: list[str] = []
    if args.database_url is None:
        name = f"iotsec_bfb_{os.getpid()}"
        admin = create_engine(SERVER, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        args.database_url = make_url(SERVER).set(database=name).render_as_string(
            hide_password=False)
        scratch.append(name)
    if args.home is None:
        args.home = Path(tempfile.mkdtemp(prefix="iotsec-bfb-home-")) / "home"
    try:
        return measure(args)
    finally:
        for name in scratch:
            admin = create_engine(SERVER, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
            shutil.rmtree(args.home.parent, ignore_errors=True)


def measure(args: argparse.Namespace) -> int:
    if not args.reuse:
        print(f"# seeded {args.devices:,} devices in "
              f"{seed(args.database_url, args.home, args.devices):.1f} s", flush=True)
    os.environ.update({"IOTSEC_HOME": str(args.home), "IOTSEC_DATABASE_URL": args.database_url,
                       "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    work = Path(tempfile.mkdtemp(prefix="iotsec-bfb-", dir="/tmp"))
    work.chmod(0o711)
    renders: list[tuple[float, float]] = []
    syncs: list[tuple[float, float]] = []
    colds: list[float] = []
    loads: list[tuple[float, ...]] = []
    try:
        for r in range(args.rounds):
            out = work / f"broker-{r}"
            port = free_port()
            load1 = os.getloadavg()
            seconds, peak, rendered = run_cli("broker", "mosquitto", "render", "-o",
                                              str(out), "--port", str(port))
            renders.append((seconds, peak))
            cold, proc = cold_start(out / "mosquitto.conf", out / "run" / "mosquitto.log")
            colds.append(cold)
            try:
                seconds, peak, synced = run_cli("broker", "mosquitto", "sync", str(out),
                                                "--pid", str(proc.pid))
                syncs.append((seconds, peak))
                if not synced["confirmed"]:
                    raise RuntimeError("the sync was not confirmed")
            finally:
                stop(proc)
            loads.append(load1)
            print(f"# round {r + 1}: render {renders[-1][0]:.2f} s {renders[-1][1]:.0f} MB "
                  f"({rendered['user_blocks']} user blocks, {rendered['blocked']} blocked); "
                  f"sync {syncs[-1][0]:.2f} s {syncs[-1][1]:.0f} MB {synced['seconds']}; "
                  f"mosquitto cold start {cold:.2f} s; load {load1}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
        parts = {} if args.no_attribution else attribution()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    render_s = statistics.median(s for s, _ in renders)
    sync_s = statistics.median(s for s, _ in syncs)
    cold_s = statistics.median(colds)
    render_mb = max(p for _, p in renders)
    sync_mb = max(p for _, p in syncs)
    ok = (render_s <= GOAL_SECONDS and sync_s <= GOAL_SECONDS and render_mb <= GOAL_MB
          and sync_mb <= GOAL_MB)
    print(f"\n{args.devices:,} devices on PostgreSQL, median of {args.rounds} rounds "
          f"(load average at end {load_average()}):")
    print(f"  render (whole command): {render_s:.2f} s, peak RSS {render_mb:.0f} MB")
    print(f"  sync with a running broker (whole command): {sync_s:.2f} s, peak RSS "
          f"{sync_mb:.0f} MB")
    print(f"  reference: mosquitto cold start on the same files {cold_s:.2f} s "
          f"(ratio render/reference {render_s / cold_s:.1f}, sync/reference "
          f"{sync_s / cold_s:.1f})")
    if parts:
        print(f"  attribution: fleet read bounded {parts['bounded_s']:.2f} s "
              f"({parts['bounded_devices']:,.0f} devices, child peak RSS "
              f"{parts['bounded_peak_mb']:.0f} MB), whole {parts['whole_s']:.2f} s "
              f"({parts['whole_devices']:,.0f} devices, {parts['whole_peak_mb']:.0f} MB)")
    print(f"  goal <= {GOAL_SECONDS:g} s and <= {GOAL_MB:g} MB each: {'MET' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
