"""``iotsec broker mosquitto ...`` mounted the way cli/main.py mounts it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from cryptography import x509
from typer.testing import CliRunner

from iotsec.app.pki.revocation import revoke
from iotsec.app.runtime import Runtime
from iotsec.broker.mosquitto import Layout
from iotsec.cli import broker
from iotsec.errors import BrokerConfigError, BrokerProcessError, NotFoundError
from tests.broker.support import enroll, running

root = typer.Typer()
root.add_typer(broker.app, name="broker")


@root.callback()
def _root() -> None:
    """iotsec"""


def run(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(root, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_render_sync_and_ingest(brt: Runtime, broker_dir: Path, port: int, mosquitto: str,
                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_HOME", str(brt.settings.home))
    victim = enroll(brt, "hal", tmp_path / "creds")
    rendered = run("broker", "mosquitto", "render", "-o", str(broker_dir), "--port", str(port),
                   "--dns", "mqtt.example.com", "--json")
    assert rendered["generation"] == 1 and rendered["dry_run"] is True
    layout = Layout.parse(broker_dir)
    server = x509.load_pem_x509_certificates((layout.current / "server.pem").read_bytes())[0]
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mqtt.example.com" in san.get_values_for_type(x509.DNSName)
    assert server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH])
    with running(mosquitto, layout):
        assert run("broker", "mosquitto", "sync", str(broker_dir), "--if-needed",
                   "--json") == {"directory": str(broker_dir), "changed": False}
        revoke(brt, victim.serial)
        # No --pid: the broker's own pid file in DIR/run is used.
        synced = run("broker", "mosquitto", "sync", str(broker_dir), "--json")
        assert synced["reloaded"] is True and synced["kicked"] == ["hal"]
        ingested = run("broker", "mosquitto", "ingest-log", str(broker_dir), "--json")
        assert ingested["lines"] > 0
    assert os.stat(layout.private).st_mode & 0o777 == 0o700
    assert os.stat(layout.current / "server.key").st_mode & 0o777 == 0o640


def test_refusals(brt: Runtime, broker_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_HOME", str(brt.settings.home))
    runner = CliRunner()
    with pytest.raises(BrokerConfigError, match="not a rendered broker directory"):
        runner.invoke(root, ["broker", "mosquitto", "sync", str(broker_dir)],
                      catch_exceptions=False)
    run("broker", "mosquitto", "render", "-o", str(broker_dir), "--no-dry-run", "--json")
    # The log file itself is accepted in place of the directory (as the README shows); a
    # path that is neither is refused.
    log = Layout.parse(broker_dir).log_file
    log.write_text("")
    done = runner.invoke(root, ["broker", "mosquitto", "ingest-log", str(log), "--json"],
                         catch_exceptions=False)
    assert done.exit_code == 0, done.output
    with pytest.raises(NotFoundError, match="does not exist"):
        runner.invoke(root, ["broker", "mosquitto", "ingest-log", str(broker_dir / "nothing")],
                      catch_exceptions=False)
    # A pid that is not a mosquitto process is never signalled.
    with pytest.raises(BrokerProcessError, match="not mosquitto"):
        runner.invoke(root, ["broker", "mosquitto", "sync", str(broker_dir), "--pid",
                             str(os.getpid())], catch_exceptions=False)
    with pytest.raises(BrokerConfigError):
        runner.invoke(root, ["broker", "mosquitto", "render", "-o", str(broker_dir),
                             "--bind", "not-an-ip"], catch_exceptions=False)
