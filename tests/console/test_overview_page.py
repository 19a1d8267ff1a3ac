"""The console's overview page (SQLite and PostgreSQL) never waits for the fleet's figures:
the first view says they are being computed and asks again; the CRL card is read for each
view."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from iotsec.app.console import overview as overview_module
from iotsec.app.runtime import Runtime
from tests.console.conftest import ORIGIN


def test_the_first_view_asks_again_until_the_figures_are_there(
        web: TestClient, admin_token: str, rt: Runtime, monkeypatch: pytest.MonkeyPatch):
    gate = threading.Event()
    compute = overview_module._compute

    def slow(runtime: Runtime) -> overview_module.Overview:
        assert gate.wait(20)
        return compute(runtime)

    monkeypatch.setattr(overview_module, "_compute", slow)
    assert web.post("/ui/signin", data={"token": admin_token},
                    headers={"origin": ORIGIN}).status_code == 303
    first = web.get("/ui/overview")
    assert first.status_code == 200
    assert "Computing the fleet&#39;s figures" in first.text or \
        "Computing the fleet's figures" in first.text
    assert 'hx-get="/ui/overview" hx-trigger="load delay:1s"' in first.text
    assert 'id="h-crl"' in first.text  # read now, not with the figures
    again = web.get("/ui/overview", headers={"hx-request": "true"})
    assert "<html" not in again.text and "hx-trigger" in again.text  # still computing
    gate.set()
    deadline = time.monotonic() + 20
    while "hx-trigger" in again.text:
        assert time.monotonic() < deadline
        time.sleep(0.05)
        again = web.get("/ui/overview", headers={"hx-request": "true"})
    assert 'id="h-devices"' in again.text and "<html" not in again.text
    assert "Recompute now" in again.text
