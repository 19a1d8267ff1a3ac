"""``iotsec keys`` end to end through iotsec's real error mapping, with file keys and with
a SoftHSM2 token configured through the environment (the PIN never on a command line)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from iotsec.cli.keys import app as keys_app
from iotsec.config import Settings
from tests.cli.support import Result, assert_refused, mount, use_home
from tests.custody_hsm.conftest import Hsm

Run = Callable[..., Result]


@pytest.fixture
def keys_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_home(monkeypatch, tmp_path / "home")


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]) -> Run:
    invoke = mount(monkeypatch, capsysbinary, keys=keys_app)
    return lambda *args: invoke("keys", *args)


def _seal_one(home: Path) -> None:
    """A device with an HS256 secret (an envelope under the active KEK)."""
    from iotsec.app.identity import device_tokens, devices
    from iotsec.app.runtime import open_runtime

    rt = open_runtime(Settings(home=home))
    try:
        devices.add_device(rt, devices.NewDevice.parse("d1"))
        device_tokens.create_secret(rt, "d1")
    finally:
        rt.close()


def test_list_report_rotate_with_file_keys(keys_home: Path, run: Run) -> None:
    _seal_one(keys_home)
    listed = run("list", "--json")
    assert listed.code == 0, listed
    purposes = {e["purpose"] for e in json.loads(listed.out)}
    assert purposes == {"ca-root", "ca-issuing", "kek"}
    report = json.loads(run("report", "--json").out)
    [kek] = report["keks"]
    assert (kek["state"], kek["records"]) == ("active", 1)
    rotated = run("rotate", "kek", "--json")
    assert rotated.code == 0, rotated
    data = json.loads(rotated.out)
    assert data["complete"] and data["rewrapped"] == 1 and data["retired"] == [kek["key_id"]]
    after = {k["key_id"]: (k["state"], k["records"])
             for k in json.loads(run("report", "--json").out)["keks"]}
    assert after == {data["target"]: ("active", 1), kek["key_id"]: ("retired", 0)}
    human = run("report")
    assert human.code == 0 and data["target"] in human.out
    assert_refused(run("retire", data["target"]))
    reinstated = run("reinstate", kek["key_id"])
    assert reinstated.code == 0 and "Reinstated" in reinstated.err
    assert run("retire", kek["key_id"]).code == 0


def test_usage_and_refusals(keys_home: Path, run: Run) -> None:
    refused = run("rotate", "ca")
    assert_refused(refused)
    assert "cannot rotate 'ca'" in refused.err
    assert_refused(run("rotate", "kek", "--keep-old", "--destroy"))
    assert_refused(run("rotate", "kek", "--backend", "cloud"))
    assert run("rotate", "kek", "--batch", "0").code == 2
    assert_refused(run("export-public", "no-such-key"))
    # With no token configured, asking for one says which setting is missing.
    missing = run("rotate", "kek", "--backend", "pkcs11")
    assert_refused(missing)
    assert "IOTSEC_PKCS11_MODULE" in missing.err


def test_generate_and_export_in_the_token(keys_home: Path, run: Run, hsm: Hsm,
                                          monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    for name, value in hsm.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("IOTSEC_KEYSTORE", "pkcs11")
    made = run("generate", "fw-signing", "--type", "ecdsa-p384", "--json")
    assert made.code == 0, made
    assert json.loads(made.out) == {"label": "fw-signing", "purpose": "signing",
                                    "backend": "pkcs11", "type": "ecdsa-p384",
                                    "state": "available", "extractable": False}
    exported = run("export-public", "fw-signing", "-o", "fw.pem")
    assert exported.code == 0, exported
    public = serialization.load_pem_public_key((tmp_path / "fw.pem").read_bytes())
    assert public.key_size == 384  # type: ignore[union-attr]
    listed = {e["label"]: e for e in json.loads(run("list", "--json").out)}
    assert listed["fw-signing"]["backend"] == "pkcs11"
    assert_refused(run("generate", "fw-signing"))
    rotated = json.loads(run("rotate", "kek", "--json").out)
    assert rotated["target"].startswith("hsm:kek-")


def test_wrong_pin_is_one_line_without_the_pin(keys_home: Path, run: Run, hsm: Hsm,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in hsm.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("IOTSEC_KEYSTORE", "pkcs11")
    monkeypatch.setenv("IOTSEC_PKCS11_PIN", "9999-wrong-pin")
    result = run("generate", "k1")
    assert_refused(result)
    assert "refused the PIN" in result.err and "9999-wrong-pin" not in result.err + result.out
    monkeypatch.setenv("IOTSEC_PKCS11_PIN", hsm.pin)
    monkeypatch.setenv("IOTSEC_PKCS11_TOKEN", "absent-token")
    absent = run("list")
    assert_refused(absent)
    assert "absent-token" in absent.err
    monkeypatch.setenv("IOTSEC_PKCS11_MODULE", "/nonexistent/libpkcs11.so")
    module = run("list")
    assert_refused(module)
    assert "/nonexistent/libpkcs11.so does not exist" in module.err
