"""Access-control decision benchmarks.

1. In-process decisions on a fleet of 100,000 devices and 1,000 roles (goal: at least
   200,000 decisions/s on one core). Reference in the same run: a naive evaluator that
   scans every rule of every role the device holds, substituting variables as strings and
   matching with ``TopicFilter`` (what the engine would cost without compiling).
2. ``POST /v1/authz/check`` under wrk with 200 connections against ``iotsec serve --http``
   (goal: p99 under 10 ms). Reference in the same run: ``GET /healthz`` on the same server
   (the framework's floor).

Run: ``python bench/authz_bench.py [--quick] [--no-http]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from iotsec.access.engine import CompiledPolicy
from iotsec.access.policy import Effect, Identity, Role, Rule, default_device_role
from iotsec.access.topics import TopicFilter

ROOT = Path(__file__).resolve().parents[1]


def build_policy(devices: int, roles: int, seed: int = 7) -> tuple[CompiledPolicy, list[Role],
                                                                   dict[str, list[str]],
                                                                   list[Identity]]:
    rnd = random.Random(seed)
    role_list = [default_device_role()]
    for r in range(roles - 1):
        rules = [
            Rule.parse("allow", "publish", f"site{r}/" + "${device.id}/#"),
            Rule.parse("allow", "subscribe", f"site{r}/" + "${device.group}/+/status"),
            Rule.parse("deny", "publish", f"site{r}/" + "${device.id}/admin/#"),
            Rule.parse("allow", "receive", f"fleet/{r}/#"),
            Rule.parse("allow", "firmware:download", "firmware/${device.attr.model}/#"),
        ]
        role_list.append(Role.build(f"role-{r}", rules))
    device_roles: dict[str, list[str]] = {}
    identities = []
    for d in range(devices):
        device_id = f"dev-{d:06d}"
        device_roles[device_id] = ["device", f"role-{rnd.randrange(roles - 1)}"]
        identities.append(Identity(device_id, (f"g{d % 500}",), {"model": f"m{d % 20}"},
                                   device_id, None))
    group_roles = {f"g{g}": [f"role-{g % (roles - 1)}"] for g in range(500)}
    return (CompiledPolicy(role_list, device_roles, group_roles), role_list, device_roles,
            identities)


def requests(identities: list[Identity], device_roles: dict[str, list[str]], n: int,
             seed: int = 11) -> list[tuple[Identity, str, str]]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        ident = rnd.choice(identities)
        site = device_roles[ident.device_id][1].split("-")[1]
        kind = rnd.random()
        if kind < 0.4:
            out.append((ident, "publish", f"devices/{ident.device_id}/telemetry"))
        elif kind < 0.6:
            out.append((ident, "publish", f"site{site}/{ident.device_id}/admin/reboot"))
        elif kind < 0.75:
            out.append((ident, "publish", f"devices/dev-{rnd.randrange(10**6):06d}/x"))
        elif kind < 0.9:
            out.append((ident, "subscribe", f"devices/{ident.device_id}/#"))
        else:
            out.append((ident, "subscribe", "devices/+/telemetry"))
    return out


_VAR = re.compile(r"\$\{([^}]*)\}")


def naive_decide(roles_by_name: dict[str, Role], device_roles: dict[str, list[str]],
                 group_roles: dict[str, list[str]], ident: Identity, action: str,
                 resource: str) -> bool:
    """Scan every rule of every held role; substitute variables as text."""
    held = list(device_roles.get(ident.device_id, []))
    for g in ident.groups:
        held += group_roles.get(g, [])
    values = {"device.id": ident.device_id, "device.group": ident.groups[0],
              "cert.cn": ident.cert_cn or ""}
    for k, v in ident.attributes.items():
        values[f"device.attr.{k}"] = v
    allowed = False
    for name in held:
        for rule in roles_by_name[name].rules:
            if rule.action != action:
                continue
            text = _VAR.sub(lambda mt: values.get(mt.group(1), "\x00"), rule.resource)
            if "\x00" in text:
                continue
            f = TopicFilter.parse(text)
            req = TopicFilter.parse(resource)
            hit = (f.overlaps(req) if rule.effect is Effect.DENY else f.covers(req)) \
                if action == "subscribe" else f.matches(resource)
            if hit and rule.effect is Effect.DENY:
                return False
            allowed = allowed or hit
    return allowed


def bench_in_process(devices: int, roles: int, n: int) -> dict[str, float]:
    t0 = time.perf_counter()
    policy, role_list, device_roles, identities = build_policy(devices, roles)
    compile_s = time.perf_counter() - t0
    reqs = requests(identities, device_roles, n)
    group_roles = {f"g{g}": [f"role-{g % (roles - 1)}"] for g in range(500)}
    roles_by_name = {r.name: r for r in role_list}
    # Warm-up, and agreement check between the two evaluators on a sample.
    for ident, action, resource in reqs[:2000]:
        ours = policy.decide(ident, action, resource).allowed
        ref = naive_decide(roles_by_name, device_roles, group_roles, ident, action, resource)
        assert ours == ref, (ident.device_id, action, resource, ours, ref)
    decide = policy.decide
    # First pass: cold per-(device, action) role resolution; second pass: steady state.
    t0 = time.perf_counter()
    for ident, action, resource in reqs:
        decide(ident, action, resource)
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    allowed = 0
    for ident, action, resource in reqs:
        allowed += decide(ident, action, resource).allowed
    ours_s = time.perf_counter() - t0
    sample = reqs[: max(n // 10, 1000)]
    t0 = time.perf_counter()
    for ident, action, resource in sample:
        naive_decide(roles_by_name, device_roles, group_roles, ident, action, resource)
    naive_s = time.perf_counter() - t0
    return {"devices": devices, "roles": roles, "decisions": n, "compile_s": compile_s,
            "ours_per_s": n / ours_s, "ours_cold_per_s": n / cold_s,
            "naive_per_s": len(sample) / naive_s,
            "allowed_fraction": allowed / n}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wrk(url: str, token: str, script: str | None, seconds: int) -> dict[str, float]:
    cmd = ["wrk", "-t2", "-c200", f"-d{seconds}s", "--latency", "-H",
           f"Authorization: Bearer {token}"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    def pct(label: str) -> float:
        m = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"p50_ms": pct("50"), "p99_ms": pct("99"),
            "rps": float(rps.group(1)) if rps else float("nan"),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def bench_http(seconds: int) -> dict[str, object]:
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    home = Path(tempfile.mkdtemp(prefix="iotsec-authz-")) / "home"
    env = {**os.environ, "IOTSEC_HOME": str(home), "IOTSEC_AUTH_FAILURE_LIMIT": "1000000"}
    iotsec = str(Path(sys.executable).with_name("iotsec"))
    init = json.loads(subprocess.run([iotsec, "init", "--json"], env=env, check=True,
                                     capture_output=True, text=True).stdout)
    token = init["admin_token"]
    subprocess.run([iotsec, "device", "add", "sensor-1"], env=env, check=True,
                   capture_output=True)
    port = _free_port()
    server = subprocess.Popen([iotsec, "serve", "--http", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        script = home.parent / "authz.lua"
        body = json.dumps({"device": "sensor-1", "action": "publish",
                           "resource": "devices/sensor-1/temp"})
        script.write_text('wrk.method = "POST"\nwrk.body = ' + json.dumps(body) +
                          '\nwrk.headers["Content-Type"] = "application/json"\n')
        base = f"http://127.0.0.1:{port}"
        _wrk(f"{base}/v1/authz/check", token, str(script), 2)  # warm-up
        floor = _wrk(f"{base}/healthz", token, None, seconds)
        ours = _wrk(f"{base}/v1/authz/check", token, str(script), seconds)
        return {"authz_check": ours, "healthz_floor": floor}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(home.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller fleet and run")
    parser.add_argument("--no-http", action="store_true", help="skip the wrk benchmark")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    devices, roles, n = (10_000, 100, 100_000) if args.quick else (100_000, 1_000, 500_000)
    inproc = bench_in_process(devices, roles, n)
    print(f"in-process decisions ({inproc['devices']:,} devices, {inproc['roles']:,} roles; "
          f"compile {inproc['compile_s']:.2f} s):")
    print(f"  iotsec compiled engine : {inproc['ours_per_s']:>12,.0f} decisions/s "
          f"(goal >= 200,000; first pass, cold caches: {inproc['ours_cold_per_s']:,.0f}/s)")
    print(f"  naive rule scan (ref)  : {inproc['naive_per_s']:>12,.0f} decisions/s")
    print(f"  ratio ours/reference   : {inproc['ours_per_s'] / inproc['naive_per_s']:.1f}x")
    results: dict[str, object] = {"in_process": inproc}
    if not args.no_http:
        http = bench_http(5 if args.quick else 15)
        results["http"] = http
        if "skipped" in http:
            print(f"HTTP: skipped ({http['skipped']})")
        else:
            ours, floor = http["authz_check"], http["healthz_floor"]
            assert isinstance(ours, dict)
            assert isinstance(floor, dict)
            print("POST /v1/authz/check under wrk, 200 connections:")
            print(f"  authz check : p50 {ours['p50_ms']:.1f} ms, p99 {ours['p99_ms']:.1f} ms, "
                  f"{ours['rps']:,.0f} req/s, non-2xx {ours['non_2xx']} (goal p99 < 10 ms)")
            print(f"  /healthz ref: p50 {floor['p50_ms']:.1f} ms, p99 {floor['p99_ms']:.1f} ms, "
                  f"{floor['rps']:,.0f} req/s")
            print(f"  ratio p99 ours/reference: {ours['p99_ms'] / floor['p99_ms']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
