"""Wire models of secure OTA: releases, rollout campaigns and their devices, a device's
firmware and assignment, and the TUF update repository."""

from __future__ import annotations

from datetime import datetime

from iotsec.app.ota.anti_rollback import FirmwareRecord
from iotsec.app.ota.campaigns import CampaignDevice, CampaignInfo
from iotsec.app.ota.device_updates import Assignment
from iotsec.app.ota.releases import ReleaseInfo
from iotsec.app.ota.repo_metadata import Outcome
from iotsec.app.ota.repo_status import RepoStatus
from iotsec.app.wire.base import Wire
from iotsec.firmware import releases as rel
from iotsec.firmware.campaign import WaveCounts

__all__ = [
    "AssignmentEnvelope", "AssignmentOut", "CampaignDeviceOut", "CampaignOut", "FirmwareOut",
    "ReleaseOut", "RepoOutcomeOut", "RepoStatusOut", "RoleStatusOut", "StagedOut",
    "TargetReleaseOut", "WrittenOut"
]


class ReleaseOut(Wire):
    """One publication of a release to a channel."""

    id: int
    product: str
    channel: str
    version: str
    security_counter: int | None
    target: str
    sha256: str
    length: int
    hardware: list[str]
    published_at: datetime

    @classmethod
    def from_domain(cls, r: ReleaseInfo) -> ReleaseOut:
        return cls(id=r.id, product=r.product, channel=r.channel, version=str(r.version),
                   security_counter=r.security_counter, target=r.target, sha256=r.sha256,
                   length=r.length, hardware=list(r.hardware), published_at=r.published_at)


def _counts(w: WaveCounts) -> dict[str, int]:
    return {s.value: n for s, n in sorted(w.counts.items()) if n}


class CampaignOut(Wire):
    """A rollout campaign, its release, plan and progress (waves counted from 1)."""

    id: int
    name: str
    state: str
    reason: str | None
    release: ReleaseOut
    selector: str
    waves: list[float]
    failure_threshold: float
    device_timeout_seconds: int
    soak_seconds: int
    current_wave: int
    wave_started_at: datetime
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    devices: int
    progress: dict[str, int]
    per_wave: list[dict[str, int]]

    @classmethod
    def from_domain(cls, c: CampaignInfo) -> CampaignOut:
        return cls(id=c.id, name=c.name, state=c.state.value, reason=c.reason,
                   release=ReleaseOut.from_domain(c.release), selector=c.selector,
                   waves=list(c.plan.waves), failure_threshold=c.plan.failure_threshold * 100,
                   device_timeout_seconds=int(c.plan.device_timeout.total_seconds()),
                   soak_seconds=int(c.plan.soak.total_seconds()),
                   current_wave=c.current_wave + 1, wave_started_at=c.wave_started_at,
                   created_by=c.created_by, created_at=c.created_at, updated_at=c.updated_at,
                   devices=c.totals.size, progress=_counts(c.totals),
                   per_wave=[_counts(w) for w in c.waves])


class CampaignDeviceOut(Wire):
    """One device of a campaign (its wave counted from 1)."""

    device_id: str
    wave: int
    status: str
    version: str | None
    detail: str | None
    updated_at: datetime | None

    @classmethod
    def from_domain(cls, d: CampaignDevice) -> CampaignDeviceOut:
        return cls(device_id=d.device_id, wave=d.wave + 1, status=d.status.value,
                   version=d.version, detail=d.detail, updated_at=d.updated_at)


class FirmwareOut(Wire):
    """The firmware a device last reported running."""

    device_id: str
    product: str | None
    version: str
    security_counter: int
    min_version: str
    updated_at: datetime

    @classmethod
    def from_domain(cls, r: FirmwareRecord) -> FirmwareOut:
        return cls(device_id=r.device_id, product=r.product, version=r.version,
                   security_counter=r.security_counter, min_version=r.min_version,
                   updated_at=r.updated_at)


class AssignmentOut(Wire):
    """The update a campaign assigns to a device."""

    campaign_id: int
    product: str
    target: str
    version: str
    security_counter: int | None
    sha256: str
    length: int
    hardware: list[str]

    @classmethod
    def from_domain(cls, a: Assignment) -> AssignmentOut:
        r = a.release
        return cls(campaign_id=a.campaign_id, product=r.product, target=r.target,
                   version=str(r.version), security_counter=r.security_counter,
                   sha256=r.sha256, length=r.length, hardware=list(r.hardware))


class AssignmentEnvelope(Wire):
    """A device's assignment, ``null`` when it has nothing to install."""

    update: AssignmentOut | None


class TargetReleaseOut(Wire):
    """A release as the signed targets metadata lists it (its ``custom.iotsec`` data;
    ``published_at`` in Unix seconds, as signed)."""

    product: str
    version: str
    security_counter: int | None
    hardware: list[str]
    channel: str
    target: str
    image_hash: str
    signed_by: str
    published_at: int

    @classmethod
    def from_domain(cls, r: rel.Release) -> TargetReleaseOut:
        return cls.model_validate(r.custom()["iotsec"])


class StagedOut(Wire):
    """A metadata file staged for offline signing, and how many signatures it has."""

    file: str
    signatures: str


class RoleStatusOut(Wire):
    """One TUF role of the repository (key ids shortened to 16 hex digits)."""

    role: str
    version: int | None
    expires: str | None
    threshold: int
    keys: list[str]


class RepoStatusOut(Wire):
    """The update repository: its roles, staged files and the releases it lists."""

    directory: str
    roles: list[RoleStatusOut]
    staged: list[StagedOut]
    releases: list[TargetReleaseOut]

    @classmethod
    def from_domain(cls, s: RepoStatus) -> RepoStatusOut:
        return cls(directory=s.directory,
                   roles=[RoleStatusOut(role=r.role, version=r.version, expires=r.expires,
                                        threshold=r.threshold, keys=list(r.keys))
                          for r in s.roles],
                   staged=[StagedOut(file=f, signatures=n) for f, n in s.staged],
                   releases=[TargetReleaseOut.from_domain(r) for r in s.releases])


class RepoOutcomeOut(Wire):
    """What a repository command did: metadata published, files staged for offline
    signing, and the release it published (``null`` if none)."""

    published: list[str]
    staged: list[StagedOut]
    release: TargetReleaseOut | None

    @classmethod
    def from_domain(cls, o: Outcome) -> RepoOutcomeOut:
        return cls(published=list(o.published),
                   staged=[StagedOut(file=f, signatures=n) for f, n in o.staged],
                   release=TargetReleaseOut.from_domain(o.release)
                   if o.release is not None else None)


class WrittenOut(Wire):
    """The metadata files a refresh re-signed."""

    written: list[str]
