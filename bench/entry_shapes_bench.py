"""Statement shapes for the registry entries of first decisions: the server's CPU per device.

On the store seeded by ``bench/policy_scale_bench.py`` (PostgreSQL, 1,000,000 devices), each
shape reads the device row, its group names and its role names for statements of 1,000
sorted random ids, executed (rows at the end), streamed 50 rows at a time (as
``Reader.tuple_chunks`` does) or prepared. Printed per run: the server backend's CPU per
device (read from ``/proc``, in 10 ms ticks), this process's CPU and the rate. The shapes
are interleaved within each round. ``ours`` is the statement of
``iotsec.app.identity.device_reads``; ``ref3`` is the policy-scale bench's reference (three
plain SELECTs); ``devonly`` reads the device row alone (what links denormalised onto it
would cost). ``--range`` draws the ids from the first devices only (all in the shared
buffers when small).

    python bench/entry_shapes_bench.py --database decide_authz_scale ours,ref3 stream,exec
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import psycopg

from common import load_average
from policy_scale_bench import backend_cpu, reference_select

SHAPES: dict[str, str | None] = {
    "ours": "SELECT d.id, d.state, d.attributes, "
            "(SELECT string_agg(g.group_name, ' ') FROM device_groups g "
            "WHERE g.device_id = d.id), "
            "(SELECT string_agg(r.role_name, ' ') FROM device_roles r "
            "WHERE r.device_id = d.id) FROM devices d WHERE d.id = ANY(%(ids)s)",
    "union": "SELECT id, state, attributes FROM devices WHERE id = ANY(%(ids)s) UNION ALL "
             "SELECT device_id, '', group_name FROM device_groups "
             "WHERE device_id = ANY(%(ids)s) UNION ALL "
             "SELECT device_id, NULL, role_name FROM device_roles WHERE device_id = ANY(%(ids)s)",
    "joined": "SELECT d.id, d.state, d.attributes, g.n, r.n FROM devices d LEFT JOIN "
              "(SELECT device_id, string_agg(group_name, ' ') n FROM device_groups "
              "WHERE device_id = ANY(%(ids)s) GROUP BY device_id) g ON g.device_id = d.id "
              "LEFT JOIN (SELECT device_id, string_agg(role_name, ' ') n FROM device_roles "
              "WHERE device_id = ANY(%(ids)s) GROUP BY device_id) r ON r.device_id = d.id "
              "WHERE d.id = ANY(%(ids)s)",
    "devonly": "SELECT d.id, d.state, d.attributes FROM devices d WHERE d.id = ANY(%(ids)s)",
    "ref3": None,
}


def _read(conn: psycopg.Connection[Any], name: str, ids: list[str], mode: str) -> int:
    sql = SHAPES[name]
    with conn.transaction():
        if sql is None:
            return reference_select(conn, ids)
        cur = conn.cursor()
        if mode == "stream":
            return sum(1 for _ in cur.stream(sql, {"ids": ids}, size=50))
        return len(cur.execute(sql, {"ids": ids}, prepare=mode == "prep").fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("modes", nargs="?", default="exec", help="of exec, stream, prep")
    parser.add_argument("--database", default="decide_authz_scale")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--devices", type=int, default=20_000, help="per run")
    parser.add_argument("--range", type=int, default=1_000_000)
    args = parser.parse_args()
    rnd = random.Random(11)
    results: dict[tuple[str, str], list[str]] = {}
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={args.database}") as conn:
        pid = conn.info.backend_pid
        for _ in range(args.rounds):
            for name in args.shapes.split(","):
                for mode in args.modes.split(","):
                    ids = sorted(f"dev-{i:07d}" for i in rnd.sample(range(1, args.range + 1),
                                                                    args.devices))
                    server, cpu = backend_cpu([pid]), time.process_time()
                    start = time.perf_counter()
                    for i in range(0, len(ids), 1000):
                        _read(conn, name, ids[i:i + 1000], mode)
                    rate = len(ids) / (time.perf_counter() - start)
                    results.setdefault((name, mode), []).append(
                        f"server {(backend_cpu([pid]) - server) / len(ids) * 1e6:.1f} µs, "
                        f"process {(time.process_time() - cpu) / len(ids) * 1e6:.1f} µs, "
                        f"{rate:,.0f}/s")
    print(f"entry statement shapes, {args.devices:,} random devices of the first "
          f"{args.range:,} per run, load average {load_average()}")
    for (name, mode), runs in results.items():
        print(f"  {name:<8} {mode:<7} " + "; ".join(runs))


if __name__ == "__main__":
    main()
