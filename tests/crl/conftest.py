"""Fixtures for the CRL tests: the runtime's clock starts half an hour in the past, so a
test can move it on and still hand openssl CRLs whose thisUpdate has passed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import FakeClock

CRL_URL = "http://pki.example.com/crl"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC) - timedelta(minutes=30))
