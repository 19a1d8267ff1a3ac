"""The shared finding model: rule codes, the location kinds of policy lint and the
zone-policy review, and the package's place at the bottom of the core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from iotsec.findings.model import Location, Rule, Severity

PACKAGE = Path(__file__).parents[2] / "src" / "iotsec" / "findings"


def test_a_rules_code_is_its_id_without_the_area() -> None:
    rule = Rule("policy/wildcard-all", "t", Severity.HIGH, "d", "f")
    assert rule.code == "wildcard-all"
    assert Rule("tls/cert/expired", "t", Severity.LOW, "d", "f").code == "cert/expired"


def test_a_policy_rule_location_names_the_role_and_the_rule_index() -> None:
    where = Location.policy_rule("snoop", 0)
    assert (where.uri, where.kind, where.name, where.index, where.line) == (
        "policy:snoop#rule:0", "policy", "snoop", 0, None)
    assert where.to_dict()["index"] == 0 and "line" not in where.to_dict()
    role = Location.policy_rule("snoop", None)
    assert (role.uri, role.index) == ("policy:snoop", None)
    assert "index" not in role.to_dict()


def test_a_zone_rule_location_names_the_rule_and_its_line() -> None:
    where = Location.zone_rule("tn", 5)
    assert (where.uri, where.kind, where.name, where.line, where.index) == (
        "zone-policy:rule:tn", "zone-policy", "tn", 5, None)
    assert where.to_dict()["line"] == 5 and "index" not in where.to_dict()
    assert Location.zone_rule(None, 3).uri == "zone-policy:line:3"
    policy = Location.zone_rule(None, None)
    assert (policy.uri, policy.name, policy.line) == ("zone-policy:", None, None)
    assert "line" not in policy.to_dict()


def test_an_endpoints_dict_keeps_the_keys_the_report_schemas_fix() -> None:
    # The scan and audit report schemas forbid other keys in a location.
    assert set(Location.endpoint("192.0.2.7", 8883).to_dict()) == {
        "uri", "kind", "host", "port", "transport", "name", "device"}


def test_findings_of_one_rule_at_different_places_have_different_fingerprints() -> None:
    rule = Rule("policy/unused-role", "t", Severity.INFO, "d", "f")
    first = rule.at(Location.policy_rule("a", None), "m")
    assert first.fingerprint != rule.at(Location.policy_rule("b", None), "m").fingerprint
    assert first.fingerprint == rule.at(Location.policy_rule("a", None), "other").fingerprint


def _imported(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_the_package_imports_nothing_from_iotsec_but_its_own_modules_and_errors(
        path: Path) -> None:
    outside = {m for m in _imported(path) if (m == "iotsec" or m.startswith("iotsec."))
               and not m.startswith(("iotsec.findings", "iotsec.errors"))}
    assert outside == set()
