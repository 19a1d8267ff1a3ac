"""Broker checks over a Mosquitto directory rendered by iotsec (both backends): a clean
render passes every check; each deliberate weakness is flagged exactly."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from iotsec.app.audit import run_audit
from iotsec.app.broker import mosquitto as broker_service
from iotsec.app.broker.events import ingest_log
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.pki.crl import current_crl
from iotsec.app.pki.revocation import revoke
from iotsec.audit.brokerconf import parse_crls
from iotsec.audit.model import AuditResult
from iotsec.audit.snapshot import AuditOptions
from iotsec.errors import AuditBrokerDirError
from iotsec.identity.registry import DeviceState
from iotsec.pki.crl import RevocationReason
from tests.audit.conftest import Fleet, found
from tests.broker.support import short_broker_dir

BROKER_RULES = ("audit/broker-anonymous", "audit/broker-plaintext-listener",
                "audit/broker-crl-missing", "audit/broker-crl-stale")


@pytest.fixture
def bdir() -> Iterator[Path]:
    with short_broker_dir("b") as path:
        yield path


def render(fleet: Fleet, d: Path, **options: object) -> None:
    broker_service.render(fleet.rt, d, broker_service.BrokerOptions(
        broker_user=broker_service.default_broker_user(), **options),  # type: ignore[arg-type]
        dry_run=False)


def run(fleet: Fleet, d: Path, **options: object) -> AuditResult:
    parsed = AuditOptions.parse(**options) if options else None  # type: ignore[arg-type]
    return run_audit(fleet.rt, parsed, broker_dir=d, record=False)


def broker_findings(result: AuditResult) -> set[tuple[str, str]]:
    return {k for k in found(result) if k[0] in BROKER_RULES or k[0] == "audit/logging-disabled"}


def edit_conf(d: Path, old: str, new: str) -> None:
    conf = d / "mosquitto.conf"
    text = conf.read_text()
    assert old in text
    conf.write_text(text.replace(old, new))


def test_a_rendered_broker_passes_every_broker_check(fleet: Fleet, bdir: Path):
    render(fleet, bdir)
    result = run(fleet, bdir)
    assert found(result) == set()
    for rule in BROKER_RULES:
        assert result.passed(rule) is True, rule
    assert result.outcomes["audit/broker-crl-stale"].checked == 2  # issuing and root CRLs
    assert result.outcomes["audit/broker-crl-missing"].checked == 1
    assert result.facts["broker_dir"] == str(bdir)


def test_the_brokers_own_crl_with_holds_passes_the_crl_checks(fleet: Fleet, bdir: Path):
    """A disabled device's certificate held on the broker's CRL: its own number sequence
    is not mistaken for a stale copy of the published CRL."""
    render(fleet, bdir)
    device = next(iter(fleet.certs))
    for _ in range(3):  # the published CRL's number moves ahead of the broker's
        current_crl(fleet.rt, force=True)
    change_state(fleet.rt, device, DeviceState.DISABLED)
    render(fleet, bdir)
    crls = parse_crls((bdir / "current" / "crl.pem").read_bytes())
    assert any(c.broker_scope for c in crls)
    assert not any(k[0] in BROKER_RULES for k in found(run(fleet, bdir)))


def test_anonymous_access_is_flagged(fleet: Fleet, bdir: Path):
    render(fleet, bdir)
    edit_conf(bdir, "allow_anonymous false", "allow_anonymous true")
    result = run(fleet, bdir)
    assert broker_findings(result) == {("audit/broker-anonymous", f"broker:{bdir}")}
    assert result.findings_of("audit/broker-anonymous")[0].severity.value == "critical"


def test_plaintext_listeners_are_flagged_low_on_loopback_high_elsewhere(fleet: Fleet,
                                                                        bdir: Path):
    render(fleet, bdir, plain_localhost_port=18830)
    result = run(fleet, bdir)
    assert broker_findings(result) == {
        ("audit/broker-plaintext-listener", f"broker:{bdir}#listener:18830")}
    assert result.findings_of("audit/broker-plaintext-listener")[0].severity.value == "low"
    edit_conf(bdir, "listener 18830 127.0.0.1", "listener 18830 0.0.0.0")
    (finding,) = run(fleet, bdir).findings_of("audit/broker-plaintext-listener")
    assert finding.severity.value == "high" and finding.location.port == 18830


def test_a_missing_or_unreadable_crl_is_flagged(fleet: Fleet, bdir: Path):
    render(fleet, bdir)
    crl_line = next(line for line in (bdir / "mosquitto.conf").read_text().splitlines()
                    if line.startswith("crlfile "))
    edit_conf(bdir, crl_line + "\n", "")
    result = run(fleet, bdir)
    assert broker_findings(result) == {("audit/broker-crl-missing", f"broker:{bdir}#listener:8883")}
    edit_conf(bdir, "require_certificate true", f"{crl_line}\nrequire_certificate true")
    (bdir / "current" / "crl.pem").write_bytes(b"-----BEGIN X509 CRL-----\nAAAA\n"
                                                b"-----END X509 CRL-----\n")
    result = run(fleet, bdir)
    assert broker_findings(result) == {("audit/broker-crl-missing", f"broker:{bdir}#listener:8883")}
    assert result.outcomes["audit/broker-crl-stale"].checked == 0


def test_a_stale_crl_is_flagged_before_and_after_its_next_update(fleet: Fleet, bdir: Path,
                                                                clock):
    render(fleet, bdir)
    # The CRL lives 7 days: 6.5 days on, its nextUpdate is 12 hours away.
    clock.advance(timedelta(days=6, hours=12))
    for d in ("dev-a", "dev-b"):
        fleet.connect(d)
    result = run(fleet, bdir)
    assert broker_findings(result) == {
        ("audit/broker-crl-stale", f"broker:{bdir}#crl:issuing"),
        ("audit/broker-crl-stale", f"broker:{bdir}#crl:root")}
    assert {f.severity.value for f in result.findings_of("audit/broker-crl-stale")} == {"high"}
    assert broker_findings(run(fleet, bdir, crl_hours=6)) == set()
    clock.advance(timedelta(days=1))
    for d in ("dev-a", "dev-b"):
        fleet.connect(d)
    result = run(fleet, bdir)
    assert {f.severity.value for f in result.findings_of("audit/broker-crl-stale")} == {
        "critical"}


def test_a_crl_that_misses_a_revocation_is_flagged_until_the_broker_is_synced(
        fleet: Fleet, bdir: Path, clock):
    render(fleet, bdir)
    clock.advance(timedelta(minutes=1))
    revoke(fleet.rt, fleet.certs["dev-b"].serial, RevocationReason.keyCompromise)
    result = run(fleet, bdir)
    assert broker_findings(result) == {
        ("audit/broker-crl-stale", f"broker:{bdir}#crl:issuing")}
    assert "misses revocations" in result.findings_of("audit/broker-crl-stale")[0].message
    clock.advance(timedelta(minutes=1))
    broker_service.sync(fleet.rt, bdir, dry_run=False)
    assert broker_findings(run(fleet, bdir)) == set()


def test_broker_logging_not_written_or_not_ingested_is_flagged(fleet: Fleet, bdir: Path,
                                                               clock):
    render(fleet, bdir)
    log = bdir / "run" / "mosquitto.log"
    log.write_text("2026-01-01T00:00:00+0000: mosquitto version 2.0.18 running\n")
    result = run(fleet, bdir)
    assert broker_findings(result) == {("audit/logging-disabled", f"broker:{bdir}#ingest")}
    ingest_log(fleet.rt, log, state_file=bdir / "private" / "ingest.json")
    assert broker_findings(run(fleet, bdir)) == set()
    # More log, and the last ingest two days old: flagged again.
    with log.open("a") as fh:
        fh.write("2026-01-01T00:00:01+0000: Opening ipv4 listen socket on port 8883.\n")
    old = (clock.now - timedelta(days=2)).timestamp()
    os.utime(bdir / "private" / "ingest.json", (old, old))
    assert broker_findings(run(fleet, bdir)) == {
        ("audit/logging-disabled", f"broker:{bdir}#ingest")}
    # No log file at all in the configuration.
    conf = (bdir / "mosquitto.conf").read_text()
    log_line = next(x for x in conf.splitlines() if x.startswith("log_dest file"))
    edit_conf(bdir, log_line + "\n", "")
    assert broker_findings(run(fleet, bdir)) == {("audit/logging-disabled", f"broker:{bdir}#log")}


def test_a_directory_that_is_not_a_broker_cannot_be_audited(fleet: Fleet, tmp_path: Path):
    with pytest.raises(AuditBrokerDirError, match="not a rendered broker directory"):
        run(fleet, tmp_path)
    with pytest.raises(AuditBrokerDirError):
        run(fleet, tmp_path / "with space")


def test_the_broker_dir_setting_is_used_when_none_is_given(fleet: Fleet, bdir: Path):
    render(fleet, bdir)
    fleet.rt.settings = fleet.rt.settings.model_copy(update={"broker_dir": bdir})
    result = run_audit(fleet.rt, record=False)
    assert result.passed("audit/broker-anonymous") is True


def test_included_configuration_files_are_audited_too(fleet: Fleet, bdir: Path):
    render(fleet, bdir)
    extra = bdir.parent / "conf.d"
    extra.mkdir()
    (extra / "10-debug.conf").write_text("listener 1999 0.0.0.0\nallow_anonymous true\n")
    (extra / "ignored.txt").write_text("listener 2000\n")
    with (bdir / "mosquitto.conf").open("a") as fh:
        fh.write(f"include_dir {extra}\n")
    result = run(fleet, bdir)
    assert broker_findings(result) == {
        ("audit/broker-anonymous", f"broker:{bdir}"),
        ("audit/broker-plaintext-listener", f"broker:{bdir}#listener:1999")}
    # An include_dir that cannot be read: the broker checks say why they did not run.
    edit_conf(bdir, f"include_dir {extra}", f"include_dir {extra}-missing")
    shutil.rmtree(extra)
    result = run(fleet, bdir)
    assert result.passed("audit/broker-anonymous") is None
    assert "include_dir" in (result.outcomes["audit/broker-anonymous"].skipped or "")
