"""Fixtures for the firmware tests: one signer per key type (RSA keys are slow to make),
the reference imgtool, and the ``iotsec firmware`` commands mounted on a root app."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iotsec.cli import main as cli_main
from iotsec.firmware.image_keys import FirmwareKeyType, LocalImageSigner, generate_signer
from tests.cli.support import Cli
from tests.firmware.support import PASSPHRASE, firmware_app, imgtool_path

KEY_TYPES = list(FirmwareKeyType)


@pytest.fixture(scope="session")
def signers() -> dict[FirmwareKeyType, LocalImageSigner]:
    return {kind: generate_signer(kind) for kind in FirmwareKeyType}


@pytest.fixture(scope="session")
def other_signers() -> dict[FirmwareKeyType, LocalImageSigner]:
    """A second key of each type: same algorithm, not trusted."""
    return {kind: generate_signer(kind) for kind in FirmwareKeyType}


@pytest.fixture(params=KEY_TYPES, ids=[k.value for k in KEY_TYPES])
def key_type(request: pytest.FixtureRequest) -> FirmwareKeyType:
    kind: FirmwareKeyType = request.param
    return kind


@pytest.fixture
def signer(signers: dict[FirmwareKeyType, LocalImageSigner],
           key_type: FirmwareKeyType) -> LocalImageSigner:
    return signers[key_type]


@pytest.fixture
def ed25519(signers: dict[FirmwareKeyType, LocalImageSigner]) -> LocalImageSigner:
    return signers[FirmwareKeyType.ED25519]


@pytest.fixture
def p256(signers: dict[FirmwareKeyType, LocalImageSigner]) -> LocalImageSigner:
    return signers[FirmwareKeyType.ECDSA_P256]


@pytest.fixture(scope="session")
def imgtool() -> Path:
    return imgtool_path()


@pytest.fixture
def fw_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
           tmp_path: Path) -> Cli:
    """``iotsec firmware ...`` run in-process through the real error mapping of main()."""
    for name in [n for n in os.environ if n.startswith("IOTSEC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("IOTSEC_FIRMWARE_KEY_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(cli_main, "app", firmware_app())
    monkeypatch.chdir(tmp_path)
    return Cli(capsys)
