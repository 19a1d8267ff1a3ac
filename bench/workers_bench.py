"""``iotsec serve --workers 2`` against one worker, on PostgreSQL: saturation throughput of
``POST /v1/authz/check`` (goal: at least 1.8x one worker).

Each round starts ``iotsec serve --http --workers N`` over the same home (a fresh schema of
the PostgreSQL database, a fleet of registered devices), warms it up, and drives it closed
loop with ``wrk`` (200 connections, requests for random devices from a Lua script) for the
authz check, then ``GET /healthz`` on the same server (the framework's floor). Rounds
alternate one worker and two, so that a change in the machine's load hits both alike; the
best round of each is kept. The reference is one worker, measured in the same run.

Beside each number: the load average when it was taken, and the CPU the server processes
and ``wrk`` used (cores busy on average), which says whether the machine had a core left.

Run: ``python bench/workers_bench.py [--quick] [--database-url URL] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from authz_bench import _fleet_files

DEFAULT_URL = os.environ.get("IOTSEC_BENCH_DATABASE_URL",
                             "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def _connections(port: int) -> dict[int, int]:
    """How many established connections to ``port`` each process holds (from ``ss``)."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=False).stdout
    counts: dict[int, int] = {}
    for pid in re.findall(r"pid=(\d+)", out):
        counts[int(pid)] = counts.get(int(pid), 0) + 1
    return counts


def _lua(bodies: Path, path: Path, count: int = 2000) -> Path:
    lines = bodies.read_text().splitlines()[:count]
    path.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        "local bodies = {" + ",".join(json.dumps(b) for b in lines) + "}\n"
        "local n = 0\n"
        "request = function()\n  n = n + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[(n % #bodies) + 1])\nend\n")
    return path


def _wrk(url: str, token: str, script: Path | None, seconds: float, connections: int,
         threads: int) -> dict[str, float]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "-H",
           f"Authorization: Bearer {token}"]
    if script is not None:
        cmd += ["-s", str(script)]
    before = os.times()
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    after = os.times()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    wrk_cpu = (after.children_user - before.children_user
               + after.children_system - before.children_system)
    return {"rps": float(rps.group(1)) if rps else float("nan"),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else "",
            "wrk_cores": wrk_cpu / seconds}


def _measure(env: dict[str, str], workers: int, token: str, script: Path, seconds: float,
             connections: int, threads: int) -> dict[str, object]:
    iotsec = str(Path(sys.executable).with_name("iotsec"))
    port = _free_port()
    server = subprocess.Popen([iotsec, "serve", "--http", "--port", str(port), "--est-port",
                               "0", "--workers", str(workers)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise SystemExit(f"iotsec serve --workers {workers} stopped")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("iotsec serve did not start") from None
                time.sleep(0.1)
        time.sleep(2 if workers > 1 else 0.5)  # every worker has warmed up (a ready pipe)
        _wrk(f"{base}/v1/authz/check", token, script, 3, connections, threads)  # warm-up
        load = os.getloadavg()[0]
        pids = _tree(server.pid)
        cpu0, t0 = _cpu_seconds(pids), time.monotonic()
        each0 = {p: _cpu_seconds([p]) for p in pids}
        probe = threading.Timer(seconds / 2, lambda: spread.update(_connections(port)))
        spread: dict[int, int] = {}
        probe.start()
        authz = _wrk(f"{base}/v1/authz/check", token, script, seconds, connections, threads)
        probe.join()
        elapsed = time.monotonic() - t0
        server_cores = (_cpu_seconds(pids) - cpu0) / elapsed
        # Per process: the cores each used and the connections each held mid-run.
        per_process = {str(p): {"cores": round((_cpu_seconds([p]) - each0[p]) / elapsed, 3),
                                "connections": spread.get(p, 0)}
                       for p in pids if p != server.pid or workers == 1}
        healthz = _wrk(f"{base}/healthz", token, None, seconds, connections, threads)
        return {"workers": workers, "load_1m": load, "authz": authz, "healthz": healthz,
                "server_cores": server_cores, "processes": len(pids),
                "per_process": per_process}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller fleet, shorter runs")
    parser.add_argument("--database-url", default=DEFAULT_URL,
                        help="a PostgreSQL database (a private schema is made and dropped)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    devices, seconds = (5_000, 5.0) if args.quick else (50_000, 10.0)
    schema = f"bench_{secrets.token_hex(4)}"
    admin = create_engine(args.database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in args.database_url else "?"
    url = f"{args.database_url}{sep}options=-csearch_path%3D{schema}"
    work = Path(tempfile.mkdtemp(prefix="iotsec-workers-"))
    home = work / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
    env.update(IOTSEC_HOME=str(home), IOTSEC_DATABASE_URL=url,
               IOTSEC_AUTH_FAILURE_LIMIT="1000000")
    iotsec = str(Path(sys.executable).with_name("iotsec"))
    try:
        init = json.loads(subprocess.run([iotsec, "init", "--store-passphrase", "--json"],
                                         env=env, check=True, capture_output=True,
                                         text=True).stdout)
        token = init["admin_token"]
        csv, bodies = _fleet_files(home, devices)
        subprocess.run([iotsec, "device", "import", str(csv)], env=env, check=True,
                       capture_output=True)
        script = _lua(bodies, work / "authz.lua")
        runs: list[dict[str, object]] = []
        for _ in range(args.rounds):
            for workers in (1, 2):
                run = _measure(env, workers, token, script, seconds, args.connections,
                               args.wrk_threads)
                runs.append(run)
                authz, healthz = run["authz"], run["healthz"]
                assert isinstance(authz, dict)
                assert isinstance(healthz, dict)
                print(f"  workers {workers}: authz check {authz['rps']:>8,.0f} req/s "
                      f"(non-2xx {authz['non_2xx']}), /healthz {healthz['rps']:>8,.0f} req/s;"
                      f" server {run['server_cores']:.2f} cores, wrk "
                      f"{authz['wrk_cores']:.2f} cores; load {run['load_1m']:.2f}",
                      flush=True)
                shares = run["per_process"]
                assert isinstance(shares, dict)
                print("    per serving process (cores, connections): " + ", ".join(
                    f"{v['cores']:.2f}/{v['connections']}" for v in shares.values()
                    if v["cores"] > 0.01 or v["connections"]), flush=True)

        def best(workers: int, what: str) -> float:
            return max(float(r[what]["rps"]) for r in runs  # type: ignore[index]
                       if r["workers"] == workers)

        def per_core(workers: int) -> float:
            """The best authz rate per CPU-second the server processes used: what one
            core gives, whatever share of the machine the server got."""
            return max(float(r["authz"]["rps"]) / float(r["server_cores"])  # type: ignore[index]
                       for r in runs if r["workers"] == workers)

        one, two = best(1, "authz"), best(2, "authz")
        h1, h2 = best(1, "healthz"), best(2, "healthz")
        print(f"POST /v1/authz/check saturation on PostgreSQL ({devices:,} devices, "
              f"{args.connections} connections, wrk, {os.cpu_count()} CPUs, measured under "
              f"shared load):")
        print(f"  1 worker (reference) : {one:>9,.0f} req/s   /healthz {h1:>9,.0f} req/s")
        print(f"  2 workers            : {two:>9,.0f} req/s   /healthz {h2:>9,.0f} req/s")
        print(f"  ratio 2/1            : {two / one:.2f}x (goal >= 1.8x)   /healthz "
              f"{h2 / h1:.2f}x")
        print(f"  per server CPU-second: 1 worker {per_core(1):,.0f} req, 2 workers "
              f"{per_core(2):,.0f} req ({per_core(2) / per_core(1):.2f}x: below 1.0, the "
              "workers cost each other more than the CPU they get)")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"devices": devices, "runs": runs, "ratio": two / one,
                 "per_core_ratio": per_core(2) / per_core(1),
                 "healthz_ratio": h2 / h1}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
