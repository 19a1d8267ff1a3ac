"""A validated sync (the dry run of a candidate generation on a Unix socket) leaves no
socket file behind in ``DIR/run``: each sync used to leave its check sockets there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from iotsec.app.broker import mosquitto as service
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import init_home
from iotsec.config import Settings
from tests.broker.support import short_broker_dir
from tests.services import require_tool


@pytest.fixture
def brt(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(home=tmp_path / "home")
    init_home(settings, store_passphrase=True)
    runtime = open_runtime(settings)
    yield runtime
    runtime.close()


def test_render_and_sync_leave_no_check_sockets(brt: Runtime) -> None:
    mosquitto = require_tool("mosquitto", "Debian package 'mosquitto'")
    options = service.BrokerOptions(broker_user=service.default_broker_user(),
                                    mosquitto=mosquitto)
    with short_broker_dir("sock") as broker_dir:
        assert service.render(brt, broker_dir, options, dry_run=True).dry_run
        for _ in range(2):
            assert service.sync(brt, broker_dir, dry_run=True).dry_run
        left = sorted(p.name for p in (broker_dir / "run").iterdir()
                      if p.name.startswith("check-"))
        assert left == []
