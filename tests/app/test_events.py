"""The event sink: direct and buffered writes, and repeats of a routine event counted."""

from __future__ import annotations

from iotsec.app.events import Event, EventSink, list_events
from iotsec.app.runtime import Runtime


def _success(rt: Runtime, source: str) -> Event:
    return Event(rt.now(), "auth", "success", actor="ops", source=source,
                 subject="POST /v1/authz/check", detail={"scope": "auditor"})


def test_a_buffered_sink_counts_repeats_and_keeps_the_rest(rt: Runtime) -> None:
    sink = EventSink(rt.engine, buffered=True, interval=3600)
    try:
        for _ in range(5):
            sink.record_repeated(_success(rt, "10.0.0.1"))
        sink.record_repeated(_success(rt, "10.0.0.2"))
        sink.record(Event(rt.now(), "auth", "failure", source="10.0.0.9",
                          detail={"reason": "unknown token"}))
        assert list_events(rt.engine, kind="auth") == []  # nothing written before a flush
        sink.flush()
    finally:
        sink.close()
    events = list_events(rt.engine, kind="auth")
    by_source = {e.source: e for e in events}
    assert len(events) == 3
    assert by_source["10.0.0.1"].detail == {"scope": "auditor", "count": 5}
    assert by_source["10.0.0.2"].detail == {"scope": "auditor"}
    assert by_source["10.0.0.9"].outcome == "failure"


def test_a_direct_sink_writes_every_repeat(rt: Runtime) -> None:
    sink = EventSink(rt.engine)
    for _ in range(3):
        sink.record_repeated(_success(rt, "10.0.0.1"))
    assert len(list_events(rt.engine, kind="auth")) == 3
