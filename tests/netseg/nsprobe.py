"""Traffic helper for the namespace test, run inside a namespace with ``ip netns exec``.

``serve LOG TCP_PORTS UDP_PORTS``: listen on the ports (IPv4 and IPv6, every address of
the namespace); write each token received to LOG (one line, flushed) and answer "ok".
Prints "ready" once listening; stops by itself after ``LIFETIME_S``.

``probe``: reads a JSON list of probes from stdin, each ``{"proto", "dst", "port",
"token", "src"?}``, runs them concurrently, prints a JSON list of outcomes: "open" (the
server answered), "timeout" (no answer: dropped), or "rejected: <errno name>" (an ICMP
error or a reset came back).
"""

from __future__ import annotations

import errno
import json
import selectors
import socket
import sys
import threading
import time

LIFETIME_S = 90.0
TIMEOUT_S = 1.5


def serve(log_path: str, tcp: list[int], udp: list[int]) -> None:
    sel = selectors.DefaultSelector()
    log = open(log_path, "a", buffering=1)  # noqa: SIM115
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):  # noqa: S104
        for port in tcp:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((host, port))
            s.listen(16)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, ("tcp", port))
        for port in udp:
            s = socket.socket(family, socket.SOCK_DGRAM)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((host, port))
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, ("udp", port))
    print("ready", flush=True)
    deadline = time.monotonic() + LIFETIME_S
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            proto, port = key.data
            try:
                if proto == "tcp":
                    conn, peer = sock.accept()
                    conn.settimeout(2.0)
                    with conn:
                        token = conn.recv(256).decode(errors="replace").strip()
                        log.write(f"{token} tcp {port} {peer[0]}\n")
                        conn.sendall(b"ok\n")
                else:
                    data, peer = sock.recvfrom(256)
                    log.write(f"{data.decode(errors='replace').strip()} udp {port} "
                              f"{peer[0]}\n")
                    sock.sendto(b"ok\n", peer)
            except OSError:
                continue


def _probe(p: dict[str, object], out: dict[str, str]) -> None:
    dst = str(p["dst"])
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    kind = socket.SOCK_STREAM if p["proto"] == "tcp" else socket.SOCK_DGRAM
    token = str(p["token"])
    try:
        with socket.socket(family, kind) as s:
            s.settimeout(TIMEOUT_S)
            if p.get("src"):
                s.bind((str(p["src"]), 0))
            s.connect((dst, int(p["port"])))  # type: ignore[call-overload]
            s.send(token.encode() + b"\n")
            reply = s.recv(16)
            out[token] = "open" if reply.startswith(b"ok") else f"odd reply {reply!r}"
    except TimeoutError:
        out[token] = "timeout"
    except OSError as exc:
        out[token] = f"rejected: {errno.errorcode.get(exc.errno or 0, exc.errno)}"


def probe() -> None:
    probes = json.load(sys.stdin)
    out: dict[str, str] = {}
    threads = [threading.Thread(target=_probe, args=(p, out)) for p in probes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT_S + 5)
    json.dump([out.get(str(p["token"]), "no result") for p in probes], sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], [int(x) for x in sys.argv[3].split(",") if x],
              [int(x) for x in sys.argv[4].split(",") if x])
    else:
        probe()
