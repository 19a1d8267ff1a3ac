"""Helpers shared by the REST API tests, and for the tests of its fast paths: the same
runtime served with and without them, and a token of each scope."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.app.access.api_tokens import Scope, issue_token
from iotsec.app.runtime import Runtime

PROBLEM_KEYS = {"type", "title", "status", "detail"}


def assert_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status``; returns the body."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status
    assert body["type"].startswith("urn:iotsec:problem:")
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def snapshot(client: TestClient) -> tuple[Any, Any]:
    """Everything the API shows of the store: all devices and all certificates."""
    devices = client.get("/v1/devices", params={"limit": 10_000})
    certificates = client.get("/v1/certificates", params={"limit": 100_000})
    assert devices.status_code == 200, devices.text
    assert certificates.status_code == 200, certificates.text
    return devices.json(), certificates.json()


def add_device(client: TestClient, device_id: str, **extra: Any) -> dict[str, Any]:
    resp = client.post("/v1/devices", json={"id": device_id, **extra})
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def issue(client: TestClient, device_id: str, csr: bytes, **extra: Any) -> dict[str, Any]:
    resp = client.post(f"/v1/devices/{device_id}/certificates",
                       json={"csr": csr.decode("ascii"), **extra})
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


@contextlib.contextmanager
def fast_and_slow(rt: Runtime) -> Iterator[tuple[TestClient, TestClient]]:
    """Two clients of ``rt``: an app with its fast paths and one without (the failure
    throttle lifted, so that a test may make many refused calls)."""
    rt.settings.auth_failure_limit = 1_000_000
    with TestClient(create_app(rt)) as fast, \
            TestClient(create_app(rt, fast_path=False)) as slow:
        yield fast, slow


def scoped_tokens(rt: Runtime, admin_token: str) -> dict[str, str]:
    """A token of each scope, by the scope's name ("admin" is the one ``init`` made)."""
    out = {"admin": admin_token}
    for scope in (Scope.AUDITOR, Scope.OPERATOR):
        out[scope.value] = issue_token(rt, f"t-{scope.value}", scope, None)[1]
    return out
