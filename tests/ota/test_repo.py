"""The update repository: offline signing of root and targets, import, online refresh and
key rotation, publishing rules, and the bad-input cases of metadata (expired, replayed,
signed below threshold, malformed)."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.app.ota import repo as ota_repo
from iotsec.errors import (
    ConflictError,
    InputTooLargeError,
    NotFoundError,
    OtaRepositoryError,
    ReleaseDowngradeError,
    TufExpiredError,
    TufMetadataError,
    TufRollbackError,
    TufThresholdError,
    UntrustedKeyError,
)
from iotsec.firmware import releases as rel
from iotsec.firmware import tufmeta
from iotsec.firmware.image_keys import FirmwareKeyType, generate_signer
from tests.ota.conftest import make_repo, publish
from tests.ota.support import image, public_only


def meta(repo: Path, name: str) -> dict:
    return json.loads((repo / "metadata" / name).read_bytes())


def test_offline_root_and_targets_are_staged_signed_elsewhere_and_imported(srt, keys,
                                                                          tmp_path):
    outcome = ota_repo.init_repository(
        srt, root_keys=[public_only(k) for k in keys.root], root_threshold=2,
        targets_keys=[public_only(keys.targets)], targets_threshold=1,
        firmware_keys=[keys.firmware_public])
    assert outcome.published == ()
    assert [n for _, n in outcome.staged] == ["0 of 2 signatures", "waiting for the root"]
    repo = srt.settings.resolved_home / "tuf"
    staged_root = repo / "staged" / "1.root.json"
    staged_targets = repo / "staged" / "1.targets.json"
    # The first root holder signs on the offline machine; one signature is not enough.
    once, role = ota_repo.sign_metadata(staged_root.read_bytes(), [keys.root[0].signer])
    assert role == "root"
    with pytest.raises(TufThresholdError, match="1 of 2"):
        ota_repo.import_metadata(srt, once)
    twice, _ = ota_repo.sign_metadata(staged_root.read_bytes(), [keys.root[2].signer])
    outcome = ota_repo.import_metadata(srt, twice)  # signatures from both imports combine
    assert "1.root.json" in outcome.published and outcome.staged  # targets still unsigned
    signed, _ = ota_repo.sign_metadata(staged_targets.read_bytes(), [keys.targets.signer])
    outcome = ota_repo.import_metadata(srt, signed)
    assert set(outcome.published) >= {"1.targets.json", "1.snapshot.json", "timestamp.json"}
    # Publishing without the targets key stages the new targets version.
    path = tmp_path / "fw.bin"
    path.write_bytes(image(keys.firmware, "1.0.0", 1))
    outcome = ota_repo.publish_image(srt, path, product="thermo", channel="stable",
                                     hardware=["rev-a"])
    assert outcome.staged and not outcome.published
    assert meta(repo, "targets.json")["signed"]["targets"] == {}
    signed, _ = ota_repo.sign_metadata((repo / "staged" / "2.targets.json").read_bytes(),
                                       [keys.targets.signer])
    assert "2.targets.json" in ota_repo.import_metadata(srt, signed).published
    assert "thermo/1.0.0-0.bin" in meta(repo, "targets.json")["signed"]["targets"]


def test_replayed_metadata_is_refused(srt, repo, keys):
    with pytest.raises(TufRollbackError):
        ota_repo.import_metadata(srt, (repo / "metadata" / "2.targets.json").read_bytes())
    with pytest.raises(TufRollbackError):
        ota_repo.import_metadata(srt, (repo / "metadata" / "1.root.json").read_bytes())


def test_expired_metadata_is_refused(srt, keys, tmp_path, clock):
    ota_repo.init_repository(srt, root_keys=keys.root, root_threshold=2,
                             targets_keys=[public_only(keys.targets)], targets_threshold=1,
                             firmware_keys=[keys.firmware_public])
    repo = srt.settings.resolved_home / "tuf"
    # The targets holder signs the staged file only after it has expired (90 days).
    clock.advance(timedelta(days=91))
    signed, _ = ota_repo.sign_metadata((repo / "staged" / "1.targets.json").read_bytes(),
                                       [keys.targets.signer])
    with pytest.raises(TufExpiredError):
        ota_repo.import_metadata(srt, signed)


def test_signed_below_threshold_or_by_other_keys_is_refused(srt, repo, keys, tmp_path):
    md = tufmeta.load((repo / "metadata" / "2.targets.json").read_bytes(), "targets")
    md.signed.version = 3
    md.signatures.clear()
    with pytest.raises(TufThresholdError):  # not staged here, and unsigned
        ota_repo.import_metadata(srt, tufmeta.serialize(md))
    tufmeta.sign(md, [keys.root[0].signer])  # a root key is not a targets key
    with pytest.raises(TufThresholdError):
        ota_repo.import_metadata(srt, tufmeta.serialize(md))


def test_targets_that_name_files_the_repository_lacks_are_refused(srt, repo, keys):
    md = tufmeta.load((repo / "metadata" / "2.targets.json").read_bytes(), "targets")
    md.signed.version = 3
    md.signed.targets["thermo/1.0.0-0.bin"].length += 1
    tufmeta.sign(md, [keys.targets.signer])
    with pytest.raises(TufMetadataError, match="does not hold"):
        ota_repo.import_metadata(srt, tufmeta.serialize(md))


def test_online_roles_are_refreshed_when_half_their_life_is_gone(srt, repo, clock):
    before = meta(repo, "timestamp.json")["signed"]["version"]
    assert ota_repo.refresh(srt) == []
    clock.advance(timedelta(hours=13))
    assert ota_repo.refresh(srt) == ["timestamp.json"]
    assert meta(repo, "timestamp.json")["signed"]["version"] == before + 1
    clock.advance(timedelta(days=4))
    assert ota_repo.refresh(srt) == [f"{meta(repo, 'snapshot.json')['signed']['version']}"
                                     ".snapshot.json", "timestamp.json"]


def test_online_keys_are_in_custody_encrypted_never_in_clear(srt, repo, keys):
    config = json.loads((repo / "config.json").read_bytes())
    keys_dir = srt.settings.keys_dir
    for label in config["online"].values():
        pem = (keys_dir / f"{label}.key.pem").read_bytes()
        assert b"ENCRYPTED PRIVATE KEY" in pem
    for path in repo.rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), path
    old = dict(config["online"])
    ota_repo.rotate_keys(srt, root_signers=keys.root[1:], online=True)
    new = json.loads((repo / "config.json").read_bytes())["online"]
    assert set(new.values()).isdisjoint(old.values())
    root = meta(repo, "root.json")["signed"]
    assert root["version"] == 2
    stamp = meta(repo, "timestamp.json")
    assert set(s["keyid"] for s in stamp["signatures"]) == set(root["roles"]["timestamp"]
                                                               ["keyids"])


def test_publishing_rules(srt, repo, keys, tmp_path):
    with pytest.raises(ReleaseDowngradeError):
        publish(srt, keys, tmp_path, "0.9.0", 1)
    with pytest.raises(ReleaseDowngradeError):  # newer version, lower security counter
        publish(srt, keys, tmp_path, "1.2.0", 0)
    with pytest.raises(ConflictError):  # the channel already serves this version
        publish(srt, keys, tmp_path, "1.0.0", 1, size=100)
    outcome = publish(srt, keys, tmp_path, "0.9.0", 1, force=True)
    assert outcome.release is not None and str(outcome.release.version) == "0.9.0+0"
    # Another channel has its own head.
    publish(srt, keys, tmp_path, "0.8.0", 1, channel="beta")
    stranger = tmp_path / "evil.bin"
    stranger.write_bytes(image(generate_signer(FirmwareKeyType.ED25519), "5.0.0", 9))
    with pytest.raises(UntrustedKeyError):
        ota_repo.publish_image(srt, stranger, product="thermo", channel="stable",
                               hardware=["rev-a"], targets_signers=[keys.targets])
    with pytest.raises(NotFoundError):
        ota_repo.publish_image(srt, tmp_path / "missing.bin", product="thermo",
                               channel="stable", hardware=["rev-a"])
    status = ota_repo.status(srt)
    assert [str(r.version) for r in status.releases] == ["0.8.0+0", "0.9.0+0", "1.0.0+0"]


def test_a_second_init_and_a_missing_repository_are_refused(srt, repo, keys):
    with pytest.raises(ConflictError):
        make_repo(srt, keys)
    (repo / "config.json").unlink()
    with pytest.raises(OtaRepositoryError):
        ota_repo.refresh(srt)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048) | st.builds(lambda d: json.dumps(d).encode(),
                                            st.recursive(st.none() | st.integers() | st.text(
                                                max_size=8), lambda c: st.lists(c, max_size=4)
                                                | st.dictionaries(st.sampled_from(
                                                    ["signed", "_type", "signatures", "version",
                                                     "expires", "targets"]), c, max_size=4),
                                                max_leaves=20)))
def test_metadata_parsing_refuses_garbage_with_its_own_errors(data):
    for role in tufmeta.ROLES:
        with contextlib.suppress(TufMetadataError, InputTooLargeError):
            tufmeta.load(data, role)
    with contextlib.suppress(TufMetadataError, InputTooLargeError):
        tufmeta.role_of(data)


def test_metadata_over_its_size_limit_is_refused_before_parsing():
    with pytest.raises(InputTooLargeError):
        tufmeta.load(b" " * (tufmeta.MAX_METADATA["timestamp"] + 1), "timestamp")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["product", "version", "security_counter", "hardware",
                                        "channel", "target", "image_hash", "signed_by",
                                        "published_at"]),
                       st.none() | st.integers() | st.text(max_size=20)
                       | st.lists(st.text(max_size=5), max_size=3), max_size=9))
def test_release_metadata_parsing_refuses_garbage(custom):
    with pytest.raises(TufMetadataError):
        rel.Release.from_custom({"iotsec": custom})
