"""A device and the real server: the iotsec API under uvicorn on 127.0.0.1, the SDK
updater (python-tuf ngclient through :class:`DeviceFetcher`, a fresh device token per
request), a campaign, and reports back."""

from __future__ import annotations

from pathlib import Path

import pytest

from iotsec.app.identity import devices
from iotsec.app.ota import anti_rollback
from iotsec.app.ota import campaigns as ota
from iotsec.app.runtime import Runtime
from iotsec.errors import DeviceRollbackError, IotsecError
from iotsec.firmware.campaign import CampaignState, Plan
from iotsec.firmware.image import ImageVersion
from iotsec.sdk.updater import DeviceFetcher, OtaServer, OtaUpdater
from tests.ota.conftest import make_repo, publish
from tests.ota.support import ApiServer
from tests.ota.test_api import device_token_source, ota_app


@pytest.fixture
def server(srt: Runtime, keys, tmp_path: Path):
    make_repo(srt, keys)
    publish(srt, keys, tmp_path, "1.0.0", 1)
    publish(srt, keys, tmp_path, "2.0.0", 5, channel="beta")
    devices.add_device(srt, devices.NewDevice.parse("thermo-7", ["lab"], {"hardware": "rev-a"}))
    api = ApiServer(ota_app(srt))
    yield api
    api.close()


def test_a_device_updates_through_a_campaign(srt: Runtime, keys, server: ApiServer,
                                             tmp_path: Path):
    token = device_token_source(srt, "thermo-7")
    campaign = ota.create_campaign(srt, name="beta", product="thermo", channel="beta",
                                   devices=["thermo-7"], plan=Plan())
    api = OtaServer(server.url, token)
    assignment = api.assignment()
    assert assignment is not None and assignment.target == "thermo/2.0.0-0.bin"
    root = (srt.settings.resolved_home / "tuf" / "metadata" / "1.root.json").read_bytes()
    updater = OtaUpdater(metadata_dir=tmp_path / "dev" / "tuf", targets_dir=tmp_path / "dev" / "dl",
                         metadata_url=api.metadata_url, targets_url=api.targets_url,
                         trusted_root=root, firmware_keys=[keys.firmware_public],
                         product="thermo", hardware="rev-a", channel="stable",
                         fetcher=DeviceFetcher(token))
    running = ImageVersion.parse("1.0.0")
    update = updater.check(running, 1, target=assignment.target)
    assert update is not None and update.release.security_counter == 5
    api.report(assignment.campaign_id, "downloading", running)
    done = updater.download(update, min_security_counter=1)
    assert done.image.security_counter == 5
    api.report(assignment.campaign_id, "installing", running)
    result = api.report(assignment.campaign_id, "installed", done.image.version)
    assert result["status"] == "installed"
    assert ota.get_campaign(srt, campaign.id).state is CampaignState.COMPLETED
    assert api.assignment() is None
    # The channel the device follows on its own still serves 1.0.0: nothing newer there.
    assert updater.check(done.image.version, 5) is None
    # The server keeps the device's anti-rollback record.
    assert anti_rollback.firmware_record(srt, "thermo-7").security_counter == 5
    again = ota.create_campaign(srt, name="again", product="thermo", channel="beta",
                                devices=["thermo-7"], plan=Plan())
    with pytest.raises(IotsecError) as refused:
        api.report(again.id, "downloading", "1.0.0")
    assert refused.value.status == DeviceRollbackError.status


def test_without_a_device_token_the_repository_is_closed(srt: Runtime, keys,
                                                         server: ApiServer, tmp_path: Path):
    root = (srt.settings.resolved_home / "tuf" / "metadata" / "1.root.json").read_bytes()
    updater = OtaUpdater(metadata_dir=tmp_path / "m", targets_dir=tmp_path / "t",
                         metadata_url=f"{server.url}/v1/ota/tuf/metadata/",
                         targets_url=f"{server.url}/v1/ota/tuf/targets/", trusted_root=root,
                         firmware_keys=[keys.firmware_public], product="thermo",
                         hardware="rev-a")
    with pytest.raises(IotsecError, match="download failed"):
        updater.check(ImageVersion.parse("0.1"))
