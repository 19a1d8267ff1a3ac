"""Detection rules as code: the built-in set, errors with their line, the guards against
rules that would let an attacker switch devices off, and a fuzzed parser."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.detect.rules import (
    DEFAULT_RULES,
    MAX_RULES_BYTES,
    Action,
    Kind,
    Per,
    default_rules,
    parse_rules,
)
from iotsec.errors import DetectionRuleError, InputTooLargeError, IotsecError


def _doc(rule: str) -> bytes:
    return f"version: 1\nrules:\n  - name: r1\n{rule}".encode()


def test_the_built_in_rules_cover_every_kind() -> None:
    rules = default_rules()
    assert {r.kind for r in rules.rules} == set(Kind)
    assert rules.max_automatic_actions == 5
    assert all(r.action is Action.NOTIFY for r in rules.rules)
    assert rules.source == DEFAULT_RULES


def test_a_rule_with_a_baseline() -> None:
    rules = parse_rules(_doc("    kind: message-rate\n    window: 30\n"
                             "    baseline: {deviations: 3, warmup: 5, floor: 100}\n"
                             "    action: disable\n    dry_run: true\n"))
    rule = rules.rules[0]
    assert (rule.kind, rule.per, rule.window, rule.action, rule.dry_run) == \
        (Kind.MESSAGE_RATE, Per.DEVICE, 30, Action.DISABLE, True)
    assert rule.limit(0, 0, 0) == 100  # warming up: the floor
    assert rule.limit(200, 100, 5) == pytest.approx(230)  # mean + 3 std
    assert rule.limit(10, 1, 5) == 100  # never below the floor


@pytest.mark.parametrize(("text", "line", "words"), [
    ("    kind: nonsense\n    threshold: 1\n", 3, "unknown kind"),
    ("    kind: message-rate\n", 3, "either a static 'threshold' or a 'baseline'"),
    ("    kind: message-rate\n    threshold: 5\n    baseline: {floor: 1}\n", 3, "not both"),
    ("    kind: new-source-network\n    threshold: 5\n", 3, "takes no threshold"),
    ("    kind: authn-failures\n    threshold: 5\n    per: fleet\n", 3, "counts per"),
    ("    kind: authn-failures\n    per: device\n    threshold: 5\n    action: disable\n", 3,
     "someone else"),
    ("    kind: client-id-conflict\n    threshold: 5\n    action: revoke\n", 3,
     "someone else"),
    ("    kind: authz-denials\n    per: source\n    threshold: 5\n    action: disable\n", 3,
     "needs a device"),
    ("    kind: message-rate\n    threshold: -1\n", 5, "greater than or equal"),
    ("    kind: message-rate\n    threshold: 1\n    colour: red\n", 6, "Extra inputs"),
    ("    kind: message-rate\n    kind: message-size\n", 5, "duplicate key"),
])
def test_errors_name_their_line(text: str, line: int, words: str) -> None:
    with pytest.raises(DetectionRuleError) as err:
        parse_rules(_doc(text))
    assert str(err.value).startswith(f"line {line}:"), str(err.value)
    assert words in str(err.value)


def test_a_rule_on_the_device_own_evidence_may_quarantine() -> None:
    doc = _doc("    kind: unusual-topic\n    action: quarantine\n")
    assert parse_rules(doc).rules[0].action is Action.QUARANTINE


def test_names_are_unique_and_plain() -> None:
    twice = b"rules:\n  - {name: a, kind: unusual-topic}\n  - {name: a, kind: unusual-topic}\n"
    with pytest.raises(DetectionRuleError, match="line 3: rule 'a' is defined twice"):
        parse_rules(twice)
    with pytest.raises(DetectionRuleError, match="lower-case"):
        parse_rules(b"rules:\n  - {name: cert.expiring, kind: unusual-topic}\n")


def test_bounded_input() -> None:
    with pytest.raises(InputTooLargeError):
        parse_rules(b"#" * (MAX_RULES_BYTES + 1))
    with pytest.raises(DetectionRuleError, match="anchors"):
        parse_rules(b"a: &x [1]\nb: *x\n")
    with pytest.raises(DetectionRuleError, match="nested"):
        parse_rules(b"rules: " + b"[" * 20 + b"]" * 20)
    with pytest.raises(DetectionRuleError, match="line 2: the rule file is not UTF-8"):
        parse_rules(b"version: 1\n\xff\xfe")
    too_many = "rules:\n" + "".join(f"  - {{name: r{i}, kind: unusual-topic}}\n"
                                    for i in range(300))
    with pytest.raises(DetectionRuleError, match="at most 256"):
        parse_rules(too_many.encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzzed_bytes_are_parsed_or_refused(data: bytes) -> None:
    with contextlib.suppress(IotsecError):
        parse_rules(data)


_VALUES = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True), st.booleans(),
                    st.text(max_size=20), st.none(), st.sampled_from([k.value for k in Kind]),
                    st.sampled_from(["device", "source", "fleet", "notify", "disable"]))
_KEYS = st.sampled_from(["name", "kind", "per", "window", "threshold", "baseline", "learn",
                         "severity", "action", "dry_run", "enabled", "other"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(_KEYS, _VALUES, max_size=8), max_size=5))
def test_fuzzed_rule_documents_are_parsed_or_refused_with_a_line(rules: list[dict]) -> None:


    text = json.dumps({"rules": rules}, indent=1)
    error: DetectionRuleError | None = None
    try:
        parsed = parse_rules(text.encode())
    except DetectionRuleError as exc:
        error = exc
    if error is not None:
        assert str(error).startswith("line "), str(error)
    else:
        assert len(parsed.rules) == len(rules)
