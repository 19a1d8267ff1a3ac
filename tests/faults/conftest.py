"""Fixtures for the fault tests: the embedded SQLite store (the default a crash, a full disk
or a read-only home hits first)."""

from __future__ import annotations

import pytest


@pytest.fixture
def database_url() -> None:
    """The embedded SQLite store only (the shared fixture also runs PostgreSQL)."""
    return None
