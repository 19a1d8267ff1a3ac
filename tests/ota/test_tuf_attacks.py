"""One test per attack TUF defends against, with python-tuf's real ``ngclient`` (inside the
device SDK's :class:`OtaUpdater`) against a real HTTP server on 127.0.0.1 that serves the
repository, and that the test tampers with as an attacker controlling it would."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from securesystemslib.signer._crypto_signer import CryptoSigner
from tuf.api._payload import Targets
from tuf.api.metadata import Metadata

from iotsec.app.ota import repo as ota_repo
from iotsec.errors import (
    HardwareMismatchError,
    OtaEndlessDataError,
    OtaTargetError,
    TufExpiredError,
    TufRollbackError,
    TufThresholdError,
)
from iotsec.firmware.image import ImageVersion
from iotsec.sdk.updater import OtaUpdater
from tests.ota.conftest import Keys, make_repo, publish
from tests.ota.support import FileServer, image, serving, tuf_key

OLD = ImageVersion.parse("0.9.0")


def updater(repo: Path, server: FileServer, device: Path, keys: Keys, *,
            hardware: str = "rev-a") -> OtaUpdater:
    return OtaUpdater(metadata_dir=device / "metadata", targets_dir=device / "downloads",
                      metadata_url=server.metadata_url, targets_url=server.targets_url,
                      trusted_root=(repo / "metadata" / "1.root.json").read_bytes(),
                      firmware_keys=[keys.firmware_public], product="thermo",
                      hardware=hardware, channel="stable")


def test_a_device_finds_downloads_and_verifies_its_channels_release(repo, keys, tmp_path):
    with serving(repo, tmp_path / "www") as server:
        client = updater(repo, server, tmp_path / "device", keys)
        update = client.check(OLD, 0)
        assert update is not None
        assert str(update.release.version) == "1.0.0+0"
        assert update.release.security_counter == 1
        done = client.download(update, min_security_counter=1)
        assert done.image.version == ImageVersion.parse("1.0.0")
        assert done.path.read_bytes() == (tmp_path / "thermo-1.0.0.bin").read_bytes()
        # Up to date: nothing to do, and hardware of another revision is refused.
        assert updater(repo, server, tmp_path / "device", keys).check(
            ImageVersion.parse("1.0.0"), 1) is None
        with pytest.raises(HardwareMismatchError):
            updater(repo, server, tmp_path / "other", keys, hardware="rev-z").check(OLD)
        # Every image was fetched under its hash (consistent snapshots).
        assert any(p.startswith(f"/targets/thermo/{update.sha256}.") for p in server.requests)


def test_arbitrary_software_a_replaced_image_is_refused(repo, keys, tmp_path):
    with serving(repo, tmp_path / "www") as server:
        client = updater(repo, server, tmp_path / "device", keys)
        update = client.check(OLD)
        assert update is not None
        served = next((server.root / "targets" / "thermo").glob(f"{update.sha256}.*"))
        # The attacker swaps in a validly structured image of the same length, signed by
        # a key of their own: TUF's hash check refuses it before MCUboot parsing.
        evil = image(ota_repo_signer(), "9.9.9", 99)
        served.write_bytes(evil[:update.length].ljust(update.length, b"\0"))
        with pytest.raises(OtaTargetError):
            client.download(update)
        assert not list((tmp_path / "device" / "downloads").glob("*"))


def ota_repo_signer():  # an attacker's image key
    from iotsec.firmware.image_keys import FirmwareKeyType, generate_signer

    return generate_signer(FirmwareKeyType.ED25519)


def test_arbitrary_software_targets_signed_by_an_untrusted_key_are_refused(repo, keys,
                                                                           tmp_path):
    with serving(repo, tmp_path / "www") as server:
        md: Metadata[Targets] = Metadata.from_bytes(
            (server.root / "metadata" / "2.targets.json").read_bytes())
        md.signed.targets["thermo/1.0.0-0.bin"].length += 1
        attacker = tuf_key().signer
        assert isinstance(attacker, CryptoSigner)
        md.sign(attacker)
        (server.root / "metadata" / "2.targets.json").write_bytes(md.to_bytes())
        with pytest.raises(TufThresholdError):
            updater(repo, server, tmp_path / "device", keys).check(OLD)


def test_rollback_old_metadata_is_refused_once_newer_was_seen(srt, repo, keys, tmp_path):
    old = tmp_path / "old-repo"
    shutil.copytree(repo, old)
    publish(srt, keys, tmp_path, "1.1.0", 2)
    with serving(repo, tmp_path / "www") as server:
        client = updater(repo, server, tmp_path / "device", keys)
        update = client.check(OLD)
        assert update is not None and str(update.release.version) == "1.1.0+0"
        # The attacker now serves the older repository state (still validly signed and
        # not expired) to push devices back to 1.0.0.
        shutil.rmtree(server.root)
        shutil.copytree(old, server.root)
        with pytest.raises(TufRollbackError):
            updater(repo, server, tmp_path / "device", keys).check(OLD)
        # A device that never saw the newer state has no way to tell: that is what the
        # persisted metadata directory is for.
        fresh = updater(repo, server, tmp_path / "fresh", keys).check(OLD)
        assert fresh is not None and str(fresh.release.version) == "1.0.0+0"


def test_freeze_metadata_past_its_expiry_is_refused(srt, keys, tmp_path, clock):
    # The repository was last signed 10 days ago; a frozen mirror keeps serving it.
    clock.advance(timedelta(days=-10))
    make_repo(srt, keys)
    publish(srt, keys, tmp_path, "1.0.0", 1)
    repo = srt.settings.resolved_home / "tuf"
    with serving(repo, tmp_path / "www") as server:
        with pytest.raises(TufExpiredError):
            updater(repo, server, tmp_path / "device", keys).check(OLD)
        # Once the server refreshes the online roles, the same device updates.
        clock.advance(timedelta(days=10))
        assert ota_repo.refresh(srt)
        server.sync(repo)
        assert updater(repo, server, tmp_path / "device", keys).check(OLD) is not None


def test_mix_and_match_targets_from_another_snapshot_are_refused(srt, repo, keys, tmp_path):
    publish(srt, keys, tmp_path, "1.1.0", 2)
    with serving(repo, tmp_path / "www") as server:
        meta = server.root / "metadata"
        # The snapshot names targets version 3; the attacker serves version 2 under that
        # name (an older, validly signed file from another repository state).
        shutil.copy(meta / "2.targets.json", meta / "3.targets.json")
        with pytest.raises(TufRollbackError):
            updater(repo, server, tmp_path / "device", keys).check(OLD)


def test_mix_and_match_a_snapshot_other_than_the_timestamp_names_is_refused(srt, repo, keys,
                                                                            tmp_path):
    publish(srt, keys, tmp_path, "1.1.0", 2)
    with serving(repo, tmp_path / "www") as server:
        meta = server.root / "metadata"
        shutil.copy(meta / "2.snapshot.json", meta / "3.snapshot.json")
        # Refused on its length (the timestamp names it), its hash, or its version: which
        # check fires first depends on the two files' sizes.
        with pytest.raises((TufRollbackError, OtaTargetError, OtaEndlessDataError)):
            updater(repo, server, tmp_path / "device", keys).check(OLD)


def test_endless_data_metadata_is_cut_off_at_its_limit(repo, keys, tmp_path):
    with serving(repo, tmp_path / "www") as server:
        server.serve_endless("/timestamp.json")
        with pytest.raises(OtaEndlessDataError):
            updater(repo, server, tmp_path / "device", keys).check(OLD)


def test_endless_data_an_image_is_cut_off_at_its_signed_length(repo, keys, tmp_path):
    with serving(repo, tmp_path / "www") as server:
        client = updater(repo, server, tmp_path / "device", keys)
        update = client.check(OLD)
        assert update is not None
        server.serve_endless(".1.0.0-0.bin")
        with pytest.raises(OtaEndlessDataError):
            client.download(update)


def test_a_root_signed_below_threshold_is_refused_by_devices(srt, repo, keys, tmp_path):
    # Root needs 2 of 3 keys. A thief holding one root key stages (and serves) a root
    # that hands the online roles to keys of their own.
    with pytest.raises(TufThresholdError):
        ota_repo.import_metadata(srt, _rotated_by_one(srt, keys, repo))
    with serving(repo, tmp_path / "www") as server:
        (server.root / "metadata" / "2.root.json").write_bytes(
            (repo / "staged" / "2.root.json").read_bytes())
        with pytest.raises(TufThresholdError):
            updater(repo, server, tmp_path / "device", keys).check(OLD)


def _rotated_by_one(srt, keys: Keys, repo: Path) -> bytes:
    outcome = ota_repo.rotate_keys(srt, root_signers=keys.root[:1], online=True)
    assert outcome.staged and "1 of 2" in outcome.staged[0][1]
    return (repo / "staged" / "2.root.json").read_bytes()


def test_devices_follow_a_root_rotation_of_the_online_keys(srt, repo, keys, tmp_path):
    outcome = ota_repo.rotate_keys(srt, root_signers=keys.root[:2], online=True)
    assert "2.root.json" in outcome.published and "timestamp.json" in outcome.published
    publish(srt, keys, tmp_path, "1.1.0", 2)
    with serving(repo, tmp_path / "www") as server:
        update = updater(repo, server, tmp_path / "device", keys).check(OLD)
        assert update is not None and str(update.release.version) == "1.1.0+0"
        assert "/metadata/2.root.json" in server.requests
