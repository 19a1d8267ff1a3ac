"""The enrolment tests' shared server: a real ``iotsec serve`` with its EST listener.

``est_server`` (one per test module) is :class:`tests.security.serving.Served` over a fresh
home: ``home`` and ``env`` (the environment that selects it), ``api_url`` (HTTPS),
``est_url`` (the EST listener's origin, always HTTPS; operations under
``/.well-known/est/``), ``chain`` (``iotsec ca chain``, what clients trust), ``token`` (the
admin API token), ``iotsec(*args)`` (the installed command on that home), ``pid`` and
``log``. It is stopped by its pid at the end of the module. A test that needs a server of
its own (other settings, other options) uses :func:`tests.security.serving.served` with
``est=True``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.security.serving import Served, served


@pytest.fixture(scope="module")
def est_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(tmp_path_factory.mktemp("est-server"), est=True) as server:
        yield server
