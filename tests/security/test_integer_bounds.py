"""Integers beyond what the store holds are refused as invalid input (422), never a 500:
every integer in a path, a query or a body is bounded by a signed 64-bit integer, or a
signed 32-bit one for the ids of rows keyed by a 32-bit column (campaigns)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from iotsec.app.identity import device_tokens, devices
from iotsec.app.runtime import Runtime
from tests.api.support import assert_problem
from tests.tokens.support import claims_for, p256, public_pem, sign

MAX_INT64 = 2**63 - 1
MAX_INT32 = 2**31 - 1
TOO_BIG = (MAX_INT64 + 1, 99999999999999999999, 10**40)
TOO_BIG_ID = (MAX_INT32 + 1, *TOO_BIG)
REPORT = {"status": "installed", "version": "1.0.0"}

Call = Callable[[TestClient, int], Response]
CALLS: list[tuple[str, Call]] = [
    ("campaign", lambda c, n: c.get(f"/v1/ota/campaigns/{n}")),
    ("campaign-devices", lambda c, n: c.get(f"/v1/ota/campaigns/{n}/devices")),
    ("campaign-pause", lambda c, n: c.post(f"/v1/ota/campaigns/{n}/pause", json={})),
    ("campaign-resume", lambda c, n: c.post(f"/v1/ota/campaigns/{n}/resume")),
    ("campaign-abort", lambda c, n: c.post(f"/v1/ota/campaigns/{n}/abort", json={})),
    ("events-before", lambda c, n: c.get("/v1/events", params={"before": n})),
    ("audit-days", lambda c, n: c.get("/v1/audit", params={"ca_days": n})),
    ("audit-days-negative", lambda c, n: c.get("/v1/audit", params={"ca_days": -n - 1})),
    ("issue-days", lambda c, n: c.post("/v1/devices/d1/certificates",
                                       json={"csr": "x", "days": n})),
]


@pytest.mark.parametrize("number", TOO_BIG)
@pytest.mark.parametrize(("name", "call"), CALLS, ids=[n for n, _ in CALLS])
def test_huge_integers_are_refused(raw: TestClient, name: str, call: Call,
                                   number: int) -> None:
    body = assert_problem(call(raw, number), 422)
    assert body["type"] == "urn:iotsec:problem:invalid-request", body


def test_the_largest_accepted_integer_reaches_the_store(raw: TestClient) -> None:
    """At the bound itself the request is valid and reaches the store (on PostgreSQL too,
    whose campaign ids are 32-bit): no such campaign; events before the largest id."""
    assert_problem(raw.get(f"/v1/ota/campaigns/{MAX_INT32}"), 404)
    assert_problem(raw.post(f"/v1/ota/campaigns/{MAX_INT32}/resume"), 404)
    assert_problem(raw.get(f"/v1/ota/campaigns/{MAX_INT32 + 1}/devices"), 422)
    assert raw.get("/v1/events", params={"before": MAX_INT64}).status_code == 200


@pytest.mark.parametrize("number", TOO_BIG_ID)
def test_a_device_report_with_a_huge_campaign_id_is_refused(raw: TestClient, rt: Runtime,
                                                            number: int) -> None:
    devices.add_device(rt, devices.NewDevice.parse("d1", []))
    key = p256()
    kid = device_tokens.register_key(rt, "d1", public_pem(key))
    jwt = sign(key, kid, claims_for("d1", int(rt.now().timestamp())))
    resp = raw.post("/v1/ota/device/report", json={"campaign_id": number, **REPORT},
                    headers={"Authorization": f"Bearer {jwt}"})
    assert assert_problem(resp, 422)["type"] == "urn:iotsec:problem:invalid-request"


def _integers(node: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """Every integer schema under ``node``, with where it is."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if node.get("type") == "integer":
            found.append((where, node))
        for key, value in node.items():
            found += _integers(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _integers(value, f"{where}/{i}")
    return found


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        return {node["$ref"]} if "$ref" in node else set().union(*map(_refs, node.values()))
    if isinstance(node, list):
        return set().union(*map(_refs, node))
    return set()


def test_every_integer_the_api_accepts_is_bounded(api: TestClient) -> None:
    """In the OpenAPI document: every integer parameter, and every integer in a request
    body's schema (followed through its references), has a minimum and a maximum no larger
    than a signed 64-bit integer."""
    spec = api.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    inputs: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            for param in op.get("parameters", []):
                inputs += _integers(param["schema"], f"{method} {path} {param['name']}")
            pending = _refs(op.get("requestBody", {}))
            while pending:
                ref = pending.pop()
                if ref in seen:
                    continue
                seen.add(ref)
                schema = components[ref.rsplit("/", 1)[1]]
                inputs += _integers(schema, ref)
                pending |= _refs(schema)
    assert any("campaign_id" in where for where, _ in inputs)  # the walk found them
    unbounded = [where for where, schema in inputs
                 if ("minimum" not in schema and "exclusiveMinimum" not in schema)
                 or schema.get("maximum", MAX_INT64 + 1) > MAX_INT64]
    assert unbounded == []
