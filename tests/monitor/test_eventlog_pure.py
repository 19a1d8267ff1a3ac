"""The pure event-log core: the entry encoding is injective, and the export formats keep
every attacker-chosen field inside its own field and line."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from iotsec.eventlog.chain import GENESIS, ChainRow, Fault, encode_entry, entry_hash, verify_chain
from iotsec.eventlog.export import ExportedEvent, to_cef, to_jsonl, to_syslog

fields = st.tuples(st.integers(0, 2**40), st.integers(0, 2**40), st.text(max_size=20),
                   st.text(max_size=20), st.none() | st.text(max_size=20),
                   st.none() | st.text(max_size=20), st.none() | st.text(max_size=20),
                   st.text(max_size=40))


@given(fields, fields)
def test_different_entries_never_encode_alike(a: tuple, b: tuple) -> None:  # type: ignore[type-arg]
    if a != b:
        assert encode_entry(*a) != encode_entry(*b)


def _chain(n: int) -> list[ChainRow]:
    rows, previous = [], GENESIS
    for seq in range(1, n + 1):
        previous = entry_hash(previous, seq, seq, "k", "ok", None, None, None, "{}")
        rows.append(ChainRow(seq, seq, "k", "ok", None, None, None, "{}", previous, seq))
    return rows


@given(st.integers(1, 30), st.data())
def test_any_single_deletion_is_found(n: int, data: st.DataObject) -> None:
    rows = _chain(n)
    victim = data.draw(st.integers(0, n - 1))
    kept = rows[:victim] + rows[victim + 1:]
    report = verify_chain(kept, [], check_signature=lambda c: True)
    if victim == n - 1:
        assert report.ok  # the tail: only a checkpoint can show it (tested with the store)
    else:
        assert report.faults[0].fault is Fault.MISSING and report.faults[0].seq == victim + 1


def _event(**kw: object) -> ExportedEvent:
    base: dict[str, object] = {"id": 7, "seq": 7, "at": 1_765_000_000, "kind": "auth",
                               "outcome": "denied", "actor": "dev-1", "source": "10.1.2.3",
                               "subject": "/v1/x", "detail": {"a": 1}, "hash": "ab" * 32}
    base.update(kw)
    return ExportedEvent(**base)  # type: ignore[arg-type]


hostile = st.text(alphabet=st.sampled_from(list("ab|=\\\"]\n\r =x")), max_size=30)


def _parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """A strict reader: seven unescaped pipes end the header; the extension is key=value
    pairs where a value runs to the next unescaped ' key='."""
    header, i, field = [], 0, ""
    while len(header) < 7:
        c = line[i]
        if c == "\\":
            field += line[i + 1]
            i += 2
            continue
        if c == "|":
            header.append(field)
            field = ""
        else:
            field += c
        i += 1
    ext, pairs = line[i:], {}
    for m in re.finditer(r"(?:^| )([A-Za-z0-9]+)=((?:[^\\=]|\\.)*?)(?= [A-Za-z0-9]+=|$)",
                         ext):
        pairs[m.group(1)] = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n"
                                   else e.group(1), m.group(2))
    return header, pairs


@given(hostile, hostile, hostile)
def test_cef_fields_cannot_escape(kind: str, actor: str, subject: str) -> None:
    line = to_cef(_event(kind=kind, actor=actor, subject=subject), version="1.0")
    assert "\n" not in line and "\r" not in line
    header, ext = _parse_cef(line)
    assert header[:4] == ["CEF:0", "iotsec", "iotsec", "1.0"]
    assert header[4] == re.sub(r"\r\n|\r|\n", " ", kind)
    assert header[6] == "6"
    if actor and not actor.endswith(" "):
        assert ext["suser"] == actor.replace("\r\n", "\n").replace("\r", "\n")
    assert ext["externalId"] == "7" and ext["cn1"] == "7"


@given(hostile, hostile)
def test_syslog_structured_data_cannot_escape(actor: str, subject: str) -> None:
    line = to_syslog(_event(actor=actor, subject=subject), hostname="h")
    assert "\n" not in line and "\r" not in line
    m = re.fullmatch(r'<(\d+)>1 \S+ h iotsec - auth (\[iotsec@32473(?: [a-z]+="(?:[^"\\\]]|'
                     r'\\.)*")+\]) (.*)', line)
    assert m is not None, line
    assert int(m.group(1)) == 13 * 8 + 4


def test_jsonl_round_trips() -> None:
    doc = json.loads(to_jsonl(_event(actor="dev\n1")))
    assert doc["actor"] == "dev\n1" and doc["at"] == "2025-12-06T05:46:40Z"


@given(fields)
def test_the_fast_encoding_is_plain_json(values: tuple) -> None:  # type: ignore[type-arg]
    assert encode_entry(*values) == json.dumps(list(values), separators=(",", ":")).encode()


@given(st.lists(fields, min_size=1, max_size=5))
def test_rows_chain_alike_with_either_sha256(entries: list[tuple]) -> None:  # type: ignore[type-arg]
    # link_rows hashes with hashlib when the process has loaded it, else with cryptography
    # (the data commands); the chain must not depend on which.
    import sys

    from iotsec.eventlog.chain import link_rows

    def rows() -> list[dict[str, object]]:
        return [{"at": e[1], "kind": e[2], "outcome": e[3], "actor": e[4], "source": e[5],
                 "subject": e[6], "detail": e[7]} for e in entries]

    with_hashlib, without = rows(), rows()
    link_rows(with_hashlib, 7, GENESIS)
    hashlib = sys.modules.pop("hashlib")
    try:
        link_rows(without, 7, GENESIS)
        alone = entry_hash(GENESIS, 8, *entries[0][1:])
    finally:
        sys.modules["hashlib"] = hashlib
    assert with_hashlib == without
    assert alone == with_hashlib[0]["hash"] == entry_hash(GENESIS, 8, *entries[0][1:])
    assert [r["seq"] for r in without] == list(range(8, 8 + len(entries)))
