"""Errors: secure OTA distribution (TUF repository, rollout campaigns)."""

from __future__ import annotations

from iotsec.errors.base import ConflictError, IotsecError

__all__ = [
    "CampaignError", "CampaignStateError", "DeviceRollbackError", "HardwareMismatchError",
    "OtaDownloadError", "OtaEndlessDataError", "OtaError", "OtaReportError", "OtaRepositoryError",
    "OtaTargetError", "ReleaseDowngradeError", "TufExpiredError", "TufMetadataError",
    "TufRollbackError", "TufThresholdError"
]


class OtaError(IotsecError):
    """Over-the-air updates: TUF metadata, the update repository, campaigns and device
    reports. Each subclass names one reason."""

    status = 422
    code = "ota"


class OtaRepositoryError(OtaError):
    """The update repository is missing, not initialised, or cannot be used as asked."""

    status = 409
    code = "ota-repository"
    default_hint = "create it with 'iotsec ota repo init' (see 'iotsec ota repo status')"


class TufMetadataError(OtaError):
    """TUF metadata that is not acceptable: unparseable, the wrong role, over its size limit,
    or inconsistent with the repository."""

    code = "tuf-metadata"
    default_hint = "give metadata produced by 'iotsec ota' for this repository"


class TufThresholdError(TufMetadataError):
    """Metadata signed by fewer trusted keys than its role's threshold (or by keys the
    role does not trust)."""

    code = "tuf-threshold"
    default_hint = ("sign it with more of the role's keys ('iotsec ota metadata sign FILE "
                    "--key KEY') until the threshold is met")


class TufExpiredError(TufMetadataError):
    """Metadata whose expiry date has passed (a frozen or stale repository)."""

    code = "tuf-expired"
    default_hint = ("re-sign it with a later expiry; online roles are refreshed by 'iotsec ota "
                    "repo refresh'")


class TufRollbackError(TufMetadataError):
    """Metadata whose version is not newer than the one already trusted (replayed or rolled
    back), or not the version the snapshot names (mix-and-match)."""

    code = "tuf-rollback"
    default_hint = "metadata versions only move forward; stage and sign a new version"


class OtaDownloadError(OtaError):
    """Metadata or an image could not be downloaded from the update server."""

    status = 502
    code = "ota-download"
    default_hint = "check the update server URL and the device's network, then retry"


class OtaEndlessDataError(OtaDownloadError):
    """The server sent more bytes than the metadata allows (an endless-data attack)."""

    code = "ota-endless-data"
    default_hint = "the update server is misbehaving or compromised; the download was cut off"


class OtaTargetError(OtaError):
    """A downloaded image whose length or hash differs from the signed targets metadata
    (arbitrary software), or a target the metadata does not list."""

    code = "ota-target"
    default_hint = "do not install it; the update server is misbehaving or compromised"


class HardwareMismatchError(OtaError):
    """A release that is not built for the device's hardware (or product)."""

    code = "ota-hardware"
    default_hint = "publish the image for this hardware with --hardware, or pick another release"


class ReleaseDowngradeError(OtaError, ConflictError):
    """Publishing an image older (version or security counter) than the channel serves."""

    status = 409
    code = "ota-release-downgrade"
    default_hint = "publish a newer image, or pass --force to serve an older one on purpose"


class CampaignError(OtaError):
    """A rollout campaign that cannot be created or changed as asked."""

    code = "ota-campaign"


class CampaignStateError(CampaignError, ConflictError):
    """The campaign's state does not allow this (e.g. resuming an aborted campaign)."""

    status = 409
    code = "ota-campaign-state"
    default_hint = "check the campaign with 'iotsec ota campaign status ID'"


class OtaReportError(OtaError):
    """A device report that does not fit the device's update (unknown campaign, a status
    out of order, a report after the update ended)."""

    status = 409
    code = "ota-report"
    default_hint = "report downloading, installing, then installed, failed or rolled_back"


class DeviceRollbackError(OtaError, ConflictError):
    """A device reports running a version below what its recorded security counter allows
    (the server-side anti-rollback record)."""

    status = 409
    code = "ota-device-rollback"
    default_hint = ("the device runs older firmware than it already confirmed; investigate it "
                    "before trusting its reports")
