"""Enrolment state survives a backup and a restore (SQLite and PostgreSQL): templates,
hashed secrets, claim CAs and the claims they enrolled, and a device awaiting approval
(whose 17-character state fits the column everywhere), which the restored home approves
and issues."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from iotsec.app.backup import create_backup
from iotsec.app.enrol import claims, est, secrets, templates
from iotsec.app.restore import restore_backup
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.config import Settings
from iotsec.errors import EnrolmentForbiddenError
from iotsec.identity.enrolment import Template
from tests.backup.conftest import PASSPHRASE, store_rows
from tests.backup.conftest import _cheap_backup_cost as _cheap_backup_cost  # a fixture
from tests.backup.conftest import pg_schema as pg_schema  # a fixture
from tests.conftest import FakeClock
from tests.enrol.services_support import csr, factory
from tests.helpers import make_key

TABLES = ("provisioning_templates", "enrolment_secrets", "claim_cas", "claim_uses",
          "pending_enrolments", "devices")


def test_enrolment_state_round_trips(settings: Settings, rt: Runtime, tmp_path: Path,
                                     database_url: str | None, clock: FakeClock,
                                     pg_schema: Callable[[], str]) -> None:
    templates.add_template(rt, Template.parse("gated", id_from="serial-number",
                                              require_approval=True))
    made = factory(clock())
    claims.add_claim_ca(rt, "acme", made.pem, "gated", allow=frozenset({"HW-1"}))
    secrets.create_secret(rt, device_id=None, template="gated",
                          expires_in=timedelta(hours=1))
    claim = made.claim(hardware_id="HW-1")
    request = csr(make_key())
    assert isinstance(est.enrol(rt, claim, request, label=None, source="192.0.2.1"),
                      est.Pending)
    before = store_rows(settings.store_url)
    create_backup(settings, tmp_path / "home.bak", PASSPHRASE)

    target = Settings(home=tmp_path / "restored",
                      database_url=None if database_url is None else pg_schema())
    restore_backup(target, tmp_path / "home.bak", PASSPHRASE, now=clock())
    after = store_rows(target.store_url)
    for name in TABLES:
        assert after[name] == before[name], name
    again = open_runtime(target, clock=clock)
    try:
        est.approve(again, "HW-1")
        issued = est.enrol(again, claim, request, label=None, source=None)
        assert isinstance(issued, est.Issued) and issued.record.device_id == "HW-1"
        with pytest.raises(EnrolmentForbiddenError, match="already enrolled"):
            est.enrol(again, claim, request, label=None, source=None)
    finally:
        again.close()
