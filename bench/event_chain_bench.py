"""The tamper-evident event log (issue goals: append with the hash chain at >= 50,000
events/s; verify 1,000,000 events in under 5 s).

1. Append: N events (device-like actors, a source address, a small JSON detail) appended
   with ``iotsec.app.events.append_events`` in batches of 1,000 (what a serving process's
   buffered sink writes per flush), one transaction per batch, to a fresh SQLite home.
   Reference, same run: the same rows inserted with the same batches and transactions
   into a second fresh home **without** the chain (``insert(events)``, no position, no
   hash, no chain lock), so the ratio is the cost of the chain. Rounds interleaved.
2. Verify: ``iotsec.app.monitor.chain.verify`` over the whole chain (seeded to --verify-size
   events, one signed checkpoint). References: reading the same columns with a plain
   SELECT, and ``hashlib.sha256`` over each row's fields joined with '|' (plain hashing,
   no chain, no encoding).

    python bench/event_chain_bench.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from common import (
    Report,
    fresh_runtime,
    load_average,
    machine_info,
    print_machine,
    verdict,
)
from iotsec.app.events import Event, append_events
from iotsec.app.monitor.chain import checkpoint, verify
from iotsec.app.runtime import Runtime
from iotsec.store import models as m
from iotsec.store.db import reading, transaction

BATCH = 1000


def _rows(rt: Runtime, start: int, count: int) -> list[dict[str, Any]]:
    now = rt.now()
    return [Event(at=now, kind="auth", outcome="success" if i % 7 else "denied",
                  actor=f"dev-{(start + i) % 100_000:06d}", source="10.20.30.40",
                  subject="/v1/authz/check", detail={"action": "publish", "topic": "t/1"}
                  ).row() for i in range(count)]


def _append(rt: Runtime, total: int, chained: bool) -> float:
    done = 0
    elapsed = 0.0
    while done < total:
        rows = _rows(rt, done, min(BATCH, total - done))
        start = time.perf_counter()
        with transaction(rt.engine) as conn:
            if chained:
                append_events(conn, rows)
            else:
                conn.execute(insert(m.events), rows)
        elapsed += time.perf_counter() - start
        done += len(rows)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--append-size", type=int, default=200_000)
    parser.add_argument("--verify-size", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="50,000 / 100,000 events")
    parser.add_argument("--json", metavar="FILE", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.append_size, args.verify_size, args.rounds = 50_000, 100_000, 2
    machine = machine_info()
    print_machine(machine)
    report = Report("Event log: hash-chained append and verification",
                    params={"append": f"{args.append_size:,} events, batches of {BATCH}",
                            "verify": f"{args.verify_size:,} events", "store": "SQLite (WAL)"})
    ours_rates, plain_rates = [], []
    for _ in range(args.rounds):
        with fresh_runtime("iotsec-chain-") as rt:
            ours_rates.append(args.append_size / _append(rt, args.append_size, True))
        with fresh_runtime("iotsec-plain-") as rt:
            plain_rates.append(args.append_size / _append(rt, args.append_size, False))
    ours, plain = statistics.median(ours_rates), statistics.median(plain_rates)
    report.add("append, hash chain (ours)", ours, "events/s")
    report.add("insert without chain (reference)", plain, "events/s")
    report.add("ratio ours / reference", ours / plain, "")
    report.check(f"append >= 50,000 events/s: {verdict(ours >= 50_000)} ({ours:,.0f}/s)")

    with fresh_runtime("iotsec-verify-") as rt:
        _append(rt, args.verify_size, True)
        checkpoint(rt)
        rt.events.flush()
        start = time.perf_counter()
        result = verify(rt)
        ours_verify = time.perf_counter() - start
        if not result.ok or result.entries < args.verify_size:
            raise SystemExit(f"the chain did not verify: {result.faults}")
        e = m.events.c
        start = time.perf_counter()
        with reading(rt.engine) as conn:
            rows = conn.execute(select(e.seq, e.at, e.kind, e.outcome, e.actor, e.source,
                                       e.subject, e.detail, e.hash).order_by(e.seq)).all()
        select_time = time.perf_counter() - start
        start = time.perf_counter()
        for r in rows:
            hashlib.sha256("|".join(map(str, r)).encode()).hexdigest()
        hash_time = time.perf_counter() - start
    report.add("verify (ours)", ours_verify, "s", f"{result.entries:,} entries")
    report.add("plain SELECT of the same columns", select_time, "s")
    report.add("hashlib over each row, fields joined", hash_time, "s")
    report.add("ratio ours / (SELECT + hashing)", ours_verify / (select_time + hash_time), "")
    per_million = ours_verify * 1_000_000 / result.entries
    report.check(f"verify 1,000,000 events < 5 s: {verdict(per_million < 5)} "
                 f"({per_million:.2f} s per million)")
    report.check(f"load average at the end: {load_average()}")
    report.print()
    report.write_json(args.json, machine)


if __name__ == "__main__":
    main()
