"""The scan-report parser: real reports are read, anything else is refused clearly."""

from __future__ import annotations

import contextlib
import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.compliance.evidence import MAX_SCAN_REPORT, parse_scan_report
from iotsec.errors import ScanReportError
from iotsec.findings.model import Severity
from iotsec.scan.report import scan_report_schema
from tests.compliance.scanfiles import scan_report


def test_a_real_report_is_read_with_its_tags():
    data = scan_report()
    jsonschema.validate(json.loads(data), scan_report_schema())  # it is the real format
    ev = parse_scan_report(data)
    assert ev.targets == ("127.0.0.1",) and ev.services == 3
    rules = {f.rule: f for f in ev.findings}
    assert set(rules) == {"plaintext/telnet", "mqtt/anonymous"}
    assert rules["mqtt/anonymous"].severity is Severity.CRITICAL
    assert "etsi:5.1-1" in rules["mqtt/anonymous"].tags
    assert rules["plaintext/telnet"].target == "tcp://127.0.0.1:2323"


def test_tags_of_rules_this_version_does_not_know_come_from_the_report():
    doc = json.loads(scan_report())
    doc["findings"][0]["rule"] = "future/thing"
    doc["rules"].append({"id": "future/thing", "title": "t", "severity": "low",
                         "description": "d", "fix": "f", "tags": ["owasp-iot:I9"]})
    ev = parse_scan_report(json.dumps(doc).encode())
    assert next(f for f in ev.findings if f.rule == "future/thing").tags == ("owasp-iot:I9",)


def _mutated(**changes: object) -> bytes:
    doc = json.loads(scan_report())
    for key, value in changes.items():
        if value is None:
            del doc[key]
        else:
            doc[key] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(("data", "message"), [
    (b"not json at all", "not JSON"),
    (b"\xff\xfe\x00", "not UTF-8"),
    (b"[1, 2]", "must be an object"),
    (b'{"format": "iotsec-audit-report", "format_version": 1}', "'format' is not"),
    (_mutated(format_version=2), "format_version 2 is not supported"),
    (_mutated(format_version=True), "format_version True is not supported"),
    (_mutated(findings=None), "findings must be a list"),
    (_mutated(findings=[{"rule": "x", "severity": "high", "target": "t", "message": "m"}]),
     "is not a rule id"),
    (_mutated(findings=[{"rule": "a/b", "severity": "urgent", "target": "t",
                         "message": "m"}]), "is not a severity"),
    (_mutated(scan={"targets": []}), "scan.started_at must be a string"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
])
def test_bad_reports_are_refused(data: bytes, message: str):
    with pytest.raises(ScanReportError, match="not usable") as err:
        parse_scan_report(data)
    assert message in str(err.value)
    assert err.value.hint  # says what to give instead


def test_too_large_is_refused_before_parsing():
    with pytest.raises(ScanReportError, match="larger than"):
        parse_scan_report(b" " * (MAX_SCAN_REPORT + 1))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash_the_parser(data: bytes):
    with contextlib.suppress(ScanReportError):
        parse_scan_report(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["scan", "hosts", "findings", "rules", "format",
                                        "format_version"]), _json, max_size=6))
def test_mangled_report_fields_are_refused_or_read(changes: dict[str, object]):
    doc = json.loads(scan_report())
    doc.update(changes)
    try:
        ev = parse_scan_report(json.dumps(doc).encode())
    except ScanReportError:
        return
    assert all(isinstance(f.rule, str) and f.severity in Severity for f in ev.findings)
