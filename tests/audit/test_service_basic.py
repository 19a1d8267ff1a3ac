"""The audit service on a freshly initialised home (both backends)."""

from __future__ import annotations

from iotsec.app.audit import run_audit
from iotsec.app.events import list_events
from iotsec.audit.rules import ALL_RULES


def test_a_fresh_home_is_audited_with_an_outcome_for_every_rule(rt):
    result = run_audit(rt)
    assert set(result.outcomes) == {r.id for r in ALL_RULES}
    # The default role is held by nobody yet; init's admin token expires (90 days).
    assert {(f.rule.id, f.location.uri) for f in result.findings} == {
        ("audit/policy-misconfigured", "policy:device"),
    }
    assert result.passed("audit/ca-expiring") is True
    assert result.passed("audit/token-no-expiry") is True
    # Without a broker directory the broker checks say nothing either way.
    assert result.passed("audit/broker-anonymous") is None
    assert "IOTSEC_BROKER_DIR" in (result.outcomes["audit/broker-crl-missing"].skipped or "")
    events = list_events(rt.engine, kind="audit.run")
    assert len(events) == 1 and events[0].detail is not None
    assert events[0].detail["findings"] == 1
