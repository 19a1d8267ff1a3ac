"""Goal 3: registering 100,000 devices through the library in under 30 s.

Ours: ``iotsec.app.identity.devices.import_devices(rt, (NewDevice.parse(f"dev-{i}", ["fleet-a"],
{"site": "x"}) for i in range(N)))`` into a fresh SQLite home (validation, batched
transactions, the device rows and their group links).

Reference in the same run (the floor): a plain ``sqlite3`` ``executemany`` of the same N
device rows into a bare table (same columns, no keys or indexes), one transaction, in a
database file with the same pragmas (WAL, synchronous=NORMAL).

Rounds are interleaved, each in a fresh home and a fresh database file; the median is
reported.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import func, select

from common import (
    Report,
    fresh_runtime,
    load_average,
    machine_info,
    print_machine,
    scratch_dir,
    verdict,
)
from iotsec.app.identity import devices
from iotsec.store import models

GOAL_SECONDS = 30.0


def ours(count: int) -> tuple[float, float]:
    """Wall and CPU seconds of one import into a fresh home."""
    with fresh_runtime("iotsec-bench-import-") as rt:
        start, start_cpu = time.perf_counter(), time.process_time()
        total = devices.import_devices(rt, (
            devices.NewDevice.parse(f"dev-{i}", ["fleet-a"], {"site": "x"})
            for i in range(count)))
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - start_cpu
        with rt.engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(models.devices)).scalar()
            links = conn.execute(select(func.count()).select_from(models.device_groups)).scalar()
        if not total == stored == links == count:
            raise AssertionError(f"imported {total}, stored {stored} devices, {links} links")
    return seconds, cpu_seconds


def floor(count: int) -> float:
    with scratch_dir("iotsec-bench-floor-") as tmp:
        db = sqlite3.connect(tmp / "floor.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE devices (id TEXT, state TEXT, attributes TEXT, "
                   "created_at INTEGER, updated_at INTEGER)")
        now = int(time.time())
        attributes = json.dumps({"site": "x"}, sort_keys=True)
        start = time.perf_counter()
        rows = [(f"dev-{i}", "pending", attributes, now, now) for i in range(count)]
        db.execute("BEGIN")
        db.executemany("INSERT INTO devices VALUES (?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
        seconds = time.perf_counter() - start
        stored = db.execute("SELECT count(*) FROM devices").fetchone()[0]
        db.close()
        if stored != count:
            raise AssertionError(f"the floor stored {stored} rows")
    return seconds


def schema_floor(count: int) -> float:
    """Attribution: raw sqlite3 into a migrated iotsec home's own tables (devices and
    device_groups, with their keys and foreign keys), no validation and no SQLAlchemy."""
    with fresh_runtime("iotsec-bench-schema-") as rt:
        path = rt.settings.resolved_home / "iotsec.db"
        rt.close()
        db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            db.execute(f"PRAGMA {pragma}")
        now = int(time.time())
        attributes = json.dumps({"site": "x"}, sort_keys=True)
        start = time.perf_counter()
        rows = [(f"dev-{i}", "pending", attributes, now, now) for i in range(count)]
        links = [(f"dev-{i}", "fleet-a") for i in range(count)]
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO groups (name, created_at) VALUES ('fleet-a', ?)", (now,))
        db.executemany("INSERT INTO devices (id, state, attributes, created_at, updated_at) "
                       "VALUES (?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO device_groups (device_id, group_name) VALUES (?, ?)", links)
        db.execute("COMMIT")
        seconds = time.perf_counter() - start
        db.close()
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 devices instead of 100,000")
    parser.add_argument("--count", type=int, help="devices to register (default 100,000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    count = args.count or (10_000 if args.quick else 100_000)

    machine = machine_info()
    print_machine(machine)
    report = Report(f"Goal 3: registering {count:,} devices", params={
        "devices": count, "rounds (median reported)": args.rounds,
        "device": 'NewDevice.parse(f"dev-{i}", ["fleet-a"], {"site": "x"})',
        "store": "SQLite file in a fresh scratch home per round",
        "load average at start": load_average()})
    t_ours: list[float] = []
    cpu_ours: list[float] = []
    t_floor: list[float] = []
    t_schema: list[float] = []
    for r in range(args.rounds):
        seconds, cpu_seconds = ours(count)
        t_ours.append(seconds)
        cpu_ours.append(cpu_seconds)
        t_floor.append(floor(count))
        t_schema.append(schema_floor(count))
        print(f"# round {r + 1}: ours {t_ours[-1]:.2f} s, floor {t_floor[-1]:.3f} s, "
              f"schema floor {t_schema[-1]:.3f} s", flush=True)
    report.check(f"every round: {count:,} device rows and {count:,} group links stored")

    ours_s = statistics.median(t_ours)
    floor_s = statistics.median(t_floor)
    report.add("ours: import_devices (time)", ours_s, "s",
               f"goal < {GOAL_SECONDS:g} s: {verdict(ours_s < GOAL_SECONDS)}; best round "
               f"{min(t_ours):.2f} s; CPU {statistics.median(cpu_ours):.2f} s")
    report.add("ours: import_devices (rate)", count / ours_s, "devices/s")
    report.add("reference (floor): sqlite3 executemany, bare table", floor_s, "s")
    report.add("reference (floor): rate", count / floor_s, "rows/s")
    schema_s = statistics.median(t_schema)
    report.add("ratio time: ours / floor", ours_s / floor_s, "x")
    report.add("attribution: sqlite3 into the iotsec schema (devices + links)", schema_s, "s",
               "keys and foreign keys, no validation, no SQLAlchemy")
    report.add("ratio time: ours / schema attribution", ours_s / schema_s, "x")
    report.params["load average at end"] = load_average()
    report.params["all rounds (ours s, floor s, schema s)"] = [
        (round(a, 2), round(b, 3), round(c, 3))
        for a, b, c in zip(t_ours, t_floor, t_schema, strict=True)]
    report.print()
    report.write_json(args.json, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
