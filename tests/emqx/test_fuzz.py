"""No input makes the EMQX hooks answer anything but HTTP 200 with an explicit result."""

from __future__ import annotations

import contextlib
import json

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.broker.emqx import parse_authn_request, parse_authz_request
from iotsec.errors import EmqxRequestError

FIELDS = ["clientid", "username", "peerhost", "action", "topic", "qos", "retain",
          "cert_common_name", "cert_subject", "cert_pem"]
VALUES = st.one_of(st.text(max_size=40), st.sampled_from(
    ["dev-1", "publish", "subscribe", "#", "devices/dev-1/t", "$SYS/x", "a/#/b", "+", "",
     "undefined", "1", "true", "MIIB"]), st.integers(), st.none(), st.booleans(),
    st.lists(st.text(max_size=5), max_size=3), st.floats(allow_nan=True))
BODIES = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=8).map(
        lambda d: json.dumps(d).encode()),
    st.recursive(st.none() | st.integers() | st.text(max_size=5),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=5), inner, max_size=3)).map(
        lambda v: json.dumps(v).encode()))


@settings(max_examples=400, deadline=None)
@given(BODIES)
def test_parsers_raise_only_their_own_error(body: bytes) -> None:
    for parse in (parse_authn_request, parse_authz_request):
        with contextlib.suppress(EmqxRequestError):
            parse(body)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=BODIES)
def test_hooks_always_answer_200_with_a_result(emqx: TestClient, body: bytes) -> None:
    for path in ("/v1/emqx/authn", "/v1/emqx/authz"):
        resp = emqx.post(path, content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 200, (path, body, resp.text)
        assert resp.json()["result"] in ("allow", "deny")
        if path.endswith("authz"):
            assert resp.json() == {"result": "deny"}  # no device is enrolled here
