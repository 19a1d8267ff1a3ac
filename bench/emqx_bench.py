"""EMQX authorization hook speed: ``POST /v1/emqx/authz`` through ``iotsec serve``.

Against one ``iotsec serve --http`` over a registered fleet, with EMQX-shaped bodies for
random devices (own-topic publishes, cross-device publishes, own and wildcard
subscriptions): bench/loadgen.py (its own process) sends a fixed rate over 200 concurrent
connections, open loop, and reports latency counted from each request's scheduled time.
Beside it, in the same run, at the same rates and with the same decisions: ``POST
/v1/authz/check`` (the path the hook must keep up with) and ``GET /healthz`` (the
framework's floor). The endpoints alternate at each rate.

Run: ``python bench/emqx_bench.py [--seconds 5] [--devices 10000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadgen import run_in_process

CONNECTIONS = 200
RATES = (500, 1000, 2000)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _decisions(devices: int, n: int = 5000) -> list[tuple[str, str, str]]:
    rnd = random.Random(11)
    out = []
    for _ in range(n):
        d = f"dev-{rnd.randrange(devices):06d}"
        kind = rnd.random()
        if kind < 0.5:
            out.append((d, "publish", f"devices/{d}/telemetry"))
        elif kind < 0.7:
            out.append((d, "publish", f"devices/dev-{rnd.randrange(devices):06d}/x"))
        elif kind < 0.9:
            out.append((d, "subscribe", f"commands/{d}/#"))
        else:
            out.append((d, "subscribe", "devices/+/telemetry"))
    return out


def _bench(base: str, admin: str, broker: str, decisions: list[tuple[str, str, str]],
           seconds: float, work: Path) -> dict[str, list[dict[str, float]]]:
    hook, check = work / "hook.jsonl", work / "check.jsonl"
    hook.write_text("".join(json.dumps({
        "clientid": d, "username": d, "peerhost": "10.0.0.1", "action": a, "topic": t,
        "qos": "1", "retain": "false"}) + "\n" for d, a, t in decisions))
    check.write_text("".join(json.dumps({"device": d, "action": a, "resource": t}) + "\n"
                             for d, a, t in decisions))
    runs: list[tuple[str, str, str, Path | None]] = [
        ("emqx_authz", "/v1/emqx/authz", broker, hook),
        ("authz_check", "/v1/authz/check", admin, check),
        ("healthz", "/healthz", admin, None)]
    for _, path, token, bodies in runs:  # warm-up
        run_in_process(base + path, token, 300, 1, bodies, connections=CONNECTIONS)
    results: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in runs}
    for rate in RATES:
        for name, path, token, bodies in runs:
            results[name].append(run_in_process(base + path, token, rate, seconds, bodies,
                                                connections=CONNECTIONS))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--devices", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="iotsec-emqx-bench-"))
    home = work / "home"
    env = {**os.environ, "IOTSEC_HOME": str(home), "IOTSEC_AUTH_FAILURE_LIMIT": "1000000"}
    env.pop("IOTSEC_DATABASE_URL", None)
    iotsec = str(Path(sys.executable).with_name("iotsec"))
    server = None
    try:
        init = json.loads(subprocess.run([iotsec, "init", "--store-passphrase", "--json"], env=env, check=True,
                                         capture_output=True, text=True).stdout)
        admin = init["admin_token"]
        csv = work / "fleet.csv"
        csv.write_text("id\n" + "".join(f"dev-{d:06d}\n" for d in range(args.devices)))
        subprocess.run([iotsec, "device", "import", str(csv)], env=env, check=True,
                       capture_output=True)
        made = json.loads(subprocess.run(
            [iotsec, "token", "create", "emqx", "--scope", "broker", "--json"], env=env,
            check=True, capture_output=True, text=True).stdout)
        broker = made["token"]
        port = _free_port()
        server = subprocess.Popen([iotsec, "serve", "--http", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        results = _bench(f"http://127.0.0.1:{port}", admin, broker,
                         _decisions(args.devices), args.seconds, work)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(f"EMQX authorization hook, {args.devices:,} devices, {CONNECTIONS} connections, open "
          f"loop, {args.seconds:g} s per rate (latency from the scheduled send time):")
    print(f"  {'rate/s':>7} | {'emqx authz p50':>14} {'p99':>8} | {'authz check p50':>15} "
          f"{'p99':>8} | {'/healthz p50':>12} {'p99':>8}")
    for i, rate in enumerate(RATES):
        row = [results[n][i] for n in ("emqx_authz", "authz_check", "healthz")]
        print(f"  {rate:>7,} | " + " | ".join(
            f"{r['p50_ms']:>12.1f}ms {r['p99_ms']:>6.1f}ms" for r in row)
            + ("  ERRORS" if any(r["errors"] for r in row) else ""))
    ratios = [results["emqx_authz"][i]["p99_ms"] / results["authz_check"][i]["p99_ms"]
              for i in range(len(RATES))]
    print("  p99 ratio hook : /v1/authz/check per rate: "
          + ", ".join(f"{r:.2f}" for r in ratios))
    summary: dict[str, Any] = {"rates": list(RATES), "results": results,
                               "p99_ratio_vs_authz_check": ratios}
    print(json.dumps(summary))

if __name__ == "__main__":
    main()
