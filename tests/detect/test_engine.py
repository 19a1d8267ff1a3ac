"""The detector, rule kind by rule kind (pure: observations in, detections out)."""

from __future__ import annotations

from iotsec.detect.engine import Detector, Observation, network_of
from iotsec.detect.rules import parse_rules


def _detector(rules: str) -> Detector:
    return Detector(parse_rules(("rules:\n" + rules).encode()))


def test_failures_per_source_fire_once_per_window() -> None:
    d = _detector("  - {name: spray, kind: authn-failures, per: source, window: 60, "
                  "threshold: 5}\n")
    fired = [d.observe(Observation(1000 + i, "authn-failure", device=f"victim-{i}",
                                   source="203.0.113.9:4000", ref=i)) for i in range(12)]
    hits = [x for batch in fired for x in batch]
    assert len(hits) == 1
    assert hits[0].subject == "203.0.113.9"
    assert hits[0].value == 6
    assert hits[0].refs == (0, 1, 2, 3, 4, 5)
    # The next window counts afresh.
    assert d.observe_all(Observation(1080 + i, "authn-failure", source="203.0.113.9")
                         for i in range(6))


def test_a_baseline_learns_the_usual_rate() -> None:
    d = _detector("  - {name: rate, kind: message-rate, window: 10, "
                  "baseline: {deviations: 4, warmup: 5, floor: 30}}\n")
    t = 0.0
    # Ten windows of 20 messages: under the floor, learnt as usual.
    for _ in range(10):
        for _ in range(20):
            assert d.observe(Observation(t, "publish", device="dev-1", topic="t")) == []
            t += 0.5
    baseline = d.baselines[("rate", "dev-1")]
    assert baseline.n >= 9
    assert abs(baseline.mean - 20) < 1
    # A flood in one window fires once, above the floor.
    hits = d.observe_all(Observation(t + i * 0.01, "publish", device="dev-1", topic="t")
                         for i in range(100))
    assert len(hits) == 1
    assert hits[0].limit == 30
    assert ("rate", "dev-1") in {(r, s) for r, s, _ in d.take_dirty()}


def test_a_large_message_fires_and_does_not_teach_the_baseline() -> None:
    d = _detector("  - {name: size, kind: message-size, "
                  "baseline: {deviations: 4, warmup: 3, floor: 1000}}\n")
    for i in range(20):
        assert d.observe(Observation(i, "publish", device="d", size=100 + i % 3)) == []
    hit = d.observe(Observation(30, "publish", device="d", size=5000, topic="x"))
    assert hit and hit[0].evidence["size"] == 5000
    assert d.baselines[("size", "d")].mean < 200


def test_new_networks_and_topics_after_learning() -> None:
    d = _detector("  - {name: net, kind: new-source-network, learn: 100}\n"
                  "  - {name: topic, kind: unusual-topic, learn: 100}\n")
    assert d.observe(Observation(0, "connect", device="d", source="10.0.0.5:1")) == []
    assert d.observe(Observation(1, "publish", device="d", topic="a/b")) == []
    assert d.observe(Observation(50, "connect", device="d", source="10.0.1.5:1")) == []
    assert d.observe(Observation(200, "connect", device="d", source="10.0.0.99:2")) == []
    assert d.observe(Observation(201, "publish", device="d", topic="a/b")) == []
    net = d.observe(Observation(300, "connect", device="d", source="198.51.100.7:3"))
    assert [h.rule.name for h in net] == ["net"]
    assert net[0].evidence["value"] == "198.51.100.0/24"
    topic = d.observe(Observation(301, "publish", device="d", topic="admin/shell"))
    assert [h.rule.name for h in topic] == ["topic"]


def test_one_certificate_in_two_places() -> None:
    d = _detector("  - {name: clone, kind: certificate-two-places}\n")
    assert d.observe(Observation(0, "connect", device="d", client_id="a",
                                 source="10.0.0.5:1")) == []
    # The same address again (a reconnect with another client id) is not a clone.
    assert d.observe(Observation(1, "connect", device="d", client_id="b",
                                 source="10.0.0.5:2")) == []
    hit = d.observe(Observation(2, "connect", device="d", client_id="c",
                                source="192.0.2.1:3"))
    assert hit and hit[0].evidence["addresses"] == ["10.0.0.5", "192.0.2.1"]
    # Collisions on one client id from two addresses too.
    assert d.observe(Observation(3, "collision", device="e", client_id="e",
                                 source="192.0.2.9:1", previous_source="10.0.0.8:5"))


def test_client_id_conflicts_and_disconnect_storms() -> None:
    d = _detector("  - {name: cid, kind: client-id-conflict, window: 60, threshold: 2}\n"
                  "  - {name: storm, kind: disconnect-storm, window: 60, threshold: 3}\n")
    hits = d.observe_all(Observation(i, "collision", device="d", client_id="d")
                         for i in range(3))
    assert [h.rule.name for h in hits] == ["cid"]
    clean = d.observe_all(Observation(i, "disconnect", device=f"x{i}") for i in range(10))
    assert clean == []
    storm = d.observe_all(Observation(i, "disconnect", device=f"x{i}", abnormal=True)
                          for i in range(10))
    assert [(h.rule.name, h.subject) for h in storm] == [("storm", "fleet")]


def test_silence_past_the_heartbeat() -> None:
    d = _detector("  - {name: quiet, kind: heartbeat-silence, threshold: 60}\n")
    d.observe(Observation(0, "publish", device="d", topic="t"))
    assert d.tick(30) == []
    hits = d.tick(100)
    assert [h.subject for h in hits] == ["d"]
    assert d.tick(200) == []  # once per silence
    d.observe(Observation(210, "publish", device="d", topic="t"))
    assert d.tick(300)


def test_state_survives_a_restart() -> None:
    rules = "  - {name: net, kind: new-source-network, learn: 10}\n"
    first = _detector(rules)
    first.observe(Observation(0, "connect", device="d", source="10.0.0.5:1"))
    saved = first.take_dirty()
    second = _detector(rules)
    for rule, subject, data in saved:
        second.restore(rule, subject, data)
    assert second.observe(Observation(100, "connect", device="d", source="10.0.0.7:1")) == []
    assert second.observe(Observation(101, "connect", device="d", source="10.9.0.7:1"))


def test_networks() -> None:
    assert network_of("10.1.2.3:5000") == "10.1.2.0/24"
    assert network_of("[2001:db8::1]:8883") == "2001:db8::/64"
    assert network_of("2001:db8::1") == "2001:db8::/64"
    assert network_of(None) is None
