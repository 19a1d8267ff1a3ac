"""EMQX authorization hook throughput: ``POST /v1/emqx/authz`` through ``iotsec serve``.

An async client (httpx) keeps 200 requests in flight (closed loop) for a few seconds per
endpoint against one ``iotsec serve --http`` over a registered fleet, with EMQX-shaped
bodies for random devices (own-topic publishes, cross-device publishes, own and wildcard
subscriptions). Beside it, in the same run and with the same client: ``POST
/v1/authz/check`` with the same decisions (the path the hook must keep up with) and
``GET /healthz`` (the framework's floor). The endpoints are run in interleaved rounds and
the median round is kept. Printed: decisions/s, p50/p99 latency, the time per request
over a single connection (the server's own cost, without client contention), and the
ratios of the hook to ``/v1/authz/check``. The client shares the machine with the server,
so absolute numbers are a floor; the ratios are the point.

Run: ``python bench/emqx_bench.py [--seconds 5] [--devices 10000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

CONCURRENCY = 200


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


async def _run(client: httpx.AsyncClient, method: str, url: str,
               bodies: list[bytes] | None, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal errors
        k = i
        while time.perf_counter() < deadline:
            body = bodies[k % len(bodies)] if bodies else None
            k += CONCURRENCY
            t0 = time.perf_counter()
            try:
                resp = await client.request(method, url, content=body)
            except httpx.HTTPError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)
            if resp.status_code != 200:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {"requests": len(latencies), "per_second": len(latencies) / elapsed,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1], "errors": errors}


async def _sequential(client: httpx.AsyncClient, method: str, url: str,
                      bodies: list[bytes] | None, n: int = 300) -> float:
    """Milliseconds per request over one connection: the server's own cost per answer."""
    t0 = time.perf_counter()
    for k in range(n):
        await client.request(method, url, content=bodies[k % len(bodies)] if bodies else None)
    return 1000 * (time.perf_counter() - t0) / n


async def _bench(base: str, admin: str, broker: str, decisions: list[tuple[str, str, str]],
                 seconds: float, rounds: int) -> dict[str, dict[str, float]]:
    hook = [json.dumps({"clientid": d, "username": d, "peerhost": "10.0.0.1", "action": a,
                        "topic": t, "qos": "1", "retain": "false"}).encode()
            for d, a, t in decisions]
    check = [json.dumps({"device": d, "action": a, "resource": t}).encode()
             for d, a, t in decisions]
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    runs: list[tuple[str, str, str, str, list[bytes] | None]] = [
        ("emqx_authz", "POST", "/v1/emqx/authz", broker, hook),
        ("authz_check", "POST", "/v1/authz/check", admin, check),
        ("healthz", "GET", "/healthz", admin, None)]
    samples: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in runs}
    sequential: dict[str, float] = {}
    clients = {}
    for name, _, _, token, _ in runs:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        clients[name] = httpx.AsyncClient(base_url=base, headers=headers, limits=limits,
                                          timeout=60)
    try:
        for name, method, path, _, bodies in runs:  # warm caches, open the connections
            await _sequential(clients[name], method, path, bodies, n=100)
            await _run(clients[name], method, path, bodies, 1.0)
        for name, method, path, _, bodies in runs:
            sequential[name] = await _sequential(clients[name], method, path, bodies)
        # Rounds interleave the endpoints, so that a change in the machine's load during
        # the run affects all three alike; the median round is reported.
        for _ in range(rounds):
            for name, method, path, _, bodies in runs:
                samples[name].append(await _run(clients[name], method, path, bodies,
                                                seconds))
    finally:
        for client in clients.values():
            await client.aclose()
    results = {}
    for name, got in samples.items():
        got.sort(key=lambda r: r["per_second"])
        results[name] = {**got[len(got) // 2], "sequential_ms": sequential[name]}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="iotsec-emqx-bench-"))
    home = work / "home"
    env = {**os.environ, "IOTSEC_HOME": str(home), "IOTSEC_AUTH_FAILURE_LIMIT": "1000000"}
    env.pop("IOTSEC_DATABASE_URL", None)
    iotsec = str(Path(sys.executable).with_name("iotsec"))
    server = None
    try:
        init = json.loads(subprocess.run([iotsec, "init", "--json"], env=env, check=True,
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
        results = asyncio.run(_bench(f"http://127.0.0.1:{port}", admin, broker,
                                     _decisions(args.devices), args.seconds,
                                     args.rounds))
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(f"EMQX authorization hook, {args.devices:,} devices, {CONCURRENCY} concurrent, "
          f"{args.rounds} x {args.seconds:g} s per endpoint (httpx, closed loop; median "
          "round), and one connection in sequence")
    for name, r in results.items():
        print(f"  {name:<12} {r['per_second']:>8,.0f} req/s  p50 {r['p50_ms']:7.1f} ms  "
              f"p99 {r['p99_ms']:7.1f} ms  errors {r['errors']:.0f}  |  sequential "
              f"{r['sequential_ms']:.2f} ms/req")
    ratio = results["emqx_authz"]["per_second"] / results["authz_check"]["per_second"]
    floor = results["emqx_authz"]["per_second"] / results["healthz"]["per_second"]
    seq = results["authz_check"]["sequential_ms"] / results["emqx_authz"]["sequential_ms"]
    print(f"  throughput /v1/emqx/authz : /v1/authz/check = {ratio:.2f}x; : /healthz = "
          f"{floor:.2f}x; sequential speed : /v1/authz/check = {seq:.2f}x")
    summary: dict[str, Any] = {"results": results, "ratio_vs_authz_check": ratio,
                               "ratio_vs_healthz": floor, "sequential_ratio": seq}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
