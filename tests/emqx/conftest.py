"""Fixtures for the EMQX hook tests: the app over the ``rt`` runtime (SQLite and
PostgreSQL), a client holding a ``broker`` token, and enrolled devices."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.app.access.api_tokens import Scope, issue_token
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.pki.bundles import issue_with_keygen
from iotsec.app.runtime import Runtime
from iotsec.app.setup import InitResult
from iotsec.errors import ConflictError


@dataclass(frozen=True)
class Enrolled:
    device_id: str
    serial: str
    der: bytes

    @property
    def cert_pem(self) -> str:
        """What EMQX renders for ``${cert_pem}``: the certificate, base64 DER."""
        return base64.b64encode(self.der).decode("ascii")

    def authn_body(self, **extra: str) -> dict[str, str]:
        body = {"clientid": self.device_id, "username": self.device_id,
                "peerhost": "192.0.2.10", "cert_common_name": self.device_id,
                "cert_subject": f"CN={self.device_id}", "cert_pem": self.cert_pem}
        body.update(extra)
        return body


@pytest.fixture
def token(initialised: InitResult) -> str:
    """The admin token ``iotsec init`` made."""
    assert initialised.admin_token is not None
    return initialised.admin_token


@pytest.fixture
def broker_token(rt: Runtime) -> str:
    _, token = issue_token(rt, "emqx-test", Scope.BROKER, None)
    return token


@pytest.fixture
def emqx(rt: Runtime, broker_token: str) -> Iterator[TestClient]:
    rt.settings.auth_failure_limit = 1_000_000
    with TestClient(create_app(rt), headers={"Authorization": f"Bearer {broker_token}"}
                    ) as client:
        yield client


@pytest.fixture
def enroll(rt: Runtime) -> Callable[..., Enrolled]:
    def make(device_id: str, *, roles: tuple[str, ...] | None = None,
             groups: tuple[str, ...] = (), days: int | None = None) -> Enrolled:
        with contextlib.suppress(ConflictError):  # a second certificate for a device
            add_device(rt, NewDevice.parse(device_id, groups=groups, roles=roles))
        bundle = issue_with_keygen(rt, device_id, p12_passphrase=b"not-used-here", days=days)
        return Enrolled(device_id, bundle.certificate.serial, bundle.certificate.der)
    return make


def authz(client: TestClient, device: str, action: str, topic: str, **extra: str) -> str:
    resp = client.post("/v1/emqx/authz", json={"clientid": device, "username": device,
                                              "peerhost": "192.0.2.10", "action": action,
                                              "topic": topic, "qos": "1", "retain": "false",
                                              **extra})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"result"}, body
    result: str = body["result"]
    return result
