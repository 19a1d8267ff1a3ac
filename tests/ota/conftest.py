"""Fixtures for the OTA tests: a runtime on SQLite (the repository is files in the home;
campaign tests that exercise the store use ``rt``, on SQLite and PostgreSQL), TUF keys,
an image signing key, and a repository with one published image."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from iotsec.app.ota import repo as ota_repo
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import init_home
from iotsec.config import Settings
from iotsec.firmware.image_keys import (
    FirmwareKeyType,
    LocalImageSigner,
    TrustedKey,
    generate_signer,
)
from tests.conftest import FakeClock
from tests.ota.support import image, tuf_key


@dataclass(frozen=True)
class Keys:
    root: tuple[ota_repo.KeyFile, ...]
    targets: ota_repo.KeyFile
    firmware: LocalImageSigner

    @property
    def firmware_public(self) -> TrustedKey:
        return TrustedKey.of(self.firmware.public_key())


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(root=(tuf_key(), tuf_key(), tuf_key()), targets=tuf_key(),
                firmware=generate_signer(FirmwareKeyType.ED25519))


@pytest.fixture
def srt(tmp_path: Path, clock: FakeClock) -> Iterator[Runtime]:
    """A runtime on SQLite only: for tests of the file repository and the device side."""
    settings = Settings(home=tmp_path / "home")
    init_home(settings, now=clock(), store_passphrase=True)
    runtime = open_runtime(settings, clock=clock)
    yield runtime
    runtime.close()


def make_repo(rt: Runtime, keys: Keys, *, root_threshold: int = 2) -> ota_repo.Outcome:
    return ota_repo.init_repository(
        rt, root_keys=keys.root, root_threshold=root_threshold, targets_keys=[keys.targets],
        targets_threshold=1, firmware_keys=[keys.firmware_public])


def publish(rt: Runtime, keys: Keys, tmp_path: Path, version: str, counter: int | None = None,
            *, channel: str = "stable", product: str = "thermo",
            hardware: tuple[str, ...] = ("rev-a",), force: bool = False,
            size: int = 4096) -> ota_repo.Outcome:
    path = tmp_path / f"{product}-{version}.bin"
    path.write_bytes(image(keys.firmware, version, counter, size=size))
    return ota_repo.publish_image(rt, path, product=product, channel=channel,
                                  hardware=hardware, targets_signers=[keys.targets],
                                  force=force)


@pytest.fixture
def repo(srt: Runtime, keys: Keys, tmp_path: Path) -> Path:
    """A repository (root 2 of 3, targets 1) serving thermo 1.0.0 (counter 1) on stable."""
    outcome = make_repo(srt, keys)
    assert not outcome.staged, outcome
    publish(srt, keys, tmp_path, "1.0.0", 1)
    return srt.settings.resolved_home / "tuf"
