"""The pure checks over hand-built snapshots: edge cases that are awkward to reach through
the services (times at the boundary, unknown channels, listener layouts)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from iotsec.audit import checks_identity, checks_ops, checks_pki
from iotsec.audit.checks import run_checks
from iotsec.audit.keyinfo import KeyFacts
from iotsec.audit.rules import ALL_RULES
from iotsec.audit.snapshot import (
    DAY,
    AuditOptions,
    BrokerFacts,
    BrokerListener,
    CertFacts,
    DeviceKeyFacts,
    EventFacts,
    FirmwareFacts,
    Snapshot,
    TokenFacts,
)
from iotsec.errors import AuditOptionError

NOW = 1_800_000_000
OPTS = AuditOptions()


def snap(**fields: object) -> Snapshot:
    base: dict[str, object] = dict(
        now=NOW, authorities=(), device_states={}, live_certs=(), past_certs=(),
        device_keys=(), events=(), events_in_window=1, tokens=(), firmware=(),
        channel_counters={}, lint=(), policy_roles=0, broker=None)
    base.update(fields)
    return Snapshot(**base)  # type: ignore[arg-type]


def uris(found: tuple[list, object]) -> set[str]:  # type: ignore[type-arg]
    return {f.location.uri for f in found[0]}


def test_every_rule_has_exactly_one_outcome_and_nothing_is_found_in_an_empty_fleet():
    findings, outcomes = run_checks(snap(), OPTS)
    assert findings == [] and list(outcomes) == [r.id for r in ALL_RULES]


@pytest.mark.parametrize("kwargs", [
    {"ca_days": 0}, {"cert_days": -1}, {"max_cert_age": 10**6}, {"crl_hours": 0},
    {"token_unused_days": 0}, {"window": timedelta(seconds=5)},
    {"window": timedelta(days=400)}, {"ca_days": True}, {"cert_days": 1.5},
])
def test_bad_options_are_refused(kwargs):
    with pytest.raises(AuditOptionError) as err:
        AuditOptions.parse(**kwargs)
    assert err.value.hint


def test_a_connection_in_the_second_of_the_revocation_is_not_flagged():
    revoked = CertFacts("AA", "d", 1, "device", NOW - 10 * DAY, NOW + DAY, NOW - 100)
    s = snap(device_states={"d": "active"}, past_certs=(revoked,),
             events=(EventFacts(NOW - 100, "broker.connect", "success", "d", "x:1", {}),
                     EventFacts(NOW - 99, "broker.connect", "success", "d", "x:1", {})))
    found = checks_pki.revoked_cert_connecting(s, OPTS)
    assert uris(found) == {"device:d"}
    assert found[0][0].evidence_dict()["connections"] == 1


def test_a_connection_in_the_second_a_renewed_certificate_is_revoked_is_not_flagged():
    """The device's older certificate was revoked long before; its new one was used and
    revoked in the same second: that use may have preceded the revocation."""
    old = CertFacts("AA", "d", 1, "device", NOW - 10 * DAY, NOW + DAY, NOW - 500)
    new = CertFacts("BB", "d", 1, "device", NOW - 200, NOW + DAY, NOW - 100)
    s = snap(device_states={"d": "active"}, past_certs=(old, new),
             events=(EventFacts(NOW - 100, "broker.connect", "success", "d", "x:1", {}),))
    assert uris(checks_pki.revoked_cert_connecting(s, OPTS)) == set()
    late = snap(device_states={"d": "active"}, past_certs=(old, new),
                events=(EventFacts(NOW - 99, "broker.connect", "success", "d", "x:1", {}),))
    assert uris(checks_pki.revoked_cert_connecting(late, OPTS)) == {"device:d"}


def test_sessions_from_two_addresses_overlap_only_without_a_disconnect_between():
    def ev(at: int, kind: str, source: str) -> EventFacts:
        return EventFacts(at, kind, "success", "d", source, {})

    sequential = (ev(1, "broker.connect", "10.0.0.1:1"), ev(2, "broker.disconnect", "10.0.0.1:1"),
                  ev(3, "broker.connect", "10.0.0.2:1"))
    assert uris(checks_identity.shared_certificate(snap(events=sequential), OPTS)) == set()
    same_host = (ev(1, "broker.connect", "10.0.0.1:1"), ev(2, "broker.connect", "10.0.0.1:2"))
    assert uris(checks_identity.shared_certificate(snap(events=same_host), OPTS)) == set()
    v6 = (ev(1, "broker.connect", "[2001:db8::1]:1"), ev(2, "broker.connect", "[2001:db8::2]:1"))
    assert uris(checks_identity.shared_certificate(snap(events=v6), OPTS)) == {"device:d"}


def test_a_registered_key_equal_to_another_devices_certificate_key_is_shared():
    from iotsec.audit.keyinfo import CertKeyFacts

    p256 = KeyFacts("ec", 256, "P-256")
    cert = CertFacts("AB", "a", 1, "device", NOW - DAY, NOW + DAY, None,
                     CertKeyFacts(p256, "ecdsa-with-SHA256", b"spki"))
    key = DeviceKeyFacts("kid1", "b", "ES256", p256, b"spki")
    found = checks_identity.shared_certificate(snap(live_certs=(cert,), device_keys=(key,)), OPTS)
    (finding,) = found[0]
    assert finding.evidence_dict()["devices"] == ["a", "b"]
    assert "iotsec cert revoke AB --reason keyCompromise" in finding.fix


def test_firmware_with_an_unknown_channel_is_judged_against_the_least_demanding():
    counters = {("thermo", "stable"): 3, ("thermo", "beta"): 5}
    fw = (FirmwareFacts("a", "thermo", "1.0.0", 3, None),
          FirmwareFacts("b", "thermo", "1.0.0", 3, "beta"),
          FirmwareFacts("c", "thermo", "0.9.0", 2, None),
          FirmwareFacts("d", "other", "1.0.0", 0, None))
    found = checks_ops.firmware_below_counter(snap(firmware=fw, channel_counters=counters), OPTS)
    assert uris(found) == {"device:b", "device:c"}
    assert found[1].checked == 3


def test_tokens_with_the_same_name_get_distinct_locations():
    tokens = (TokenFacts("t1", "ci", "admin", NOW - DAY, None, NOW),
              TokenFacts("t2", "ci", "auditor", NOW - DAY, None, NOW),
              TokenFacts("t3", "old", "admin", NOW - 200 * DAY, NOW - 1, None))
    found = checks_ops.token_no_expiry(snap(tokens=tokens), OPTS)
    assert uris(found) == {"token:ci#t1", "token:ci#t2"}
    assert {f.severity.value for f in found[0]} == {"high", "low"}
    assert found[1].checked == 2  # the expired token no longer counts


def test_broker_listeners_on_sockets_are_not_network_listeners():
    broker = BrokerFacts(directory="/b", listeners=(
        BrokerListener(port=0, bind=None, socket="/b/run/admin.sock"),
        BrokerListener(port=8883, bind="::", tls=True, require_certificate=True,
                       crlfile="/b/crl.pem")), crls=())
    out = {o.rule_id: (f, o) for f, o in checks_ops.broker(snap(broker=broker), OPTS)}
    assert out["audit/broker-plaintext-listener"][1].checked == 1
    assert uris(out["audit/broker-plaintext-listener"]) == set()
    # No CRL of the issuing CA is needed to judge when no issuing CA is known.
    assert uris(out["audit/broker-crl-missing"]) == set()
    unread = replace(broker, problem="mosquitto.conf is larger than 1048576 bytes")
    skipped = checks_ops.broker(snap(broker=unread), OPTS)
    assert all(o.skipped and "larger" in o.skipped for _, o in skipped)


def test_history_is_read_only_for_devices_that_need_it():
    from iotsec.audit.checks import history_needed

    valid = CertFacts("V", "ok", 1, "device", NOW - 10 * DAY, NOW + DAY, None)
    fresh = CertFacts("F", "fresh", 1, "device", NOW - 60, NOW + DAY, None)
    since = NOW - DAY
    events = [EventFacts(NOW - 100, "broker.connect", "success", d, "x:1", {})
              for d in ("ok", "fresh", "gone")]
    events.append(EventFacts(NOW - 50, "device-token", "success", "ok", None, {"kid": "OLD"}))
    events.append(EventFacts(NOW - 40, "device-token", "success", "ok", None, {"kid": "V"}))
    states = {"ok": "active", "fresh": "active", "gone": "disabled", "idle": "active"}
    assert history_needed(states, [valid, fresh], events, since) == {
        "fresh", "gone", "idle", "ok"}
    assert history_needed(states, [valid, fresh], events[:3], since) == {
        "fresh", "gone", "idle"}
