"""The campaign core: waves, thresholds, timeouts and the state machine, with ``now`` given
(the clock fixture moves time; nothing sleeps)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.errors import CampaignError, CampaignStateError, DeviceRollbackError, OtaReportError
from iotsec.firmware import campaign as core
from iotsec.firmware.campaign import Campaign, CampaignState, DeviceStatus, Plan, WaveCounts
from iotsec.firmware.image import ImageVersion

S = DeviceStatus


def counts(**by_status: int) -> WaveCounts:
    return WaveCounts({DeviceStatus(k): v for k, v in by_status.items()})


def test_waves_are_cumulative_and_the_first_has_at_least_one_device():
    plan = Plan(waves=(1, 10, 100))
    assert core.wave_sizes(plan, 1000) == [10, 90, 900]
    assert core.wave_sizes(plan, 50) == [1, 4, 45]
    assert core.wave_sizes(plan, 1) == [1, 0, 0]
    assert core.wave_sizes(plan, 0) == [0, 0, 0]


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 5000),
       cuts=st.lists(st.floats(0.01, 99.99, allow_nan=False), max_size=5, unique=True))
def test_every_device_gets_exactly_one_wave(total, cuts):
    plan = Plan(waves=(*sorted(cuts), 100.0))
    sizes = core.wave_sizes(plan, total)
    assert sum(sizes) == total and all(s >= 0 for s in sizes)
    if total:
        assert sizes[0] >= 1
        for i, pct in enumerate(plan.waves):  # at least the cumulative share, rounded up
            assert sum(sizes[:i + 1]) >= min(total, pct * total / 100 - 1e-6)


def test_wave_assignment_is_deterministic_and_not_by_id_order():
    plan = Plan(waves=(10, 100))
    ids = [f"dev-{i:04d}" for i in range(200)]
    first = core.assign_waves("7", ids, plan)
    assert first == core.assign_waves("7", list(reversed(ids)), plan)
    assert Counter(first.values()) == {0: 20, 1: 180}
    early = sorted(d for d, w in first.items() if w == 0)
    assert early != ids[:20]  # a hash sample, not the lowest ids
    assert core.assign_waves("8", ids, plan) != first  # another campaign, another sample
    with pytest.raises(CampaignError):
        core.assign_waves("7", ["a", "a"], plan)


@pytest.mark.parametrize("waves", [(), (50,), (10, 5, 100), (0, 100), (10, 10, 100),
                                   (100, 100), (*tuple(range(1, 12)), 100)])
def test_bad_wave_plans_are_refused(waves):
    with pytest.raises(CampaignError):
        Plan(waves=waves)


def test_bad_thresholds_and_timeouts_are_refused():
    with pytest.raises(CampaignError):
        Plan(failure_threshold=1.0)
    with pytest.raises(CampaignError):
        Plan(failure_threshold=-0.1)
    with pytest.raises(CampaignError):
        Plan(device_timeout=timedelta(seconds=10))
    with pytest.raises(CampaignError):
        Plan(soak=timedelta(days=100))
    assert Plan.parse_waves("1%, 10%,100") == (1.0, 10.0, 100.0)
    for text in ("", "a,b", ",,", "1" * 300):
        with pytest.raises(CampaignError):
            Plan.parse_waves(text)


def active(clock, **kw) -> Campaign:
    plan = kw.pop("plan", Plan(waves=(10, 50, 100), failure_threshold=0.2,
                               device_timeout=timedelta(hours=1)))
    return Campaign(state=CampaignState.ACTIVE, plan=plan, current_wave=0,
                    wave_started_at=clock(), **kw)


def test_a_finished_wave_starts_the_next_and_the_last_completes(clock):
    c = active(clock)
    waves = {0: counts(installed=2), 1: counts(waiting=8), 2: counts(waiting=10)}
    ev = core.evaluate(c, waves, clock())
    assert ev.campaign.current_wave == 1 and ev.started_waves == (1,)
    assert ev.campaign.state is CampaignState.ACTIVE
    # Wave 2 is still running: nothing moves.
    waves[1] = counts(pending=3, downloading=2, installed=3)
    assert core.evaluate(ev.campaign, waves, clock()).campaign == ev.campaign
    waves[1] = counts(installed=8)
    waves[2] = counts(installed=10)
    later = core.evaluate(core.evaluate(ev.campaign, waves, clock()).campaign, waves, clock())
    assert later.campaign.state is CampaignState.COMPLETED


def test_empty_waves_are_skipped(clock):
    ev = core.evaluate(active(clock), {0: counts(installed=1), 2: counts(waiting=3)}, clock())
    assert ev.campaign.current_wave == 2 and ev.started_waves == (2,)


def test_the_next_wave_waits_for_the_soak_time(clock):
    c = active(clock, plan=Plan(waves=(50, 100), soak=timedelta(hours=6)))
    waves = {0: counts(installed=5), 1: counts(waiting=5)}
    assert core.evaluate(c, waves, clock()).campaign.current_wave == 0
    clock.advance(timedelta(hours=6))
    assert core.evaluate(c, waves, clock()).campaign.current_wave == 1


def test_failures_past_the_threshold_pause_at_once_even_mid_wave(clock):
    c = active(clock)  # threshold 20 %
    ok = core.evaluate(c, {0: counts(failed=2, pending=8)}, clock())
    assert ok.campaign.state is CampaignState.ACTIVE  # 20 % is not past 20 %
    ev = core.evaluate(c, {0: counts(failed=2, rolled_back=1, pending=7)}, clock())
    assert ev.campaign.state is CampaignState.PAUSED
    assert "3 of 10" in (ev.campaign.reason or "") and ev.changes[0].startswith("paused")
    # A paused campaign does not move on by itself.
    done = {0: counts(failed=3, installed=7), 1: counts(waiting=10)}
    assert core.evaluate(ev.campaign, done, clock()).campaign == ev.campaign
    # Resuming acknowledges those failures; new ones count from there.
    resumed = core.resume(ev.campaign, done[0])
    assert resumed.acknowledged_failures == 3
    assert core.evaluate(resumed, done, clock()).campaign.current_wave == 1


def test_timeouts_count_from_the_wave_start_or_the_last_report(clock):
    c = active(clock)
    start = clock()
    clock.advance(timedelta(minutes=50))
    devices = [("a", S.PENDING, None), ("b", S.DOWNLOADING, clock()),
               ("c", S.INSTALLED, start), ("d", S.INSTALLING, start)]
    assert core.timed_out(devices, c, clock()) == []
    clock.advance(timedelta(minutes=10))
    assert core.timed_out(devices, c, clock()) == ["a", "d"]
    clock.advance(timedelta(minutes=50))
    assert core.timed_out(devices, c, clock()) == ["a", "b", "d"]
    assert core.timed_out(devices, core.abort(c, "x"), clock()) == []


def test_operator_controls_follow_the_state_machine(clock):
    c = active(clock)
    paused = core.pause(c, "looking at a report")
    with pytest.raises(CampaignStateError):
        core.pause(paused, "again")
    with pytest.raises(CampaignStateError):
        core.resume(c, WaveCounts())
    aborted = core.abort(paused, "bad build")
    for op in (lambda: core.resume(aborted, WaveCounts()), lambda: core.abort(aborted, "x"),
               lambda: core.pause(aborted, "x")):
        with pytest.raises(CampaignStateError):
            op()
    assert core.evaluate(aborted, {0: counts(installed=1)}, clock()).campaign == aborted


def test_device_reports_follow_the_device_state_machine():
    assert core.after_report(S.PENDING, S.DOWNLOADING) is S.DOWNLOADING
    assert core.after_report(S.DOWNLOADING, S.FAILED) is S.FAILED
    assert core.after_report(S.TIMED_OUT, S.INSTALLED) is S.INSTALLED  # late, still counts
    assert core.after_report(S.INSTALLED, S.ROLLED_BACK) is S.ROLLED_BACK
    assert core.after_report(S.INSTALLED, S.INSTALLED) is S.INSTALLED  # a retried report
    for current, reported in ((S.WAITING, S.DOWNLOADING), (S.CANCELLED, S.INSTALLED),
                              (S.FAILED, S.INSTALLED), (S.ROLLED_BACK, S.DOWNLOADING),
                              (S.INSTALLED, S.DOWNLOADING)):
        with pytest.raises(OtaReportError):
            core.after_report(current, reported)
    for text in ("pending", "timed_out", "waiting", "INSTALLED", "", "x" * 100):
        with pytest.raises(OtaReportError):
            DeviceStatus.reported(text)


def test_the_anti_rollback_rule():
    v = ImageVersion.parse
    core.check_running(3, v("2.0.0"), v("2.1.0"), 3)
    core.check_running(3, v("2.0.0"), v("2.0.0"), None)
    with pytest.raises(DeviceRollbackError):
        core.check_running(3, v("2.0.0"), v("2.5.0"), 2)  # a published image, lower counter
    with pytest.raises(DeviceRollbackError):
        core.check_running(3, v("2.0.0"), v("1.9.9"), None)  # unknown, below the floor


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(list(DeviceStatus)),
                          st.integers(0, 20)), max_size=12))
def test_evaluation_never_crashes_and_never_goes_back(entries):
    from datetime import UTC, datetime

    now = datetime(2030, 1, 1, tzinfo=UTC)
    waves: dict[int, dict[DeviceStatus, int]] = {}
    for wave, status, n in entries:
        waves.setdefault(wave, {})[status] = n
    c = Campaign(CampaignState.ACTIVE, Plan(waves=(10, 50, 100)), 0, now)
    ev = core.evaluate(c, {w: WaveCounts(v) for w, v in waves.items()}, now)
    assert ev.campaign.current_wave >= 0
    assert ev.campaign.state in (CampaignState.ACTIVE, CampaignState.PAUSED,
                                 CampaignState.COMPLETED)
    assert list(ev.started_waves) == sorted(ev.started_waves)
