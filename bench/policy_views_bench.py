"""The compiled policy's per-device views past their bound (issue 18).

A compiled policy keeps, for each device it decided for, what its decisions need (its
view: its roles' rules, its checked variables), at most 500,000 of them. At 1,000,000
devices asked about at random a bound that empties itself keeps on average a quarter of
the fleet; one that drops its oldest views keeps half. This bench decides ``--decisions``
times for devices drawn at random from ``--devices`` identities (each the same object on
every decision, as the registry cache gives it), after as many decisions to fill the
views, and reports the steady rate, the CPU per decision and the views kept. Reference in
the same run: the same decisions for ``--devices`` // 10 devices (every view kept).

    python bench/policy_views_bench.py [--devices 1000000] [--decisions 1000000]
"""

from __future__ import annotations

import argparse
import gc
import random
import time

from common import load_average
from iotsec.access.engine import CompiledPolicy
from iotsec.access.policy import Identity, Role, default_device_role, parse_rule_spec


def _run(policy: CompiledPolicy, identities: list[Identity], picks: list[int]
         ) -> tuple[float, float]:
    """(decisions/s, CPU µs per decision) of one pass over ``picks``."""
    decide = policy.decide
    start, cpu = time.perf_counter(), time.process_time()
    for i in picks:
        me = identities[i]
        decide(me, "publish", f"devices/{me.device_id}/t")
    wall = time.perf_counter() - start
    return len(picks) / wall, (time.process_time() - cpu) / len(picks) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--decisions", type=int, default=1_000_000)
    args = parser.parse_args()
    fleet = Role("fleet", (parse_rule_spec("allow", "subscribe:fleet/${device.group}/#"),))
    identities = [Identity(f"dev-{i:07d}", ("g1",) if i % 2 else (), {}, f"dev-{i:07d}",
                           None, ("device",)) for i in range(args.devices)]
    gc.freeze()
    rnd = random.Random(3)
    rows = []
    for name, size in (("fleet", args.devices), ("reference (a tenth)", args.devices // 10)):
        policy = CompiledPolicy([default_device_role(), fleet], group_roles={"g1": ["fleet"]})
        _run(policy, identities, [rnd.randrange(size) for _ in range(args.decisions)])
        rate, cpu_us = _run(policy, identities,
                            [rnd.randrange(size) for _ in range(args.decisions)])
        rows.append((name, size, rate, cpu_us, len(policy._views)))
    print(f"compiled policy's views, {args.decisions:,} random decisions after as many to "
          f"fill, load average {load_average()}")
    for name, size, rate, cpu_us, kept in rows:
        print(f"  {name:<20} {size:>9,} devices: {rate:>9,.0f} decisions/s, CPU "
              f"{cpu_us:.2f} µs per decision, {kept:,} views kept at the end")
    print(f"  ratio to the reference (CPU per decision): {rows[0][3] / rows[1][3]:.2f}x")


if __name__ == "__main__":
    main()
