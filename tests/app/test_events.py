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


def test_only_identical_repeats_are_counted_together(rt: Runtime) -> None:
    """The detail is part of what makes a repeat: a denial for another reason or QoS is its
    own row; a detail that cannot be compared is written as it is."""
    sink = EventSink(rt.engine, buffered=True, interval=3600)
    try:
        def denied(qos: int, reason: str = "no rule") -> Event:
            return Event(rt.now(), "broker.authz", "denied", actor="dev-1", source="10.0.0.1",
                         subject="publish x", detail={"reason": reason, "qos": qos})
        for _ in range(3):
            sink.record_repeated(denied(0))
        sink.record_repeated(denied(1))
        sink.record_repeated(denied(0, "device is disabled"))
        for _ in range(2):
            sink.record_repeated(Event(rt.now(), "broker.authz", "denied", actor="dev-1",
                                       detail={"topics": ["a", "b"]}))
        sink.flush()
    finally:
        sink.close()
    rows = sorted((e.detail.get("qos", -1), e.detail.get("reason", ""),
                   e.detail.get("count", 1)) for e in list_events(rt.engine,
                                                                  kind="broker.authz"))
    assert rows == [(-1, "", 1), (-1, "", 1), (0, "device is disabled", 1), (0, "no rule", 3),
                    (1, "no rule", 1)]


def test_a_direct_sink_writes_every_repeat(rt: Runtime) -> None:
    sink = EventSink(rt.engine)
    for _ in range(3):
        sink.record_repeated(_success(rt, "10.0.0.1"))
    assert len(list_events(rt.engine, kind="auth")) == 3
