"""Network segmentation benchmarks.

1. Compile a policy of 1,000 zones and 10,000 rules to nftables (goal: under 2 s).
   Measured from the parsed policy (the compiler) and from the file's bytes (parse +
   validate + compile, what 'iotsec netseg compile' does). Reference in the same run:
   ``nft -c -f`` on the compiled output (nftables parsing and checking the same ruleset in
   the kernel's transaction, without applying it; root only).
2. ``check`` on that policy (goal: under 1 ms per query). Ours: the indexed ``Decider``
   (build time reported separately). Reference in the same run: ``decide_linear``, the
   plain first-match scan over every rule; the two are also checked to agree.

Run: ``python bench/netseg_bench.py [--quick] [--zones N] [--rules N] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from iotsec.netseg.decide import Decider, Flow, decide_linear
from iotsec.netseg.findings import review
from iotsec.netseg.model import Policy
from iotsec.netseg.nftables import compile_nftables
from iotsec.netseg.policy import parse_policy
from iotsec.netseg.services import SERVICES

SERVICE_NAMES = ["mqtts", "https", "coaps", "ssh", "dns", "ntp", "syslog-tls", "opcua",
                 "amqps", "mqtt-wss"]


def zone_net4(i: int) -> str:
    return f"10.{i // 256}.{i % 256}.0/24"


def build_policy_text(zones: int, rules: int, seed: int = 8) -> str:
    """A site of ``zones`` zones (IPv4 /24 each, every other one also an IPv6 /64) and
    ``rules`` rules between them: mostly zone to zone with services or ports, some zone
    lists, CIDRs, ``any`` sources and deny/reject rules, a few rules to the firewall."""
    rnd = random.Random(seed)
    out = ["version: 1", "firewall:", "  addresses: [10.255.255.1, \"fd00:ffff::1\"]",
           "  log_drops: true", "zones:"]
    for i in range(zones):
        v6 = f', "fd00:{i:x}::/64"' if i % 2 == 0 else ""
        extra = "admin: true, " if i == 0 else ""
        out.append(f"  - {{name: z{i}, vlan: {i % 4094 + 1}, {extra}"
                   f"interface: vl{i}, subnets: [{zone_net4(i)}{v6}]}}")
    out.append("rules:")
    for r in range(rules):
        kind = rnd.random()
        src = f"z{rnd.randrange(zones)}"
        dst = f"z{rnd.randrange(zones)}"
        action = "allow"
        if kind < 0.05:
            src = f"10.{rnd.randrange(4)}.0.0/16"
        elif kind < 0.10:
            src = f"[z{rnd.randrange(zones)}, z{rnd.randrange(zones)}, z{rnd.randrange(zones)}]"
        elif kind < 0.12:
            src = "any"
        elif kind < 0.14:
            dst = "self"
        if rnd.random() < 0.1:
            action = rnd.choice(["deny", "reject"])
        if rnd.random() < 0.6:
            svcs = rnd.sample(SERVICE_NAMES, rnd.randint(1, 3))
            l4 = f"services: [{', '.join(svcs)}]"
        else:
            ports = sorted(rnd.sample(range(1024, 20000), rnd.randint(1, 4)))
            l4 = f"proto: {rnd.choice(['tcp', 'udp'])}, ports: [{', '.join(map(str, ports))}]"
        out.append(f"  - {{name: r{r}, action: {action}, from: {src}, to: {dst}, {l4}}}")
    return "\n".join(out) + "\n"


def _host(nets: tuple[object, ...], rnd: random.Random) -> str | None:
    if not nets:
        return None
    net = rnd.choice(nets)
    return str(net.network_address + rnd.randrange(net.num_addresses))  # type: ignore[attr-defined]


def flows(policy: Policy, n: int, seed: int = 9) -> list[Flow]:
    """Half the queries aimed at a random rule (its zones, protocol and a port it names),
    half random pairs of zone hosts on common or random ports (mostly default deny)."""
    rnd = random.Random(seed)
    out: list[Flow] = []
    services = [p for s in SERVICES.values() for p in s.ports]
    zones = policy.zones
    local = [str(a) for a in policy.firewall.addresses if a.version == 4]
    while len(out) < n:
        if rnd.random() < 0.5:
            rule = rnd.choice(policy.rules)
            src = _host(rule.src.v4, rnd) if rule.src.kind.value == "nets" else \
                _host(rnd.choice(zones).v4, rnd)
            dst = rnd.choice(local) if rule.chain == "input" else (
                _host(rule.dst.v4, rnd) if rule.dst.kind.value == "nets" else
                _host(rnd.choice(zones).v4, rnd))
            m = rnd.choice(rule.matches)
            if src is None or dst is None or m.proto not in ("tcp", "udp"):
                continue
            lo, hi = rnd.choice(m.ports) if m.ports else (1, 65535)
            out.append(Flow.parse(src, dst, m.proto, rnd.randint(lo, hi)))
            continue
        src = _host(rnd.choice(zones).v4, rnd)
        dst = _host(rnd.choice(zones).v4, rnd)
        if rnd.random() < 0.5:
            proto, port = rnd.choice(services)
        else:
            proto, port = rnd.choice(["tcp", "udp"]), rnd.randrange(1024, 20000)
        if src and dst:
            out.append(Flow.parse(src, dst, proto, port))
    return out


def nft_check_seconds(ruleset: str) -> float | str:
    nft = shutil.which("nft") or ("/usr/sbin/nft" if os.path.exists("/usr/sbin/nft") else None)
    if nft is None:
        return "nft not installed (apt-get install nftables)"
    if os.geteuid() != 0:
        return "nft -c needs root"
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as fh:
        fh.write(ruleset)
        path = fh.name
    try:
        t0 = time.perf_counter()
        proc = subprocess.run([nft, "-c", "-f", path], capture_output=True, text=True,
                              check=False)
        took = time.perf_counter() - t0
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        return f"nft refused the ruleset: {proc.stderr.strip()[:300]}"
    return took


def best_of(k: int, fn: object) -> float:
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 zones, 1,000 rules")
    ap.add_argument("--zones", type=int, default=1000)
    ap.add_argument("--rules", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    if args.quick:
        args.zones, args.rules, args.queries = 100, 1000, 2000
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {os.uname().machine} nproc={os.cpu_count()} "
          f"python {sys.version.split()[0]} load {os.getloadavg()[0]:.2f}")
    data = build_policy_text(args.zones, args.rules).encode()
    print(f"# policy: {args.zones} zones, {args.rules} rules, {len(data) / 1e6:.2f} MB")

    policy = parse_policy(data)
    parse_s = best_of(3, lambda: parse_policy(data))
    compile_s = best_of(3, lambda: compile_nftables(policy))
    ruleset = compile_nftables(policy)
    end_to_end_s = best_of(3, lambda: compile_nftables(parse_policy(data)))
    review_s = best_of(1, lambda: review(policy))
    nft_s = nft_check_seconds(ruleset)
    lines = ruleset.count("\n")

    t0 = time.perf_counter()
    decider = Decider(policy)
    index_s = time.perf_counter() - t0
    qs = flows(policy, args.queries)
    sample = qs[: max(len(qs) // 20, 200)]
    for f in sample:  # agreement with the reference, and warm-up
        ours, ref = decider.decide(f), decide_linear(policy, f)
        assert (ours.action, ours.rule) == (ref.action, ref.rule), (f, ours, ref)
    t0 = time.perf_counter()
    allowed = sum(decider.decide(f).allowed for f in qs)
    ours_q = (time.perf_counter() - t0) / len(qs)
    t0 = time.perf_counter()
    for f in sample:
        decide_linear(policy, f)
    naive_q = (time.perf_counter() - t0) / len(sample)
    # What one 'iotsec netseg check' invocation pays on top of the query: parse and index.
    cold_s = best_of(1, lambda: Decider(parse_policy(data)).decide(qs[0]))

    rows = [
        ("compile (parsed policy -> nftables text)", f"{compile_s * 1000:.0f} ms",
         "goal < 2 s"),
        ("parse + validate (bytes -> policy)", f"{parse_s * 1000:.0f} ms", ""),
        ("compile end to end (bytes -> nftables text)", f"{end_to_end_s * 1000:.0f} ms",
         "goal < 2 s"),
        ("reference: nft -c -f on the output", f"{nft_s * 1000:.0f} ms" if isinstance(
            nft_s, float) else nft_s, f"{lines} lines"),
        ("review (findings, incl. shadowing)", f"{review_s * 1000:.0f} ms", ""),
        ("check: index build", f"{index_s * 1000:.0f} ms", ""),
        ("check: per query (indexed)", f"{ours_q * 1e6:.1f} us", "goal < 1 ms"),
        ("reference: linear first-match scan", f"{naive_q * 1e6:.1f} us", ""),
        ("check: one CLI call's work (parse + index + query)", f"{cold_s * 1000:.0f} ms", ""),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}  {note}")
    if isinstance(nft_s, float):
        print(f"ratio nft -c / our end-to-end compile: {nft_s / end_to_end_s:.1f}x")
    print(f"ratio linear scan / indexed check: {naive_q / ours_q:.0f}x "
          f"({allowed / len(qs):.1%} of queries allowed)")
    ok = end_to_end_s < 2.0 and ours_q < 1e-3
    print("goals met" if ok else "GOAL MISSED")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "zones": args.zones, "rules": args.rules, "parse_s": parse_s,
            "compile_s": compile_s, "end_to_end_s": end_to_end_s, "nft_check_s": nft_s,
            "review_s": review_s, "index_s": index_s, "check_query_s": ours_q,
            "linear_query_s": naive_q, "cold_check_s": cold_s}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
