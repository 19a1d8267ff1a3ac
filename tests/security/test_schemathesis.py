"""Schemathesis against the API in-process: every operation of the OpenAPI document, with
the admin token, through the examples, coverage and fuzzing phases; no server error, and
no failure of the checks that apply to this API.

Checks left out, and why: ``positive_data_acceptance`` (schema-valid requests for things
that do not exist are rightly 404, and the services check more than the schema says), and
the response conformance checks (``status_code_conformance``,
``content_type_conformance``, ``response_schema_conformance``,
``response_headers_conformance``), because the document does not declare the problem
responses (RFC 9457) that every route may give. ``allow_header_conformance`` is left out
because the framework's 405 lists the methods of the first route on the path only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis import engine
from schemathesis.engine import events

from iotsec.api.app import create_app
from iotsec.app.identity import devices
from iotsec.app.runtime import Runtime

CHECKS = ("not_a_server_error", "negative_data_rejection", "missing_required_header",
          "unsupported_method", "use_after_free", "ensure_resource_availability",
          "ignored_auth")
MAX_EXAMPLES = 5
#: The run stops here, whatever it has left: the suite must stay fast on a busy machine.
BUDGET_SECONDS = 45


@pytest.fixture
def app(rt: Runtime) -> FastAPI:
    # Many requests are refused (device routes, the broker's hooks): lift the throttle.
    rt.settings.auth_failure_limit = 1_000_000
    devices.add_device(rt, devices.NewDevice.parse("d1", []))
    return create_app(rt)


def _config(token: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "headers": {"Authorization": f"Bearer {token}"},
        "generation": {"max-examples": MAX_EXAMPLES, "mode": "all", "deterministic": True,
                       "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS},
                   # The body limit answers 413 before the schema is looked at.
                   "negative_data_rejection": {"enabled": True, "expected-statuses": [
                       400, 401, 403, 404, 405, 409, 413, 415, 422, 429]}},
        "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True},
                   "fuzzing": {"enabled": True}, "stateful": {"enabled": False}},
        "operations": [{
            # GET /v1/ota/campaigns/tick is the campaign route with an id that is not a
            # number (422), not a method missing from the tick route (405).
            "include-path": "/v1/ota/campaigns/tick",
            "checks": {"unsupported_method": {"enabled": False}}}],
        "cache": {"enabled": False},
        "continue-on-failure": True,
        "workers": 1,
    })


def _run(stream: engine.EventStream, deadline: float) -> Iterator[events.EngineEvent]:
    for event in stream:
        yield event
        if time.monotonic() > deadline:
            stream.stop()


def test_schemathesis_finds_no_failure(app: FastAPI, token: str,
                                       hypothesis_home: Path) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=_config(token))
    operations = {op.ok().label for op in schema.get_all_operations()}
    tested: set[str] = set()
    failures: list[str] = []
    server_errors: list[str] = []
    requests = 0
    stream = engine.from_schema(schema).execute()
    for event in _run(stream, time.monotonic() + BUDGET_SECONDS):
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            tested.add(recorder.label)
            requests += len(recorder.interactions)
            for interaction in recorder.interactions.values():
                if interaction.response is not None and interaction.response.status_code >= 500:
                    server_errors.append(f"{recorder.label}: {interaction.response.status_code}")
            failures += [f"{recorder.label}: {node.name}: {node.failure_info.failure}"
                         for nodes in recorder.checks.values() for node in nodes
                         if node.failure_info is not None]
        elif isinstance(event, events.NonFatalError | events.FatalError):
            failures.append(f"schemathesis error: {event}")
    assert server_errors == []
    assert failures == []
    assert tested == operations, sorted(operations - tested)
    assert requests > 10 * len(operations)
