"""Ports for the servers the tests start (``iotsec serve``, Mosquitto, an SMTP sink...).

A port found free by binding port 0 and closing the socket comes from the kernel's
ephemeral range, the range it also gives every outgoing connection its source port from:
between the pick and the server's own bind, a connection of another test (to PostgreSQL,
say) or another worker's pick can take it, and the server fails with "address already in
use". These are picked below that range instead, each pytest-xdist worker in a block of
its own, going round its block, and only once a bind shows the port free: no kernel
choice and no other worker lands there.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from functools import cache

__all__ = ["free_port"]

#: The lowest port handed out (above the registered services a test machine may run).
_LOW = 10_000


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


@cache
def _candidates() -> itertools.cycle[int] | None:
    """This worker's ports, in a round that starts anywhere in its block (a run after
    another does not meet the ports the last one left in TIME_WAIT first); None when the
    kernel's ephemeral range leaves too little room below it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), index + 1)
    size = (_ephemeral_low() - _LOW) // count
    if size < 100:
        return None
    start = _LOW + index * size
    first = random.randrange(size)
    return itertools.cycle([start + (first + n) % size for n in range(size)])


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port of ``kind`` (TCP or UDP) on ``host`` that nothing holds now and that no
    other worker and no outgoing connection will be given."""
    candidates = _candidates()
    if candidates is None:  # the kernel's own choice, as tests made it before
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind((host, 0))
            return int(probe.getsockname()[1])
    for _ in range(1_000):
        port = next(candidates)
        with socket.socket(socket.AF_INET, kind) as probe:
            if kind == socket.SOCK_STREAM:
                # As a server binds: a port whose last connection is in TIME_WAIT is free.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in this worker's block on {host}")
