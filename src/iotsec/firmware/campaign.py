"""Rollout campaigns: waves, failure thresholds, device timeouts and the state machine.

A campaign sends one release to a set of devices in waves given as cumulative percentages
(``1, 10, 100``: 1 % of the devices first, then up to 10 %, then all). Which wave a device
falls in is decided once, at creation, by a hash of the campaign and device ids, so the
first wave is a fair sample and not, say, the devices with the smallest ids.

The campaign moves on by itself: when every device of the current wave has finished
(installed, failed, rolled back or timed out) and the soak time has passed, the next wave
starts. It pauses by itself as soon as the failures of the current wave pass the failure
threshold (a fraction of the wave's size); an operator who resumes it acknowledges the
failures seen so far, and the threshold then applies to new ones. A device that has not
reported for ``device_timeout`` since its wave started (or since its last report) counts
as timed out, which is a failure; a late report still counts.

Everything here is pure: it takes the campaign's state, per-wave counts and ``now``, and
returns the new state. The service layer loads the counts and writes the result.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from iotsec.errors import (
    CampaignError,
    CampaignStateError,
    DeviceRollbackError,
    InvalidInputError,
    OtaReportError,
)
from iotsec.firmware.image import ImageVersion

__all__ = [
    "FAILURES", "FINISHED", "IN_PROGRESS", "MAX_DEVICES", "MAX_TIMEOUT", "MAX_WAVES", "REPORTABLE",
    "REPORTABLE_ORDER", "Campaign", "CampaignState", "DeviceStatus", "Evaluation", "Plan",
    "WaveCounts", "abort", "after_report", "assign_waves", "check_running", "deadline", "evaluate",
    "pause", "resume", "timed_out", "wave_sizes"
]

#: Most waves a campaign may have, and most devices it may target.
MAX_WAVES = 10
MAX_DEVICES = 1_000_000
MAX_TIMEOUT = timedelta(days=90)


class CampaignState(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ABORTED = "aborted"
    COMPLETED = "completed"

    @property
    def final(self) -> bool:
        return self in (CampaignState.ABORTED, CampaignState.COMPLETED)


class DeviceStatus(enum.StrEnum):
    #: In a wave that has not started yet.
    WAITING = "waiting"
    #: Its wave started; the device has not reported yet.
    PENDING = "pending"
    DOWNLOADING = "downloading"
    INSTALLING = "installing"
    INSTALLED = "installed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    TIMED_OUT = "timed_out"
    #: The campaign was aborted before the device started.
    CANCELLED = "cancelled"

    @classmethod
    def reported(cls, text: str) -> DeviceStatus:
        """A status a device may report; :class:`OtaReportError` for anything else."""
        try:
            status = cls(text)
        except ValueError:
            status = None
        if status not in REPORTABLE:
            choices = ", ".join(s.value for s in REPORTABLE_ORDER)
            raise OtaReportError(f"{str(text)[:32]!r} is not a status a device reports",
                                 hint=f"report one of: {choices}")
        return status


REPORTABLE_ORDER = (DeviceStatus.DOWNLOADING, DeviceStatus.INSTALLING, DeviceStatus.INSTALLED,
                    DeviceStatus.FAILED, DeviceStatus.ROLLED_BACK)
REPORTABLE = frozenset(REPORTABLE_ORDER)
IN_PROGRESS = frozenset({DeviceStatus.PENDING, DeviceStatus.DOWNLOADING,
                         DeviceStatus.INSTALLING})
FINISHED = frozenset({DeviceStatus.INSTALLED, DeviceStatus.FAILED, DeviceStatus.ROLLED_BACK,
                      DeviceStatus.TIMED_OUT, DeviceStatus.CANCELLED})
FAILURES = frozenset({DeviceStatus.FAILED, DeviceStatus.ROLLED_BACK, DeviceStatus.TIMED_OUT})


@dataclass(frozen=True)
class Plan:
    """How a campaign rolls out: waves, failure threshold, device timeout, soak time."""

    #: Cumulative percentages, strictly increasing, the last one 100.
    waves: tuple[float, ...] = (100.0,)
    #: Fraction (0..1) of a wave's devices whose failure pauses the campaign.
    failure_threshold: float = 0.05
    device_timeout: timedelta = timedelta(hours=24)
    soak: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        waves = self.waves
        if not 1 <= len(waves) <= MAX_WAVES:
            raise CampaignError(f"a campaign has 1 to {MAX_WAVES} waves",
                                hint="e.g. --waves 1,10,100")
        if any(not (0 < w <= 100) or math.isnan(w) for w in waves):
            raise CampaignError("wave percentages are between 0 (excluded) and 100",
                                hint="e.g. --waves 1,10,100")
        if any(b <= a for a, b in itertools.pairwise(waves)) or waves[-1] != 100:
            raise CampaignError("waves are cumulative percentages: strictly increasing, the "
                                "last one 100", hint="e.g. --waves 1,10,100")
        if not 0 <= self.failure_threshold < 1 or math.isnan(self.failure_threshold):
            raise CampaignError("the failure threshold is a percentage from 0 to below 100")
        if not timedelta(minutes=1) <= self.device_timeout <= MAX_TIMEOUT:
            raise CampaignError("the device timeout is between 1 minute and 90 days")
        if not timedelta(0) <= self.soak <= MAX_TIMEOUT:
            raise CampaignError("the soak time is between 0 and 90 days")

    @classmethod
    def parse_waves(cls, text: str) -> tuple[float, ...]:
        """``"1,10,100"`` -> ``(1.0, 10.0, 100.0)``."""
        parts = [p.strip().rstrip("%") for p in text.split(",")] if len(text) <= 200 else []
        try:
            waves = tuple(float(p) for p in parts if p)
        except ValueError:
            waves = ()
        if not waves:
            raise CampaignError(f"{text[:40]!r} is not a list of wave percentages",
                                hint="e.g. --waves 1,10,100")
        return waves


def wave_sizes(plan: Plan, total: int) -> list[int]:
    """Devices per wave for ``total`` devices: cumulative ``ceil(pct * total / 100)``, so
    every wave with a positive percentage of a non-empty fleet gets at least its share
    rounded up, and the first wave has at least one device."""
    if not 0 <= total <= MAX_DEVICES:
        raise CampaignError(f"a campaign targets at most {MAX_DEVICES} devices")
    sizes = []
    done = 0
    for pct in plan.waves:
        upto = min(total, math.ceil(pct * total / 100 - 1e-9))
        sizes.append(max(0, upto - done))
        done = max(done, upto)
    return sizes


def assign_waves(campaign_key: str, device_ids: Sequence[str], plan: Plan) -> dict[str, int]:
    """Each device's wave (0-based): devices ordered by SHA-256 of ``campaign_key`` and
    their id, then cut by :func:`wave_sizes`."""
    if len(set(device_ids)) != len(device_ids):
        raise CampaignError("a device appears twice in the campaign")
    order = sorted(device_ids, key=lambda d: hashlib.sha256(
        f"{campaign_key}\x00{d}".encode()).digest())
    assigned: dict[str, int] = {}
    start = 0
    for wave, size in enumerate(wave_sizes(plan, len(order))):
        for device in order[start:start + size]:
            assigned[device] = wave
        start += size
    return assigned


@dataclass(frozen=True)
class WaveCounts:
    """How many devices of one wave are in each status."""

    counts: Mapping[DeviceStatus, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(self.counts.values())

    def of(self, *statuses: DeviceStatus) -> int:
        return sum(self.counts.get(s, 0) for s in statuses)

    @property
    def failures(self) -> int:
        return self.of(*FAILURES)

    @property
    def finished(self) -> bool:
        return self.of(*FINISHED) == self.size


@dataclass(frozen=True)
class Campaign:
    """The state a campaign evaluation needs."""

    state: CampaignState
    plan: Plan
    current_wave: int
    wave_started_at: datetime
    acknowledged_failures: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class Evaluation:
    campaign: Campaign
    #: Human-readable transitions, in order (for events and the CLI).
    changes: tuple[str, ...] = ()
    #: Waves that started in this evaluation: their WAITING devices become PENDING.
    started_waves: tuple[int, ...] = ()


def deadline(wave_started_at: datetime, last_report: datetime | None,
             timeout: timedelta) -> datetime:
    """When a device in progress times out: ``timeout`` after its wave started or after
    its last report, whichever is later."""
    since = wave_started_at if last_report is None else max(wave_started_at, last_report)
    return since + timeout


def timed_out(devices: Iterable[tuple[str, DeviceStatus, datetime | None]], campaign: Campaign,
              now: datetime) -> list[str]:
    """Ids of the current wave's devices (``(id, status, last report)``) that are in
    progress and past their :func:`deadline`. Nothing times out in a final campaign."""
    if campaign.state.final:
        return []
    return [device for device, status, last in devices
            if status in IN_PROGRESS
            and now >= deadline(campaign.wave_started_at, last, campaign.plan.device_timeout)]


def _failure_rate(counts: WaveCounts, acknowledged: int) -> float:
    return max(0, counts.failures - acknowledged) / counts.size if counts.size else 0.0


def evaluate(campaign: Campaign, waves: Mapping[int, WaveCounts], now: datetime) -> Evaluation:
    """Apply the rules to an active campaign (with timeouts already counted): pause when
    the current wave's new failures pass the threshold; start the next non-empty wave when
    the current one finished and has soaked; complete after the last wave."""
    if campaign.state is not CampaignState.ACTIVE:
        return Evaluation(campaign)
    changes: list[str] = []
    started: list[int] = []
    plan = campaign.plan
    last_wave = len(plan.waves) - 1
    while True:
        counts = waves.get(campaign.current_wave, WaveCounts())
        rate = _failure_rate(counts, campaign.acknowledged_failures)
        if rate > plan.failure_threshold:
            new = counts.failures - campaign.acknowledged_failures
            reason = (f"wave {campaign.current_wave + 1}: {new} of {counts.size} devices "
                      f"failed ({rate:.1%}), over the "
                      f"{plan.failure_threshold:.1%} threshold")
            campaign = replace(campaign, state=CampaignState.PAUSED, reason=reason)
            changes.append(f"paused: {reason}")
            break
        if not counts.finished:
            break
        if counts.size and now < campaign.wave_started_at + plan.soak:
            break
        nxt = campaign.current_wave + 1
        while nxt <= last_wave and waves.get(nxt, WaveCounts()).size == 0:
            nxt += 1
        if nxt > last_wave:
            campaign = replace(campaign, state=CampaignState.COMPLETED,
                               reason="every wave finished")
            changes.append("completed: every wave finished")
            break
        campaign = replace(campaign, current_wave=nxt, wave_started_at=now,
                           acknowledged_failures=0)
        started.append(nxt)
        changes.append(f"wave {nxt + 1} of {last_wave + 1} started "
                       f"({waves[nxt].size} devices)")
    return Evaluation(campaign, tuple(changes), tuple(started))


def pause(campaign: Campaign, reason: str) -> Campaign:
    if campaign.state is not CampaignState.ACTIVE:
        raise CampaignStateError(f"the campaign is {campaign.state.value}; only an active "
                                 "campaign can be paused")
    return replace(campaign, state=CampaignState.PAUSED, reason=reason)


def resume(campaign: Campaign, current: WaveCounts) -> Campaign:
    """Resume a paused campaign; the current wave's failures so far are acknowledged."""
    if campaign.state is not CampaignState.PAUSED:
        raise CampaignStateError(f"the campaign is {campaign.state.value}; only a paused "
                                 "campaign can be resumed")
    return replace(campaign, state=CampaignState.ACTIVE, reason=None,
                   acknowledged_failures=current.failures)


def abort(campaign: Campaign, reason: str) -> Campaign:
    if campaign.state.final:
        raise CampaignStateError(f"the campaign is already {campaign.state.value}")
    return replace(campaign, state=CampaignState.ABORTED, reason=reason)


def after_report(current: DeviceStatus, reported: DeviceStatus) -> DeviceStatus:
    """The device's status after a report, or :class:`OtaReportError` when the report does
    not fit: a device reports only once its wave started; ``installed``, ``failed`` and
    ``rolled_back`` are final, except that an installed image may still roll back (MCUboot
    reverts an image that is not confirmed); a timed-out device that reports late counts
    with what it reports."""
    if reported not in REPORTABLE:
        raise InvalidInputError(f"{reported.value} is not a status a device reports")
    if current is DeviceStatus.WAITING:
        raise OtaReportError("the device's wave has not started; it has no update to report on",
                             hint="the device should wait until the server offers the update")
    if current is DeviceStatus.CANCELLED:
        raise OtaReportError("the campaign was aborted before this device started",
                             hint="the device should not install this update")
    if current in IN_PROGRESS or current is DeviceStatus.TIMED_OUT:
        return reported
    if current is DeviceStatus.INSTALLED and reported is DeviceStatus.ROLLED_BACK:
        return reported
    if current is reported:
        return current  # a repeated final report (a retry after a lost answer)
    raise OtaReportError(f"the device already reported {current.value}; it cannot now report "
                         f"{reported.value}")


def check_running(recorded_counter: int, min_version: ImageVersion, claimed: ImageVersion,
                  claimed_counter: int | None) -> None:
    """The server-side anti-rollback rule: a device that confirmed security counter
    ``recorded_counter`` may not claim to run an image with a lower one. The counter of a
    published version is known (``claimed_counter``); for a version the repository never
    published, anything below ``min_version`` (the lowest version carrying the recorded
    counter) is refused."""
    if claimed_counter is not None:
        if claimed_counter < recorded_counter:
            raise DeviceRollbackError(
                f"the device reports running {claimed} (security counter {claimed_counter}); "
                f"it already confirmed security counter {recorded_counter}")
        return
    if claimed < min_version:
        raise DeviceRollbackError(
            f"the device reports running {claimed}, below {min_version}, the lowest version "
            f"its recorded security counter {recorded_counter} allows")
