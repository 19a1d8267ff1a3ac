"""Continuous detection (issue goal: keep up with a broker log of 20,000 lines/s with
under 1 s from log line to alert).

1. Throughput: a Mosquitto log of --lines lines in the broker's own formats (mostly
   ``Received PUBLISH`` lines at debug level, with connects, disconnects, denied publishes
   and TLS failures from 1,000 devices) read by the detector
   (:class:`iotsec.app.detect.loop.Leader`, the built-in rules, a fresh SQLite home): every
   line parsed, its events appended to the chain, every rule applied. References, same
   run, same file: ``grep -c ''`` and a plain Python loop counting the file's lines (the
   floor of reading it).
2. Latency: a writer appends to the log at --rate lines/s (in 10 ms slices) while the
   detector loop of ``iotsec serve`` (:func:`iotsec.app.detect.loop.detector_loop`)
   follows it; every second it writes 21 TLS failures from a new source address, and a
   reader polls the alert table every 5 ms: the time from the attack's last line written
   to its alert committed. At the end, how far behind the detector is (bytes).

    python bench/detection_bench.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import threading
import time
from pathlib import Path

from sqlalchemy import select

from common import Report, fresh_runtime, load_average, machine_info, print_machine, verdict
from iotsec.app.detect.loop import Leader, detector_loop
from iotsec.app.detect.status import detect_status
from iotsec.app.runtime import Runtime
from iotsec.store import models as m
from iotsec.store.db import reading

GOAL_RATE = 20_000
GOAL_LATENCY = 1.0
DEVICES = 1000


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(t))


def _lines(count: int, start: float, rng: random.Random) -> list[str]:
    out = []
    for i in range(count):
        at = _stamp(start + i / GOAL_RATE)
        d = rng.randrange(DEVICES)
        roll = rng.random()
        if roll < 0.90:
            out.append(f"{at}: Received PUBLISH from dev-{d:04d} (d0, q1, r0, m{i % 65535}, "
                       f"'devices/dev-{d:04d}/telemetry', ... ({rng.randrange(20, 400)} "
                       "bytes))")
        elif roll < 0.94:
            out.append(f"{at}: New client connected from 10.{d // 250}.{d % 250}.7:"
                       f"{40000 + d} as dev-{d:04d} (p5, c1, k60, u'dev-{d:04d}').")
        elif roll < 0.98:
            out.append(f"{at}: Client dev-{d:04d} disconnected.")
        elif roll < 0.995:
            out.append(f"{at}: Denied PUBLISH from dev-{d:04d} (d0, q1, r0, m1, "
                       f"'devices/other/cmd', ... (5 bytes))")
        else:
            out.append(f"{at}: Client connection from 198.51.{d % 200}.{d % 250} failed: "
                       "error:0A0000C7:SSL routines::peer did not return a certificate.")
    return out


def throughput(rt: Runtime, log: Path, lines: int) -> dict[str, float]:
    rng = random.Random(7)
    log.write_text("\n".join(_lines(lines, time.time() - lines / GOAL_RATE, rng)) + "\n")
    t0 = time.perf_counter()
    out = subprocess.run(["grep", "-c", "", str(log)], capture_output=True, check=True)
    grep = time.perf_counter() - t0
    assert int(out.stdout) == lines
    t0 = time.perf_counter()
    n = 0
    with log.open("rb") as fh:
        for _ in fh:
            n += 1
    plain = time.perf_counter() - t0
    leader = Leader(rt, log_file=log, checks=False)
    t0, c0 = time.perf_counter(), time.process_time()
    while leader.once():
        pass
    ours = time.perf_counter() - t0
    cpu = time.process_time() - c0
    leader.stop()
    assert leader.lines == lines, leader.lines
    return {"lines": lines, "ours_s": ours, "ours_rate": lines / ours, "ours_cpu_rate": lines / cpu,
            "grep_s": grep, "grep_rate": lines / grep, "python_s": plain,
            "python_rate": lines / plain, "alerts": len(leader.alerts)}


def latency(rt: Runtime, log: Path, rate: int, seconds: float) -> dict[str, float]:
    log.write_text("")
    rng = random.Random(11)
    stop = threading.Event()
    detector = threading.Thread(target=detector_loop, args=(rt, stop),
                                kwargs={"log_file": log}, daemon=True)
    detector.start()
    time.sleep(1.0)  # the lease taken, the log opened
    written: dict[str, float] = {}  # alert subject -> when its last line was written
    seen: dict[str, float] = {}

    def poll() -> None:
        a = m.alerts.c
        while not stop.is_set() or len(seen) < len(written):
            with reading(rt.engine) as conn:
                for row in conn.execute(select(a.subject).where(a.rule == "authn-failures-by-"
                                                                "source")):
                    seen.setdefault(row.subject, time.perf_counter())
            if stop.is_set() and time.perf_counter() - stopped[0] > 5:
                return
            time.sleep(0.02)

    stopped = [float("inf")]
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    slice_lines = rate // 100
    # Made beforehand: the writer only writes (it shares this process with the detector).
    slices = [_lines(slice_lines, time.time(), rng) for _ in range(int(seconds * 100) + 1)]
    t_start = time.perf_counter()
    total = 0
    attack = 0
    next_attack = t_start + 1.0
    with log.open("a") as fh:
        for chunk in slices:
            if time.perf_counter() - t_start >= seconds:
                break
            due = t_start + (total + slice_lines) / rate
            subject = None
            if time.perf_counter() >= next_attack:
                attack += 1
                subject = f"source:203.0.{attack}.9"
                chunk = chunk + [
                    f"{_stamp(time.time())}: Client connection from 203.0.{attack}.9 failed: "
                    "error:0A0000C7:SSL routines::peer did not return a certificate."] * 21
                next_attack += 1.0
            fh.write("\n".join(chunk) + "\n")
            fh.flush()
            if subject is not None:
                written[subject] = time.perf_counter()
            total += len(chunk)
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
    elapsed = time.perf_counter() - t_start
    time.sleep(2.0)
    stopped[0] = time.perf_counter()
    lag = next(s.lag for s in detect_status(rt).sources if s.source == "mosquitto-log")
    stop.set()
    detector.join(10)
    poller.join(10)
    delays = sorted(seen[s] - t for s, t in written.items() if s in seen)
    return {"lines": total, "seconds": elapsed, "offered_rate": total / elapsed,
            "attacks": len(written), "alerts": len(delays),
            "latency_median": statistics.median(delays) if delays else float("nan"),
            "latency_max": max(delays) if delays else float("nan"), "lag_bytes": lag}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=GOAL_RATE)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.lines, args.seconds = 50_000, 4.0
    machine = machine_info()
    print_machine(machine)
    report = Report("Continuous detection", {"lines": args.lines, "rate": args.rate,
                                             "seconds": args.seconds,
                                             "load": load_average()})
    with fresh_runtime("detect-bench-") as rt:
        log = rt.settings.resolved_home / "mosquitto.log"
        t = throughput(rt, log, args.lines)
    print(f"load before latency run: {load_average()}")
    with fresh_runtime("detect-bench-") as rt:
        log = rt.settings.resolved_home / "mosquitto.log"
        lat = latency(rt, log, args.rate, args.seconds)
    print(f"1. throughput, {t['lines']:,} lines: ours {t['ours_rate']:,.0f} lines/s "
          f"({t['ours_s']:.2f} s, {t['ours_cpu_rate']:,.0f} per CPU-second, "
          f"{t['alerts']:.0f} alerts); grep -c {t['grep_rate']:,.0f} "
          f"lines/s; plain Python line loop {t['python_rate']:,.0f} lines/s; ratio "
          f"(python/ours) {t['python_rate'] / t['ours_rate']:.1f}  "
          f"{verdict(t['ours_rate'] >= GOAL_RATE)}")
    print(f"2. live at {lat['offered_rate']:,.0f} lines/s offered for {lat['seconds']:.1f} s: "
          f"{lat['alerts']:.0f}/{lat['attacks']:.0f} attacks alerted, line-to-alert median "
          f"{lat['latency_median']:.3f} s, max {lat['latency_max']:.3f} s; lag at the end "
          f"{lat['lag_bytes']:.0f} bytes  "
          f"{verdict(lat['latency_max'] < GOAL_LATENCY and lat['alerts'] == lat['attacks'])}")
    report.add("detector throughput", t["ours_rate"], "lines/s")
    report.add("detector throughput per CPU-second", t["ours_cpu_rate"], "lines/s")
    report.add("grep -c, same file", t["grep_rate"], "lines/s")
    report.add("plain Python line loop, same file", t["python_rate"], "lines/s")
    report.add("line to alert, median", lat["latency_median"], "s")
    report.add("line to alert, max", lat["latency_max"], "s")
    report.add("lag at the end", lat["lag_bytes"], "bytes")
    report.print()
    report.write_json(args.json, machine)


if __name__ == "__main__":
    main()
