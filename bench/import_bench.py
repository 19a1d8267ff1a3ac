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
bare table of a fresh database; and the floor, the same tools putting the same rows into
the schema of a fresh iotsec home (its tables, keys and indexes, as ``iotsec init`` makes
them) with the least work each database allows, in one transaction and with the checks the
import skips skipped too (the name triggers; on PostgreSQL the per-row reference checks):
on SQLite ``.import`` of the file into a temporary table, then one ``INSERT ... SELECT``
per table (attributes and names stored as the file gives them, the group links split by
``instr``/``substr``); on PostgreSQL ``\\copy`` of the rows already split per table into
three files made once beforehand (untimed). No importer that writes this schema can go
below the floor; the ratio of the floor to the bare table says how much of the goal's 5x
the schema itself takes. Times and each child's own peak RSS (wait4).
Goals: <= 15 s SQLite, <= 20 s PostgreSQL, <= 5x the reference, <= 200 MB.
"""

from __future__ import annotations

import argparse
import csv
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


#: The SQLite floor after the file is in the temporary table ``s`` (``id,groups,attributes``,
#: at most two groups a row, as :func:`csv_file` writes them): in one transaction, with the
#: name triggers dropped as the import drops them (its rows carry their names), the groups,
#: the device rows (attributes and names as the file gives them), the group links split by
#: ``instr``/``substr`` (the first names, then the second ones) and a ``device`` role
#: binding each; ``{triggers}`` makes the triggers again.
_SQLITE_FLOOR = """
BEGIN IMMEDIATE;
DROP TRIGGER iotsec_device_groups_names_inserted;
DROP TRIGGER iotsec_device_roles_names_inserted;
CREATE TEMP VIEW n AS
  SELECT CASE WHEN instr(groups, ';') = 0 THEN groups
              ELSE substr(groups, 1, instr(groups, ';') - 1) END AS name FROM s
  WHERE groups <> ''
  UNION SELECT substr(groups, instr(groups, ';') + 1) FROM s WHERE instr(groups, ';') > 0;
INSERT INTO groups (name, created_at) SELECT name, 0 FROM n;
INSERT INTO devices (id, state, attributes, created_at, updated_at, group_names, role_names)
  SELECT id, 'pending', attributes, 0, 0, replace(groups, ';', ' '), 'device' FROM s;
INSERT INTO device_groups (device_id, group_name)
  SELECT id, CASE WHEN instr(groups, ';') = 0 THEN groups
                  ELSE substr(groups, 1, instr(groups, ';') - 1) END FROM s WHERE groups <> '';
INSERT INTO device_groups (device_id, group_name)
  SELECT id, substr(groups, instr(groups, ';') + 1) FROM s WHERE instr(groups, ';') > 0;
INSERT INTO device_roles (device_id, role_name) SELECT id, 'device' FROM s;
{triggers}
COMMIT;
"""


def _stored(db: Path) -> list[int]:
    """The devices, group links and role bindings a SQLite store holds."""
    check = sqlite3.connect(db)
    try:
        return [int(check.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # noqa: S608
                for t in ("devices", "device_groups", "device_roles")]
    finally:
        check.close()


def _expected(rows: int) -> list[int]:
    """What an import of :func:`csv_file`'s N rows stores: N devices, a group link each and
    a second for every other row, a role binding each."""
    return [rows, rows + (rows + 1) // 2, rows]


def sqlite_floor(path: Path, rows: int, tmp: Path) -> tuple[float, float]:
    """The floor on SQLite (see the module's docstring): the ``sqlite3`` shell's wall time
    and peak RSS, from ``.import`` of the file to the commit of its rows in a fresh home's
    schema."""
    home = tmp / "floor-home"
    init_home(settings_for(home), store_passphrase=True)
    db = home / "iotsec.db"
    check = sqlite3.connect(db)
    triggers = [sql for (sql,) in check.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name IN "
        "('iotsec_device_groups_names_inserted', 'iotsec_device_roles_names_inserted')")]
    check.close()
    if len(triggers) != 2:
        raise RuntimeError(f"the home has {len(triggers)} of the two name triggers")
    ref = run_child(["sqlite3", str(db), "PRAGMA journal_mode=WAL;",
                     "PRAGMA synchronous=NORMAL;",
                     "CREATE TEMP TABLE s (id TEXT, groups TEXT, attributes TEXT);",
                     f".import --csv --skip 1 --schema temp {path} s",
                     _SQLITE_FLOOR.format(triggers="".join(f"{t};\n" for t in triggers))])
    if ref.returncode != 0 or ref.stderr.strip():
        raise RuntimeError(f"sqlite3 into the schema failed: {ref.stderr[-300:]}")
    if _stored(db) != _expected(rows):
        raise AssertionError(f"the floor stored {_stored(db)}")
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
        floor_s, floor_mb = sqlite_floor(path, rows, tmp)
    return {"ours_s": seconds, "ours_mb": peak, "ref_s": ref.seconds, "ref_mb": ref.peak_rss_mib,
            "floor_s": floor_s, "floor_mb": floor_mb}


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
        floor_s, floor_mb = postgres_floor(path, rows, base)
    return {"ours_s": seconds, "ours_mb": peak, "ref_s": ref.seconds, "ref_mb": ref.peak_rss_mib,
            "floor_s": floor_s, "floor_mb": floor_mb}


def split_files(path: Path) -> tuple[Path, Path, Path, list[str]]:
    """The rows of :func:`csv_file`'s file as the import stores them, one CSV file per
    table (devices with their sorted names and attributes as JSON, group links, role
    bindings), made once; and the groups they name."""
    out = tuple(path.with_suffix(f".{table}.csv")
                for table in ("devices", "device_groups", "device_roles"))
    names: set[str] = set()
    with path.open(newline="") as source:
        reader = csv.reader(source)
        next(reader)
        if all(p.exists() for p in out):
            names.update(n for row in reader for n in row[1].split(";") if n)
            return out[0], out[1], out[2], sorted(names)
        tmp = [p.with_suffix(".tmp") for p in out]
        with tmp[0].open("w", newline="") as d, tmp[1].open("w", newline="") as g, \
                tmp[2].open("w", newline="") as r:
            devices, groups, roles = csv.writer(d), csv.writer(g), csv.writer(r)
            for device_id, listed, attributes in reader:
                held = sorted(n for n in listed.split(";") if n)
                names.update(held)
                pairs = dict(a.split("=", 1) for a in attributes.split(";") if a)
                devices.writerow((device_id, "pending", json.dumps(pairs, sort_keys=True), 0,
                                  0, " ".join(held), "device"))
                groups.writerows((device_id, n) for n in held)
                roles.writerow((device_id, "device"))
    for t, p in zip(tmp, out, strict=True):
        t.rename(p)
    return out[0], out[1], out[2], sorted(names)


def postgres_floor(path: Path, rows: int, base: URL) -> tuple[float, float]:
    """The floor on PostgreSQL (see the module's docstring): ``psql``'s wall time and peak
    RSS for ``\\copy`` of the rows, already split per table, into the schema of a fresh
    home in a fresh database, in one transaction without the per-row reference checks and
    triggers, and with the device rows' names vouched for (as the import runs)."""
    devices_csv, groups_csv, roles_csv, names = split_files(path)
    with fresh_database(base, "iotsec_import_floor") as (name, db_url):
        with scratch_dir("iotsec-bench-csv-floor-") as tmp:
            init_home(Settings(home=tmp / "home", database_url=db_url), store_passphrase=True)
            script = tmp / "load.sql"
            groups = ", ".join(f"('{n}', 0)" for n in names)
            script.write_text(
                "\\set ON_ERROR_STOP on\n"
                "BEGIN;\n"
                "SET LOCAL session_replication_role = replica;\n"
                "SET LOCAL iotsec.device_names_written = 'on';\n"
                f"INSERT INTO groups (name, created_at) VALUES {groups};\n"
                "\\copy devices (id, state, attributes, created_at, updated_at, group_names, "
                f"role_names) FROM '{devices_csv}' WITH (FORMAT csv)\n"
                f"\\copy device_groups (device_id, group_name) FROM '{groups_csv}' "
                "WITH (FORMAT csv)\n"
                f"\\copy device_roles (device_id, role_name) FROM '{roles_csv}' "
                "WITH (FORMAT csv)\n"
                "COMMIT;\n")
            ref = run_child(["psql", "-q", "-h", base.host or "127.0.0.1",
                             "-p", str(base.port or 5432), "-U", base.username or "postgres",
                             name, "-f", str(script)])
        if ref.returncode != 0:
            raise RuntimeError(f"psql into the schema failed: {ref.stderr[-300:]}")
        engine = create_engine(db_url)
        with engine.connect() as conn:
            stored = [int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())  # noqa: S608
                      for t in ("devices", "device_groups", "device_roles")]
        engine.dispose()
        if stored != _expected(rows):
            raise AssertionError(f"the floor stored {stored}")
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
                  f"floor {one['floor_s']:.2f} s; load {loads[-1]}", flush=True)
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
        floor = statistics.median(x["floor_s"] for x in results[backend])
        tool = "sqlite3" if backend == "sqlite" else "psql"
        report.add(f"{backend}: floor, {tool} into the iotsec schema", floor, "s",
                   "the least the database's own tool needs: its keys, indexes, one "
                   "transaction, checks skipped as the import skips them")
        report.add(f"{backend}: ratio floor / reference (median of rounds)",
                   statistics.median(x["floor_s"] / x["ref_s"] for x in results[backend]), "x",
                   "no importer that writes this schema can go below it")
        report.add(f"{backend}: ratio ours / floor (median of rounds)",
                   statistics.median(x["ours_s"] / x["floor_s"] for x in results[backend]),
                   "x", "what reading and checking the file and the store's layers add")
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
