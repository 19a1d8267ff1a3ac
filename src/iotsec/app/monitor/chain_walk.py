"""Reading the event chain for verification.

The rows are read in batches through the DBAPI cursor (a million rows through SQLAlchemy's
result objects cost more than verifying them). Each entry's hash covers the stored hash of
the entry before it, so a long chain is cut into stretches walked at once, one per
processor, each by a process of its own reading its own stretch (hashing holds Python's
interpreter lock, so threads would not help); their findings are joined in order. Those
processes run this module (``python -m``), which imports the store and the pure chain only;
a stretch whose process fails is walked by the caller instead.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.pool import NullPool

from iotsec.eventlog.chain import GENESIS, CheckpointPlan, Segment, verify_segment
from iotsec.store.db import make_engine, reading

__all__ = ["PARALLEL_FROM", "walk", "walk_chain"]

#: Below this many entries the chain is walked by the calling process alone: starting
#: another costs about what walking 100,000 entries does.
PARALLEL_FROM = 300_000
_MAX_PROCESSES = 4
_QUERIES = {
    "open": ("SELECT seq, at, kind, outcome, actor, source, subject, detail, hash, id "
             "FROM events WHERE seq > ? ORDER BY seq LIMIT 20000"),
    "closed": ("SELECT seq, at, kind, outcome, actor, source, subject, detail, hash, id "
               "FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT 20000"),
    "before": "SELECT seq, hash FROM events WHERE seq <= ? ORDER BY seq DESC LIMIT 1",
    "top": "SELECT max(seq) FROM events",
}


def _query(engine: Engine, name: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    with reading(engine) as conn:
        sql = _QUERIES[name]
        if conn.dialect.paramstyle != "qmark":
            sql = sql.replace("?", "%s")
        cursor = conn.connection.cursor()
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()


def _rows(engine: Engine, after: int, last: int | None) -> Iterator[tuple[Any, ...]]:
    """The entries after position ``after`` up to ``last`` (to the end: ``None``), in
    position order, each batch read in a short read transaction."""
    while True:
        batch = (_query(engine, "open", (after,)) if last is None
                 else _query(engine, "closed", (after, last)))
        if not batch:
            return
        yield from batch
        after = batch[-1][0]


def walk(engine: Engine, plan: CheckpointPlan, after: int = 0, last: int | None = None, *,
         max_faults: int = 20) -> Segment:
    """Verify the entries after position ``after`` up to ``last``, going on from the entry
    stored before them."""
    previous, expected = GENESIS, 1
    if after > 0:
        before = _query(engine, "before", (after,))
        if before:
            previous, expected = before[0][1] or "", int(before[0][0]) + 1
    return verify_segment(_rows(engine, after, last), plan, previous=previous,
                          expected=expected, max_faults=max_faults)


def _start_elsewhere(url: str, plan: CheckpointPlan, after: int, last: int | None,
                     max_faults: int) -> subprocess.Popen[bytes]:
    """Walk a stretch in a new interpreter running this module (not ``multiprocessing``,
    which would run the caller's main module again in it)."""
    child = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert child.stdin is not None
    with child.stdin:
        pickle.dump((url, plan, after, last, max_faults), child.stdin)
    return child


def _result(child: subprocess.Popen[bytes]) -> Segment | None:
    assert child.stdout is not None
    with child.stdout:
        out = child.stdout.read()
    if child.wait() != 0:
        return None
    segment = pickle.loads(out)  # noqa: S301 - our own child's answer, over its own pipe
    return segment if isinstance(segment, Segment) else None


def walk_chain(engine: Engine, plan: CheckpointPlan, *, max_faults: int = 20,
               parallel_from: int = PARALLEL_FROM) -> list[Segment]:
    """The whole chain, in consecutive stretches (in order)."""
    top = _query(engine, "top", ())[0][0] or 0
    processes = min(len(os.sched_getaffinity(0)), _MAX_PROCESSES)
    if top < parallel_from or processes < 2:
        return [walk(engine, plan, max_faults=max_faults)]
    bounds = [top * i // processes for i in range(processes)]
    stretches: list[tuple[int, int | None]] = [
        (bounds[i], bounds[i + 1] if i + 1 < processes else None) for i in range(processes)]
    url = engine.url.render_as_string(hide_password=False)
    children: list[subprocess.Popen[bytes] | None] = []
    try:
        for after, last in stretches[1:]:
            try:
                children.append(_start_elsewhere(url, plan, after, last, max_faults))
            except OSError:  # no process could be started: that stretch is walked here
                children.append(None)
        segments = [walk(engine, plan, *stretches[0], max_faults=max_faults)]
        for child, (after, last) in zip(children, stretches[1:], strict=True):
            found = _result(child) if child is not None else None
            segments.append(found if found is not None
                            else walk(engine, plan, after, last, max_faults=max_faults))
        return segments
    finally:
        for child in children:
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()


def _main() -> None:
    url, plan, after, last, max_faults = pickle.load(sys.stdin.buffer)  # noqa: S301
    engine = make_engine(url, poolclass=NullPool)
    try:
        segment = walk(engine, plan, after, last, max_faults=max_faults)
    finally:
        engine.dispose()
    pickle.dump(segment, sys.stdout.buffer)


if __name__ == "__main__":
    _main()
