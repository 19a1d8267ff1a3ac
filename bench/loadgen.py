"""An open-loop HTTP/1.1 load generator: a fixed request rate over N keep-alive connections.

A closed-loop generator (wrk, or N clients that each send the next request when the last one
is answered) measures latency at saturation, where by Little's law the mean latency is just
``connections / throughput``: with 200 connections, any server under 20,000 requests/s shows a
mean over 10 ms whatever its per-request cost. To measure how quickly a request is *answered*
under a given load, requests must be sent on a schedule that does not wait for the server
(as wrk2 does). Here each of the N connections is given its share of the rate with a random
phase; a request's latency is counted from the moment it was *scheduled*, so a stalled
server is charged for the requests it delayed (no coordinated omission).

Run in its own process (``python bench/loadgen.py URL --rate R ...`` prints JSON), so that its
CPU use is not mixed with the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit


def _request(method: str, host: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _connection(host: str, port: int, requests: list[bytes], period: float, start: float,
                      end: float, latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    loop = asyncio.get_running_loop()
    due = start + random.random() * period
    turn = random.randrange(len(requests))
    try:
        while due < end:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(requests[turn % len(requests)])
            turn += 1
            status = await _read_response(reader)
            latencies.append(loop.time() - due)
            if status >= 300:
                errors.append(status)
            due += period
    finally:
        writer.close()


async def run(url: str, *, rate: float, connections: int, seconds: float, method: str = "GET",
              headers: dict[str, str] | None = None, bodies: list[bytes] | None = None,
              warmup: float = 1.0) -> dict[str, float]:
    """``bodies``: sent in turn (each connection starts at a random one)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = [_request(method, f"{host}:{port}", parts.path or "/", headers or {}, body)
                for body in (bodies or [b""])]
    loop = asyncio.get_running_loop()
    period = connections / rate
    latencies: list[float] = []
    errors: list[int] = []
    start = loop.time() + 0.2
    end = start + warmup + seconds
    await asyncio.gather(*(_connection(host, port, requests, period, start, end, latencies,
                                       errors) for _ in range(connections)))
    # Drop the warm-up share (first requests of every connection) from the statistics.
    measured = sorted(latencies[int(len(latencies) * warmup / (warmup + seconds)):])
    def pct(p: float) -> float:
        return measured[min(len(measured) - 1, int(len(measured) * p))] * 1000 if measured \
            else float("nan")
    return {"rate": rate, "connections": connections, "requests": len(measured),
            "achieved_rps": len(latencies) / (warmup + seconds), "p50_ms": pct(0.50),
            "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0),
            "errors": len(errors)}


def run_in_process(url: str, token: str, rate: int, seconds: float, bodies: Path | None, *,
                   connections: int = 200) -> dict[str, float]:
    """This generator in its own process (so that its CPU is not the caller's): ``bodies``
    (one JSON body per line) are POSTed; without them, a GET."""
    cmd = [sys.executable, str(Path(__file__)), url, "--rate", str(rate),
           "--connections", str(connections), "--seconds", str(seconds),
           "--header", f"Authorization: Bearer {token}"]
    if bodies is not None:
        cmd += ["--method", "POST", "--header", "Content-Type: application/json",
                "--bodies", str(bodies)]
    result: dict[str, float] = json.loads(subprocess.run(cmd, capture_output=True, text=True,
                                                         check=True).stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--body", default="")
    parser.add_argument("--bodies", metavar="FILE", help="one request body per line, sent in turn")
    args = parser.parse_args()
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    if args.bodies:
        with open(args.bodies, "rb") as f:
            bodies = [line.rstrip(b"\n") for line in f if line.strip()]
    else:
        bodies = [args.body.encode()]
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    t0 = time.perf_counter()
    result = asyncio.run(run(args.url, rate=args.rate, connections=args.connections,
                             seconds=args.seconds, method=args.method, headers=headers,
                             bodies=bodies))
    result["wall_s"] = time.perf_counter() - t0
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
