"""A SoftHSM2 token of its own for each test: a temporary token directory and config
(``SOFTHSM2_CONF``), a token initialised with ``softhsm2-util``, removed afterwards.

SoftHSM2 reads its configuration when the module is initialised, so the module is unloaded
before and after each test (python-pkcs11 keeps one instance per path). Off CI a missing
SoftHSM2 skips these tests with the reason; under CI (``CI=true``) it fails them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pkcs11
import pytest

from iotsec.app.runtime import Runtime, open_runtime
from iotsec.config import Settings
from iotsec.custody.pkcs11_token import Pkcs11Config, Pkcs11Token, connect
from tests.conftest import FakeClock
from tests.services import unavailable

MODULE_CANDIDATES = ("/usr/lib/softhsm/libsofthsm2.so",
                     "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                     "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
                     "/usr/local/lib/softhsm/libsofthsm2.so")


@dataclass(frozen=True)
class Hsm:
    module: Path
    label: str
    pin: str
    so_pin: str
    directory: Path

    def config(self, **over: str) -> Pkcs11Config:
        return Pkcs11Config(module=Path(over.get("module", str(self.module))),
                            token_label=over.get("label", self.label),
                            pin=over.get("pin", self.pin))

    def settings(self, base: Settings, *, keystore: str = "pkcs11") -> Settings:
        from pydantic import SecretStr

        return base.model_copy(update={"keystore": keystore, "pkcs11_module": self.module,
                                       "pkcs11_token": self.label,
                                       "pkcs11_pin": SecretStr(self.pin)})

    def env(self) -> dict[str, str]:
        return {"IOTSEC_PKCS11_MODULE": str(self.module), "IOTSEC_PKCS11_TOKEN": self.label,
                "IOTSEC_PKCS11_PIN": self.pin}


def _missing(reason: str) -> NoReturn:
    unavailable(f"SoftHSM2 is not available: {reason} (Debian package softhsm2)")


@pytest.fixture(scope="session")
def softhsm_module() -> Path:
    configured = os.environ.get("IOTSEC_TEST_PKCS11_MODULE")
    candidates = (configured,) if configured else MODULE_CANDIDATES
    found = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
    if found is None:
        _missing(f"no libsofthsm2.so in {', '.join(c for c in candidates if c)}")
    if shutil.which("softhsm2-util") is None:
        _missing("softhsm2-util is not on PATH")
    assert found is not None
    return found


@pytest.fixture
def hsm(softhsm_module: Path, tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Hsm]:
    """A fresh, initialised token in a private token directory."""
    directory = tmp_path_factory.mktemp("softhsm")
    tokens = directory / "tokens"
    tokens.mkdir(mode=0o700)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    label = f"iotsec-{secrets.token_hex(4)}"
    pin, so_pin = secrets.token_hex(8), secrets.token_hex(8)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label,
                    "--pin", pin, "--so-pin", so_pin],
                   check=True, capture_output=True, env={**os.environ, "SOFTHSM2_CONF": str(conf)})
    pkcs11.unload(str(softhsm_module))  # re-read SOFTHSM2_CONF on the next load
    try:
        yield Hsm(softhsm_module, label, pin, so_pin, directory)
    finally:
        pkcs11.unload(str(softhsm_module))
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def token(hsm: Hsm) -> Iterator[Pkcs11Token]:
    conn = connect(hsm.config())
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def hsm_rt(hsm: Hsm, settings: Settings, initialised: object, clock: FakeClock
           ) -> Iterator[Runtime]:
    """A runtime on an initialised home whose new keys go to the token."""
    runtime = open_runtime(hsm.settings(settings), clock=clock)
    try:
        yield runtime
    finally:
        runtime.custody.close()
        runtime.close()
