"""``iotsec ota ...`` and ``iotsec firmware publish``, mounted as main.py will mount them,
run in-process through the real error mapping: offline keys, a staged root signed with
``ota metadata sign`` and imported, publishing, and a campaign driven from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from iotsec.cli import devices as devices_cli
from iotsec.cli import firmware as firmware_cli
from iotsec.cli import main as cli_main
from iotsec.cli import ota as ota_cli
from iotsec.cli import setup as setup_cli
from tests.cli.support import Cli, use_home

PASSPHRASE = "correct horse battery staple"


def root_app() -> typer.Typer:
    root = typer.Typer(name="iotsec", no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, rich_markup_mode=None)
    root.command("init")(setup_cli.init)
    root.add_typer(devices_cli.app, name="device")
    # The mounting lines of main.py (``firmware publish`` is part of the firmware group):
    root.add_typer(firmware_cli.app, name="firmware")
    root.add_typer(ota_cli.app, name="ota")

    @root.callback()
    def _root() -> None:
        """iotsec."""

    return root


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> Cli:
    use_home(monkeypatch, tmp_path / "home", initialise=False)
    monkeypatch.setenv("IOTSEC_TUF_KEY_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("IOTSEC_FIRMWARE_KEY_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(cli_main, "app", root_app())
    return Cli(capsys)


def test_the_offline_workflow_and_a_campaign_from_the_command_line(cli: Cli, tmp_path: Path):
    cli.ok("init", "--store-passphrase")
    for name in ("root1", "root2", "targets"):
        cli.ok("ota", "key", "generate", "-o", f"offline/{name}.pem", "--public-out",
               f"{name}.pub")
    assert (tmp_path / "offline" / "root1.pem").stat().st_mode & 0o777 == 0o600
    cli.ok("firmware", "keygen", "-t", "ed25519", "-o", "fw.pem", "--public-out", "fw.pub")
    (tmp_path / "app.bin").write_bytes(b"\x11" * 3000)
    for version, counter in (("1.0.0", "1"), ("0.9.0", "1")):
        cli.ok("firmware", "sign", "app.bin", f"app-{version}.img", "--key", "fw.pem",
               "--version", version, "--security-counter", counter, "--pad-header")
    out = cli.json("ota", "repo", "init", "--root-key", "root1.pub", "--root-key", "root2.pub",
                   "--root-threshold", "2", "--targets-key", "offline/targets.pem",
                   "--firmware-key", "fw.pub")
    assert out["published"] == [] and out["staged"][0]["signatures"] == "0 of 2 signatures"
    staged = out["staged"][0]["file"]
    # The offline step: no home needed to sign.
    cli.ok("ota", "metadata", "sign", staged, "-o", "root.signed.json", "--key",
           "offline/root1.pem", "--key", "offline/root2.pem")
    out = cli.json("ota", "metadata", "import", "root.signed.json")
    assert "1.root.json" in out["published"] and "1.targets.json" in out["published"]
    out = cli.json("firmware", "publish", "app-1.0.0.img", "--product", "thermo",
                   "--hardware", "rev-a", "--targets-key", "offline/targets.pem")
    assert out["release"]["version"] == "1.0.0+0" and "2.targets.json" in out["published"]
    out = cli.json("firmware", "publish", "app.bin", "--product", "thermo", "--channel",
                   "beta", "--hardware", "rev-a", "--targets-key", "offline/targets.pem",
                   "--sign-key", "fw.pem", "--version", "1.1.0", "--security-counter", "2")
    assert out["release"]["channel"] == "beta" and out["release"]["security_counter"] == 2
    err = cli.refused("firmware", "publish", "app-0.9.0.img", "--product", "thermo",
                      "--hardware", "rev-a", "--targets-key", "offline/targets.pem")
    assert "older" in err and "--force" in err
    err = cli.refused("ota", "metadata", "import", "root.signed.json")
    assert "root version 1" in err
    status = cli.json("ota", "repo", "status")
    assert [r["version"] for r in status["roles"]] == [1, 3, 3, 3]
    assert cli.json("ota", "repo", "refresh")["written"] == []
    assert [r["target"] for r in cli.json("ota", "release", "list")] == [
        "thermo/1.0.0-0.bin", "thermo/1.1.0-0.bin"]

    for i in range(4):
        cli.ok("device", "add", f"d{i}", "--group", "lab")
    c = cli.json("ota", "campaign", "create", "--name", "first", "--product", "thermo",
                 "--channel", "stable", "--group", "lab", "--waves", "25,100",
                 "--failure-threshold", "10", "--device-timeout", "2h")
    cid = str(c["id"])
    assert c["per_wave"] == [{"pending": 1}, {"waiting": 3}]
    assert cli.json("ota", "campaign", "pause", cid, "--reason", "checking")["state"] == "paused"
    assert "paused" in cli.refused("ota", "campaign", "pause", cid)
    assert cli.json("ota", "campaign", "resume", cid)["state"] == "active"
    assert cli.json("ota", "campaign", "status", cid)["current_wave"] == 1
    assert len(cli.json("ota", "campaign", "devices", cid)) == 4
    assert cli.json("ota", "campaign", "list")[0]["id"] == int(cid)
    cli.json("ota", "campaign", "tick")
    assert "Campaign" in cli.ok("ota", "campaign", "status", cid).out
    assert cli.json("ota", "campaign", "abort", cid)["state"] == "aborted"
    assert "waves" in cli.refused("ota", "campaign", "create", "--name", "x", "--product",
                                  "thermo", "--channel", "stable", "--group", "lab",
                                  "--waves", "50")


def test_publish_signs_with_a_key_in_custody(cli: Cli, tmp_path: Path) -> None:
    """``firmware publish --sign-key-label``: the raw binary is signed by the home's key
    custody (no key file), then verified and published like any other image."""
    cli.ok("init", "--store-passphrase")
    for name in ("root", "targets"):
        cli.ok("ota", "key", "generate", "-o", f"offline/{name}.pem", "--public-out",
               f"{name}.pub")
    cli.ok("firmware", "keygen", "-t", "ecdsa-p256", "--label", "fw-prod", "--public-out",
           "fw-prod.pub")
    out = cli.json("ota", "repo", "init", "--root-key", "root.pub", "--targets-key",
                   "offline/targets.pem", "--firmware-key", "fw-prod.pub")
    cli.ok("ota", "metadata", "sign", out["staged"][0]["file"], "-o", "root.signed.json",
           "--key", "offline/root.pem")
    cli.ok("ota", "metadata", "import", "root.signed.json")
    (tmp_path / "app.bin").write_bytes(b"\x42" * 2048)
    out = cli.json("firmware", "publish", "app.bin", "--product", "thermo", "--hardware",
                   "rev-a", "--targets-key", "offline/targets.pem", "--sign-key-label",
                   "fw-prod", "--version", "2.0.0", "--security-counter", "3")
    assert out["release"]["version"] == "2.0.0+0" and out["release"]["security_counter"] == 3
    both = cli("firmware", "publish", "app.bin", "--product", "thermo", "--hardware",
               "rev-a", "--sign-key-label", "fw-prod", "--sign-key", "x.pem", "--version",
               "2.0.1")
    assert both.code == 2 and "not both" in both.err
    err = cli.refused("firmware", "publish", "app.bin", "--product", "thermo", "--hardware",
                      "rev-a", "--sign-key-label", "no-such-key", "--version", "2.0.1")
    assert "no-such-key" in err
