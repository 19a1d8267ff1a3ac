"""Goal 3: registering 100,000 devices through the library in under 30 s.

Ours: ``iotsec.app.identity.devices.import_devices(rt, (NewDevice.parse(f"dev-{i}", ["fleet-a"],
{"site": "x"}) for i in range(N)))`` into a fresh SQLite home (validation, batched
transactions, the device rows and their group links).

Reference in the same run (the floor): a plain ``sqlite3`` ``executemany`` of the same N
device rows into a bare table (same columns, no keys or indexes), one transaction, in a
database file with the same pragmas (WAL, synchronous=NORMAL).

Rounds are interleaved, each in a fresh home and a fresh database file; the median is
reported.

``--csv N`` (issue 18): the whole command ``iotsec device import FILE.csv`` of an N-row
file (``id,groups,attributes``: every device in group ``fleet``, half of them in one of
seven ``batch-*`` groups too, a third with two attributes; generated once into /tmp), on
SQLite and on PostgreSQL (``--database-url``, a fresh database per round), each beside
its references in the same round: ``sqlite3 .import`` of the same file into a bare table
of the same three columns (WAL, ``synchronous=NORMAL``), and ``psql \\copy`` of it into a
bare table of a fresh database; and the same tools loading the same file into the schema
of a fresh iotsec home (its tables, keys, indexes, foreign keys and triggers, as
``iotsec init`` makes them): the file into a temporary table, then, in one transaction, one
``INSERT ... SELECT`` per table (the groups, the devices with their attributes as JSON,
the group links split from the file, a ``device`` role binding each), which is the work
the database itself does for this schema. Times and each child's own peak RSS (wait4).
Goals: <= 15 s SQLite, <= 20 s PostgreSQL, <= 5x the reference, <= 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import URL, create_engine, func, make_url, select, text

from common import (
    Report,
    fresh_database,
    fresh_runtime,
    load_average,
    machine_info,
    print_machine,
    run_child,
    scratch_dir,
    settings_for,
    verdict,
)
from iotsec.app.identity import devices
from iotsec.app.setup import init_home
from iotsec.config import Settings
from iotsec.store import models

GOAL_SECONDS = 30.0
CSV_GOALS = {"sqlite": 15.0, "postgresql": 20.0}
CSV_RATIO, CSV_MB = 5.0, 200.0


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


def csv_file(rows: int) -> Path:
    """The N-row import file, generated once."""
    path = Path(f"/tmp/iotsec-import-{rows}.csv")
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as fh:
            fh.write("id,groups,attributes\n")
            for i in range(rows):
                groups = f"fleet;batch-{i % 7}" if i % 2 == 0 else "fleet"
                attrs = f"model=t{i % 5};site=north" if i % 3 == 0 else ""
                fh.write(f"dev-{i:07d},{groups},{attrs}\n")
        tmp.rename(path)
    return path


def _iotsec_import(path: Path, home: Path, url: str | None) -> tuple[float, float]:
    os.environ["IOTSEC_HOME"] = str(home)
    if url:
        os.environ["IOTSEC_DATABASE_URL"] = url
    else:
        os.environ.pop("IOTSEC_DATABASE_URL", None)
    run = run_child([str(Path(sys.executable).parent / "iotsec"), "device", "import", str(path),
                     "--json"])
    if run.returncode != 0:
        raise RuntimeError(f"the import failed: {run.stderr[-500:]}")
    return run.seconds, run.peak_rss_mib


#: The schema reference's SQL after the file is in the temporary table ``s``
#: (``id,groups,attributes``); ``{split}`` splits a row's groups into rows ``j.value``.
_SCHEMA_LOAD = """
BEGIN;
INSERT INTO groups (name, created_at) SELECT DISTINCT j.value, 0 FROM s, {split} WHERE s.groups <> '';
INSERT INTO devices (id, state, attributes, created_at, updated_at)
  SELECT id, 'pending', CASE WHEN coalesce(attributes, '') = '' THEN '{{}}' ELSE
    '{{"' || replace(replace(attributes, '=', '":"'), ';', '","') || '"}}' END, 0, 0 FROM s;
INSERT INTO device_groups (device_id, group_name) SELECT s.id, j.value FROM s, {split}
  WHERE s.groups <> '';
INSERT INTO device_roles (device_id, role_name) SELECT id, 'device' FROM s;
COMMIT;
"""
_SQLITE_SPLIT = "json_each('[\"' || replace(s.groups, ';', '\",\"') || '\"]') AS j"
_PG_SPLIT = "unnest(string_to_array(s.groups, ';')) AS j(value)"


def sqlite_schema_reference(path: Path, rows: int, tmp: Path) -> tuple[float, float]:
    """``sqlite3 .import`` of the file into a fresh home's own schema (see the module's
    docstring): the wall time and peak RSS of the ``sqlite3`` process."""
    home = tmp / "schema-home"
    init_home(settings_for(home), store_passphrase=True)
    db = home / "iotsec.db"
    ref = run_child(["sqlite3", str(db), "PRAGMA journal_mode=WAL;",
                     "PRAGMA synchronous=NORMAL;", "PRAGMA foreign_keys=ON;",
                     "CREATE TEMP TABLE s (id TEXT, groups TEXT, attributes TEXT);",
                     f".import --csv --skip 1 --schema temp {path} s",
                     _SCHEMA_LOAD.format(split=_SQLITE_SPLIT)])
    if ref.returncode != 0 or ref.stderr.strip():
        raise RuntimeError(f"sqlite3 into the schema failed: {ref.stderr[-300:]}")
    check = sqlite3.connect(db)
    stored = check.execute("SELECT count(*) FROM device_roles").fetchone()[0]
    check.close()
    if stored != rows:
        raise AssertionError(f"the schema reference stored {stored} devices")
    return ref.seconds, ref.peak_rss_mib


def sqlite_round(path: Path, rows: int) -> dict[str, float]:
    with scratch_dir("iotsec-bench-csv-") as tmp:
        home = tmp / "home"
        init_home(settings_for(home), store_passphrase=True)
        seconds, peak = _iotsec_import(path, home, None)
        db = sqlite3.connect(home / "iotsec.db")
        stored = db.execute("SELECT count(*) FROM devices").fetchone()[0]
        db.close()
        if stored != rows:
            raise AssertionError(f"imported {stored} devices")
        ref_db = tmp / "ref.db"
        ref = run_child(["sqlite3", str(ref_db), "PRAGMA journal_mode=WAL;",
                         "PRAGMA synchronous=NORMAL;",
                         "CREATE TABLE d (id TEXT, groups TEXT, attributes TEXT);",
                         f".import --csv --skip 1 {path} d"])
        if ref.returncode != 0:
            raise RuntimeError(f"sqlite3 .import failed: {ref.stderr[-300:]}")
        schema_s, schema_mb = sqlite_schema_reference(path, rows, tmp)
    return {"ours_s": seconds, "ours_mb": peak, "ref_s": ref.seconds, "ref_mb": ref.peak_rss_mib,
            "schema_s": schema_s, "schema_mb": schema_mb}


def postgres_round(path: Path, rows: int, url: str) -> dict[str, float]:
    base = make_url(url)
    with fresh_database(base, "iotsec_import") as (name, db_url):
        with scratch_dir("iotsec-bench-csv-") as tmp:
            home = tmp / "home"
            init_home(Settings(home=home, database_url=db_url), store_passphrase=True)
            seconds, peak = _iotsec_import(path, home, db_url)
        engine = create_engine(db_url)
        with engine.begin() as conn:
            stored = conn.execute(text("SELECT count(*) FROM devices")).scalar_one()
            conn.execute(text("CREATE TABLE bare (id text, groups text, attributes text)"))
        engine.dispose()
        if stored != rows:
            raise AssertionError(f"imported {stored} devices")
        psql = ["psql", "-q", "-h", base.host or "127.0.0.1", "-p", str(base.port or 5432),
                "-U", base.username or "postgres", name, "-c",
                f"\\copy bare FROM '{path}' WITH (FORMAT csv, HEADER true)"]
        ref = run_child(psql)
        if ref.returncode != 0:
            raise RuntimeError(f"psql \\copy failed: {ref.stderr[-300:]}")
        schema_s, schema_mb = postgres_schema_reference(path, rows, base)
    return {"ours_s": seconds, "ours_mb": peak, "ref_s": ref.seconds, "ref_mb": ref.peak_rss_mib,
            "schema_s": schema_s, "schema_mb": schema_mb}


def postgres_schema_reference(path: Path, rows: int, base: URL) -> tuple[float, float]:
    """``psql \\copy`` of the file into the schema of a fresh home in a fresh database (see
    the module's docstring): the wall time and peak RSS of the ``psql`` process."""
    with fresh_database(base, "iotsec_import_ref") as (name, db_url):
        with scratch_dir("iotsec-bench-csv-ref-") as tmp:
            init_home(Settings(home=tmp / "home", database_url=db_url), store_passphrase=True)
            script = tmp / "load.sql"
            script.write_text(
                "\\set ON_ERROR_STOP on\n"
                "CREATE TEMP TABLE s (id text, groups text, attributes text);\n"
                f"\\copy s FROM '{path}' WITH (FORMAT csv, HEADER true)\n"
                + _SCHEMA_LOAD.format(split=_PG_SPLIT))
            ref = run_child(["psql", "-q", "-h", base.host or "127.0.0.1",
                             "-p", str(base.port or 5432), "-U", base.username or "postgres",
                             name, "-f", str(script)])
        if ref.returncode != 0:
            raise RuntimeError(f"psql into the schema failed: {ref.stderr[-300:]}")
        engine = create_engine(db_url)
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*) FROM device_roles")).scalar_one()
        engine.dispose()
        if stored != rows:
            raise AssertionError(f"the schema reference stored {stored} devices")
    return ref.seconds, ref.peak_rss_mib


def csv_main(rows: int, rounds: int, url: str | None, json_path: Path | None) -> int:
    machine = machine_info()
    print_machine(machine)
    path = csv_file(rows)
    backends = ["sqlite", *(["postgresql"] if url else [])]
    report = Report(f"Issue 18: iotsec device import of {rows:,} CSV rows", params={
        "file": f"{path} ({path.stat().st_size:,} bytes)", "rounds (median reported)": rounds,
        "backends": backends, "load average at start": load_average()})
    results: dict[str, list[dict[str, float]]] = {b: [] for b in backends}
    loads: list[str] = []
    for r in range(rounds):
        for backend in backends if r % 2 == 0 else backends[::-1]:
            one = (sqlite_round(path, rows) if backend == "sqlite"
                   else postgres_round(path, rows, url or ""))
            results[backend].append(one)
            loads.append(load_average())
            print(f"# round {r + 1} {backend}: ours {one['ours_s']:.2f} s "
                  f"{one['ours_mb']:.0f} MB, reference {one['ref_s']:.2f} s, into the "
                  f"schema {one['schema_s']:.2f} s; load {loads[-1]}", flush=True)
    for backend in backends:
        ours = statistics.median(x["ours_s"] for x in results[backend])
        ref = statistics.median(x["ref_s"] for x in results[backend])
        peak = max(x["ours_mb"] for x in results[backend])
        ratio = statistics.median(x["ours_s"] / x["ref_s"] for x in results[backend])
        name = "sqlite3 .import" if backend == "sqlite" else "psql \\copy"
        report.add(f"{backend}: iotsec device import (whole command)", ours, "s",
                   f"goal <= {CSV_GOALS[backend]:g} s: {verdict(ours <= CSV_GOALS[backend])}")
        report.add(f"{backend}: peak RSS", peak, "MiB",
                   f"goal <= {CSV_MB:g}: {verdict(peak <= CSV_MB)}")
        report.add(f"{backend}: reference {name}, bare table", ref, "s")
        report.add(f"{backend}: ratio ours / reference (median of rounds)", ratio, "x",
                   f"goal <= {CSV_RATIO:g}: {verdict(ratio <= CSV_RATIO)}")
        schema = statistics.median(x["schema_s"] for x in results[backend])
        schema_ratio = statistics.median(x["ours_s"] / x["schema_s"]
                                         for x in results[backend])
        report.add(f"{backend}: reference {name}, into the iotsec schema", schema, "s",
                   "same tables, keys, indexes, foreign keys; INSERT ... SELECT per table")
        report.add(f"{backend}: ratio ours / schema reference (median of rounds)",
                   schema_ratio, "x",
                   f"goal <= {CSV_RATIO:g}: {verdict(schema_ratio <= CSV_RATIO)}")
    report.params["load average per round"] = loads
    report.params["load average at end"] = load_average()
    report.print()
    report.write_json(json_path, machine)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 devices instead of 100,000")
    parser.add_argument("--count", type=int, help="devices to register (default 100,000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--csv", type=int, metavar="N",
                        help="time the whole CLI import of an N-row CSV file instead")
    parser.add_argument("--database-url", help="PostgreSQL server for --csv (a fresh "
                        "database per round), e.g. postgresql+psycopg://postgres@127.0.0.1/test")
    args = parser.parse_args(argv)
    if args.csv:
        return csv_main(args.csv, args.rounds, args.database_url, args.json)
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
