"""Helpers shared by the REST API tests."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.testclient import TestClient

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
