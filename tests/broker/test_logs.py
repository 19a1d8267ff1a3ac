"""Mosquitto 2.0.11 log lines (captured from the real broker) parsed into records."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iotsec.broker.logs import MAX_LINE, parse_line

TS = "2026-11-26T03:00:22+0000: "


@pytest.mark.parametrize(("line", "kind", "fields"), [
    (TS + "New client connected from 127.0.0.1:40229 as dev3 (p5, c1, k60, u'dev3').",
     "connect", {"client_id": "dev3", "username": "dev3", "source": "127.0.0.1:40229",
                 "protocol": 5}),
    (TS + "New client connected from ::1:40229 as d (p2, c0, k10).",
     "connect", {"client_id": "d", "username": None, "source": "::1:40229"}),
    (TS + "New connection from 127.0.0.1:52823 on port 18883.",
     "connection", {"source": "127.0.0.1:52823"}),
    (TS + "Client dev2 already connected, closing old connection.",
     "takeover", {"client_id": "dev2"}),
    (TS + "Denied PUBLISH from dev3 (d0, q1, r0, m2, 'devices/dev3/t', ... (1 bytes))",
     "publish-denied", {"client_id": "dev3", "topic": "devices/dev3/t", "qos": 1}),
    (TS + "Denied PUBLISH from a (d0, q0, r1, m0, 'it''s/odd, (x)', ... (10 bytes))",
     "publish-denied", {"client_id": "a", "topic": "it''s/odd, (x)", "qos": 0}),
    (TS + "Client connection from 127.0.0.1 failed: error:0A000086:SSL routines::certificate "
          "verify failed.", "tls-failure",
     {"source": "127.0.0.1", "detail": "error:0A000086:SSL routines::certificate verify failed"}),
    (TS + "Client dev1 disconnected.", "disconnect", {"client_id": "dev1",
                                                      "detail": "disconnected"}),
    (TS + "Client dev1 closed its connection.", "disconnect", {"detail": "closed"}),
    (TS + "Client dev1 has exceeded timeout, disconnecting.", "disconnect",
     {"detail": "timeout"}),
    (TS + "Client dev1 disconnected due to protocol error.", "disconnect",
     {"detail": "protocol error"}),
    (TS + "Client <unknown> disconnected: Protocol error.", "disconnect",
     {"client_id": "<unknown>", "detail": "Protocol error"}),
    (TS + "Client dev1 disconnected, not authorised.", "disconnect",
     {"detail": "not authorised"}),
    (TS + "dev3 1 devices/dev3/#", "subscribe", {"client_id": "dev3", "qos": 1,
                                                 "topic": "devices/dev3/#"}),
    (TS + "Reloading config.", "reload", {}),
    (TS + 'Error: Invalid ACL topic "a/#/b" in acl_file "/x/acl".', "error", {}),
    (TS + "OpenSSL Error[0]: error:0A000126:SSL routines::unexpected eof while reading",
     "error", {}),
    (TS + "mosquitto version 2.0.11 running", "lifecycle", {"detail": "running 2.0.11"}),
    (TS + 'ACL denying access to client with dangerous username "a+b"', "acl-denied",
     {"client_id": "a+b"}),
    (TS + "Sending CONNACK to dev3 (0, 0)", "other", {}),
])
def test_known_lines(line: str, kind: str, fields: dict[str, object]) -> None:
    record = parse_line(line)
    assert record.kind == kind
    assert record.at == datetime(2026, 11, 26, 3, 0, 22, tzinfo=UTC)
    for name, value in fields.items():
        assert getattr(record, name) == value


def test_timestamps() -> None:
    assert parse_line("1769860800: Reloading config.").at == datetime(2026, 1, 31, 12,
                                                                        tzinfo=UTC)
    assert parse_line("2026-01-31T13:00:00+0100: Reloading config.").at == datetime(
        2026, 1, 31, 12, tzinfo=UTC)
    assert parse_line("Reloading config.").at is None
    assert parse_line("99999999999999: x").at is None


def test_oversize_lines_are_not_parsed() -> None:
    assert parse_line(TS + "x" * MAX_LINE).kind == "oversize"


@given(st.text(max_size=400))
def test_never_raises(text: str) -> None:
    parse_line(text)
    parse_line(TS + text)


ids = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)
topics = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                 min_size=1, max_size=80)


@given(ids, st.integers(1, 65535), st.sampled_from([3, 4, 5]))
def test_connect_lines_round_trip(client_id: str, port: int, protocol: int) -> None:
    r = parse_line(f"{TS}New client connected from 10.1.2.3:{port} as {client_id} "
                   f"(p{protocol}, c1, k60, u'{client_id}').")
    assert (r.kind, r.client_id, r.username, r.source, r.protocol) == (
        "connect", client_id, client_id, f"10.1.2.3:{port}", protocol)


@given(ids, topics, st.integers(0, 2))
def test_denied_publish_lines_round_trip(client_id: str, topic: str, qos: int) -> None:
    r = parse_line(f"{TS}Denied PUBLISH from {client_id} (d0, q{qos}, r0, m7, '{topic}', "
                   f"... (12 bytes))")
    assert (r.kind, r.client_id, r.topic, r.qos) == ("publish-denied", client_id, topic, qos)
