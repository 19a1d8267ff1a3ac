"""HTTPS load generators for the EST benchmarks, each run as its own process.

The benchmark scripts start these as separate processes (``python bench/est_load.py MODE
...``), so that the client's work is never done under the server's GIL and its CPU time is
counted apart. Each prints one JSON object on stdout (``probe`` writes its samples to a file).

* ``closed``: N concurrent HTTPS connections, each sending the next request as soon as the
  last one is answered (closed loop: measures how many requests the server completes). The
  requests are pre-built raw HTTP/1.1 requests read from a file, each sent once, in order.
  Keep-alive by default; ``--new-connection`` opens a fresh TLS connection (a full
  handshake) for every request, as a device enrolling once does.
* ``storm``: N concurrent workers; each takes the next device, opens a TLS connection that
  presents *that device's* certificate (mutual TLS) and sends its re-enrolment request, then
  closes. The device's key and certificate are handed to OpenSSL through an anonymous
  in-memory file (``memfd``), never written to disk.
* ``probe``: an open-loop generator over plain HTTP (the schedule of bench/loadgen.py: each
  connection its share of the rate with a random phase, latency counted from the scheduled
  send time) against several endpoints at once, until SIGTERM; it writes every request's
  scheduled time (``time.monotonic``, which is one clock for all processes on Linux), latency
  and status, so the caller can cut the samples into windows (before and during a storm).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import Any

from loadgen import _read_response as read_plain_response
from loadgen import _request as plain_request

MAX_BODY = 1 << 20


# --------------------------------------------------------------------------- wire


def write_requests(path: Path, requests: list[bytes]) -> None:
    """Raw requests, one base64 line each (the ``closed`` mode's input)."""
    path.write_bytes(b"".join(base64.b64encode(r) + b"\n" for r in requests))


def read_requests(path: Path) -> list[bytes]:
    return [base64.b64decode(line) for line in path.read_bytes().splitlines() if line]


def http_request(method: str, host: str, path: str, headers: dict[str, str],
                 body: bytes) -> bytes:
    """One raw HTTP/1.1 keep-alive request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in
                                                              headers.items()),
             f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the server closes the connection); Content-Length, chunked
    or read-to-close bodies, bounded."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    fields: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip().lower()
    close = fields.get(b"connection") == b"close"
    if b"content-length" in fields:
        length = int(fields[b"content-length"])
        if length > MAX_BODY:
            raise ValueError("response too large")
        return status, await reader.readexactly(length), close
    if fields.get(b"transfer-encoding") == b"chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return status, b"".join(parts), close
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return status, await reader.read(MAX_BODY), True


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds of latencies in seconds."""
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000

    return {"p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0)}


def client_context(cafile: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()


# --------------------------------------------------------------------------- closed loop


async def closed_loop(host: str, port: int, cafile: str, requests: list[bytes],
                      connections: int, new_connection: bool, samples: int) -> dict[str, Any]:
    context = client_context(cafile)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    kept: list[str] = []
    failures: list[str] = []
    position = iter(range(len(requests)))

    async def worker() -> None:
        stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for index in position:
            began = time.monotonic()
            try:
                if stream is None:
                    stream = await asyncio.open_connection(host, port, ssl=context,
                                                           server_hostname=host)
                reader, writer = stream
                writer.write(requests[index])
                status, body, close = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ssl.SSLError, ValueError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}"[:200])
                if stream is not None:
                    stream[1].close()
                stream = None
                continue
            latencies.append(time.monotonic() - began)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status in (200, 201) and len(kept) < samples:
                kept.append(base64.b64encode(body).decode())
            elif status not in (200, 201) and len(failures) < 20:
                failures.append(f"{status}: {body[:200]!r}")
            if close or new_connection:
                writer.close()
                stream = None
        if stream is not None:
            stream[1].close()

    cpu0, start = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    end = time.monotonic()
    ok = statuses.get("200", 0) + statuses.get("201", 0)
    return {"requests": len(requests), "ok": ok, "statuses": statuses, "start": start,
            "end": end, "latencies": latencies, "client_cpu_s": time.process_time() - cpu0,
            "samples": kept, "failures": failures[:20]}


# --------------------------------------------------------------------------- storm


def _device_context(cadata: str, key_and_cert_pem: bytes) -> ssl.SSLContext:
    """A client context that presents one device's certificate (its key and certificate
    handed to OpenSSL through an anonymous in-memory file). Built from a bare context, which
    costs the client a third of ``create_default_context`` (verification and host name
    checks are on by default for PROTOCOL_TLS_CLIENT)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=cadata)
    context.set_alpn_protocols(["http/1.1"])
    fd = os.memfd_create("device-pem")
    try:
        os.write(fd, key_and_cert_pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return context


async def storm(host: str, port: int, cafile: str, path: str, devices_file: Path,
                connections: int, samples: int) -> dict[str, Any]:
    """Each device (one JSON line: id, pem = key + certificate, body = the request body)
    re-enrols once over its own mutual-TLS connection."""
    lines = devices_file.read_bytes().splitlines()
    cadata = Path(cafile).read_text()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    kept: list[dict[str, str]] = []
    failures: list[str] = []
    position = iter(range(len(lines)))

    async def worker() -> None:
        for index in position:
            device = json.loads(lines[index])
            body = device["body"].encode()
            request = http_request("POST", f"{host}:{port}", path, {
                "Content-Type": "application/pkcs10", "Content-Transfer-Encoding": "base64",
                "Connection": "close"}, body)
            began = time.monotonic()
            try:
                context = _device_context(cadata, device["pem"].encode())
                reader, writer = await asyncio.open_connection(host, port, ssl=context,
                                                               server_hostname=host)
                try:
                    writer.write(request)
                    status, answer, _ = await read_response(reader)
                finally:
                    writer.close()
            except (OSError, asyncio.IncompleteReadError, ssl.SSLError, ValueError) as exc:
                failures.append(f"{device['id']}: {type(exc).__name__}: {exc}"[:200])
                continue
            latencies.append(time.monotonic() - began)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 200 and len(kept) < samples:
                kept.append({"id": device["id"], "body": base64.b64encode(answer).decode()})
            elif status != 200 and len(failures) < 20:
                failures.append(f"{device['id']}: {status}: {answer[:200]!r}")

    cpu0, start = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    end = time.monotonic()
    ok = statuses.get("200", 0)
    return {"devices": len(lines), "ok": ok, "statuses": statuses, "seconds": end - start,
            "rate": ok / (end - start) if end > start else float("nan"),
            **percentiles(latencies), "client_cpu_s": time.process_time() - cpu0,
            "start": start, "end": end, "samples": kept, "failures": failures[:20]}


# --------------------------------------------------------------------------- probe


async def probe(host: str, port: int, targets: list[dict[str, Any]], out: Path,
                limit: float) -> None:
    """Open loop against every target until SIGTERM (or ``limit`` seconds); writes
    ``{name: [[scheduled, latency, status], ...]}`` to ``out``."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    samples: dict[str, list[list[float]]] = {t["name"]: [] for t in targets}
    start = time.monotonic() + 0.2
    deadline = start + limit

    async def connection(target: dict[str, Any], requests: list[bytes], period: float) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        due = start + random.random() * period
        turn = random.randrange(len(requests))
        out_list = samples[target["name"]]
        try:
            while not stop.is_set() and due < deadline:
                delay = due - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    if stop.is_set():
                        break
                writer.write(requests[turn % len(requests)])
                turn += 1
                try:
                    status = await read_plain_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    status = -1  # counted as an error; the connection is made again
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                out_list.append([due, time.monotonic() - due, status])
                due += period
        finally:
            writer.close()

    tasks = []
    for target in targets:
        headers = dict(target.get("headers", {}))
        bodies = [b.encode() for b in target.get("bodies", [])] or [b""]
        requests = [plain_request(target["method"], f"{host}:{port}", target["path"], headers,
                                  body) for body in bodies]
        period = target["connections"] / target["rate"]
        tasks += [connection(target, requests, period) for _ in range(target["connections"])]
    await asyncio.gather(*tasks)
    out.write_text(json.dumps(samples))


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    closed = sub.add_parser("closed", help="closed loop over pre-built requests")
    closed.add_argument("--host", default="127.0.0.1")
    closed.add_argument("--port", type=int, required=True)
    closed.add_argument("--cafile", required=True)
    closed.add_argument("--requests", type=Path, required=True)
    closed.add_argument("--connections", type=int, default=16)
    closed.add_argument("--new-connection", action="store_true")
    closed.add_argument("--samples", type=int, default=5)
    st = sub.add_parser("storm", help="one mutual-TLS re-enrolment per device")
    st.add_argument("--host", default="127.0.0.1")
    st.add_argument("--port", type=int, required=True)
    st.add_argument("--cafile", required=True)
    st.add_argument("--path", default="/.well-known/est/simplereenroll")
    st.add_argument("--devices", type=Path, required=True)
    st.add_argument("--connections", type=int, default=32)
    st.add_argument("--samples", type=int, default=5)
    pr = sub.add_parser("probe", help="open loop over plain HTTP until SIGTERM")
    pr.add_argument("--host", default="127.0.0.1")
    pr.add_argument("--port", type=int, required=True)
    pr.add_argument("--targets", type=Path, required=True, help="JSON list of targets")
    pr.add_argument("--out", type=Path, required=True)
    pr.add_argument("--limit", type=float, default=3600)
    args = parser.parse_args()
    _install_uvloop()
    if args.mode == "closed":
        result = asyncio.run(closed_loop(args.host, args.port, args.cafile,
                                         read_requests(args.requests), args.connections,
                                         args.new_connection, args.samples))
    elif args.mode == "storm":
        result = asyncio.run(storm(args.host, args.port, args.cafile, args.path,
                                   args.devices, args.connections, args.samples))
    else:
        asyncio.run(probe(args.host, args.port, json.loads(args.targets.read_text()),
                          args.out, args.limit))
        return
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
