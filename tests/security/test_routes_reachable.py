"""Every route in the OpenAPI document is reachable: the request for it is routed to it
(not swallowed by another route with a catch-all segment), and answers without a routing
404/405, the old catch-all's "unknown device action", or a server error."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from iotsec.api.app import create_app
from iotsec.app.access.api_tokens import Scope as TokenScope
from iotsec.app.access.api_tokens import issue_token
from iotsec.app.identity import device_tokens, devices
from iotsec.app.runtime import Runtime
from tests.tokens.support import claims_for, p256, public_pem, sign

#: Path parameter values that name things that exist (a device, a role, a framework, the
#: repository's first root metadata); the others are syntactically valid.
PATH_VALUES = {"device_id": "d1", "name": "device", "framework": "etsi-en-303-645",
               "campaign_id": "1", "serial": "01", "path": "thermo/firmware.bin"}
TUF_METADATA = "/v1/ota/tuf/metadata/{name}"


def minimal(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """The smallest instance of a JSON schema that its constraints allow (required
    properties only, shortest strings, smallest numbers, fewest items)."""
    if "$ref" in schema:
        return minimal(components[schema["$ref"].rsplit("/", 1)[1]], components)
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return minimal(options[0], components)
    kind = schema.get("type")
    if kind == "object":
        return {name: minimal(schema["properties"][name], components)
                for name in schema.get("required", [])}
    if kind == "array":
        return [minimal(schema.get("items", {}), components)
                for _ in range(schema.get("minItems", 0))]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        return low if kind == "integer" else float(low)
    if kind == "boolean":
        return False
    return "x" * max(1, schema.get("minLength", 1))


class Routed:
    """The application, noting the path template of the route each request went to (the
    router records the route it picked in the request's scope)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.last: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.last = None
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            self.last = route.path_format if isinstance(route, APIRoute) else None


@pytest.fixture
def routed(rt: Runtime) -> Routed:
    rt.settings.auth_failure_limit = 1_000_000  # device routes refuse the admin token
    devices.add_device(rt, devices.NewDevice.parse("d1", []))
    # Without the fast paths, which answer their two routes before the router sees them.
    return Routed(create_app(rt, fast_path=False))


@pytest.fixture
def client(routed: Routed, token: str) -> Iterator[TestClient]:
    with TestClient(routed, raise_server_exceptions=False,
                    headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def test_every_route_answers(routed: Routed, client: TestClient, rt: Runtime) -> None:
    spec = client.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    _, spare = issue_token(rt, "spare", TokenScope.AUDITOR, None)
    values = {**PATH_VALUES, "token_id": spare.split("_")[1]}
    key = p256()
    kid = device_tokens.register_key(rt, "d1", public_pem(key))
    problems: list[str] = []
    operations = 0
    for template, methods in spec["paths"].items():
        for method, op in methods.items():
            operations += 1
            path = template.format_map(defaultdict(lambda: "x", values))
            if template == TUF_METADATA:
                path = template.format(name="1.root.json")
            where = f"{method.upper()} {template}"
            headers = {}
            if op.get("x-required-scope") == "device":
                jwt = sign(key, kid, claims_for("d1", int(rt.now().timestamp())))
                headers["Authorization"] = f"Bearer {jwt}"
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            resp = client.request(method, path, headers=headers,
                                  json=minimal(body["schema"], components) if body else None)
            if routed.last != template:
                problems.append(f"{where}: routed to {routed.last}")
            answer = resp.json() if "json" in resp.headers.get("content-type", "") else {}
            if resp.status_code >= 500:
                problems.append(f"{where}: {resp.status_code} {resp.text[:200]}")
            elif resp.status_code in (404, 405) and isinstance(answer, dict) \
                    and answer.get("type") == "urn:iotsec:problem:http":
                problems.append(f"{where}: the framework's {resp.status_code}")
            elif "unknown device action" in resp.text:
                problems.append(f"{where}: {resp.text[:200]}")
    assert operations >= 50  # the whole document was walked
    assert problems == []


@pytest.mark.parametrize("sub", ["roles", "keys"])
def test_device_roles_and_keys_reach_their_routes(client: TestClient, sub: str) -> None:
    """The two routes the catch-all ``/devices/{id}/{action}`` used to swallow."""
    body = {"roles": ["device"]} if sub == "roles" else {
        "public_key_pem": public_pem(p256()).decode("ascii")}
    resp = client.post(f"/v1/devices/d1/{sub}", json=body)
    assert resp.status_code in (200, 201), resp.text
    if sub == "roles":
        assert resp.json() == {"name": "d1", "roles": ["device"]}
    else:
        assert [k["kid"] for k in client.get("/v1/devices/d1/keys").json()] == \
            [resp.json()["kid"]]


def test_a_method_not_allowed_names_the_allowed_ones(client: TestClient) -> None:
    """The problem response keeps the framework's headers: a 405 carries ``Allow``."""
    resp = client.request("PATCH", "/v1/ota/campaigns/tick")
    assert resp.status_code == 405, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.headers["allow"] == "POST"
