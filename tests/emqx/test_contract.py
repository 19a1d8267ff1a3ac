"""The request and response formats, pinned against EMQX 5's documentation and source.

Fixtures quote the documented examples:
- authentication response: EMQX docs, "Access Control > Authentication > Use HTTP
  Service", section "HTTP Request and Response" (example response with ``result``,
  ``is_superuser``, ``expire_at`` and ``acl``);
- ACL rule fields: "Access Control > Authentication > Access Control List", section
  "ACL Format > New Format";
- authorization response: "Access Control > Authorization > Use HTTP Service", section
  "HTTP Request and Response > Response";
- request placeholders: "Authentication > Authentication Placeholders" and
  "Authorization > Use HTTP Service > Request".
EMQX itself parses the authentication body with ``emqx_authn_http:body_to_auth_data``:
``expire_at`` must be an integer of Unix *seconds*, not in the past (and not
milliseconds), or the client is refused.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from iotsec.app.runtime import Runtime
from iotsec.broker.emqx import parse_authn_request, parse_authz_request
from iotsec.broker.emqx_conf import AUTHN_BODY, AUTHZ_BODY
from iotsec.errors import EmqxRequestError
from tests.emqx.conftest import authz
from tests.emqx.emqx_model import check_rule, evaluate

# "Use HTTP Service" (authentication), example response (comments removed).
DOC_AUTHN_RESPONSE = {
    "result": "allow", "is_superuser": False,
    "client_attrs": {"role": "admin", "sn": "10c61f1a1f47"},
    "expire_at": 1654254601,
    "acl": [{"permission": "allow", "action": "subscribe", "topic": "eq t/1/#", "qos": [1]},
            {"permission": "deny", "action": "all", "topic": "t/3"}],
}
# "Access Control List", new format example.
DOC_ACL = [
    {"permission": "allow", "action": "publish", "topic": "t/${clientid}"},
    {"permission": "allow", "action": "subscribe", "topic": "eq t/1/#", "qos": [1]},
    {"permission": "deny", "action": "publish", "topic": "t/2", "retain": True},
    {"permission": "deny", "action": "all", "topic": "t/3"},
]
# "Use HTTP Service" (authorization): the documented response shape.
DOC_AUTHZ_RESULTS = ("allow", "deny", "ignore")
# Placeholders EMQX renders in request templates (authentication and authorization).
DOC_AUTHN_PLACEHOLDERS = {"${clientid}", "${username}", "${password}", "${peerhost}",
                          "${cert_subject}", "${cert_common_name}", "${cert_pem}",
                          "${zone}"}
DOC_AUTHZ_PLACEHOLDERS = {"${clientid}", "${username}", "${peerhost}", "${proto_name}",
                          "${mountpoint}", "${action}", "${topic}", "${qos}", "${retain}",
                          "${zone}"}
# A request as EMQX sends it for the authorization template iotsec renders: every
# placeholder becomes a JSON string.
EMQX_AUTHZ_REQUEST = {"clientid": "dev-1", "username": "dev-1", "peerhost": "10.0.0.7",
                      "action": "publish", "topic": "devices/dev-1/telemetry", "qos": "1",
                      "retain": "false"}


def test_documented_acl_examples_are_what_the_model_accepts() -> None:
    for rule in DOC_AUTHN_RESPONSE["acl"] + DOC_ACL:  # type: ignore[operator]
        check_rule(rule)
    assert evaluate(DOC_ACL, "publish", "t/3") is False
    assert evaluate(DOC_ACL, "subscribe", "t/1/#") is True  # 'eq': the filter itself only
    assert evaluate(DOC_ACL, "subscribe", "t/1/x") is None


def test_rendered_templates_use_documented_placeholders_only() -> None:
    assert {v for _, v in AUTHN_BODY} <= DOC_AUTHN_PLACEHOLDERS
    assert {v for _, v in AUTHZ_BODY} <= DOC_AUTHZ_PLACEHOLDERS
    assert "${password}" not in {v for _, v in AUTHN_BODY}  # devices have none to send


def test_authz_request_as_emqx_sends_it() -> None:
    req = parse_authz_request(json.dumps(EMQX_AUTHZ_REQUEST).encode())
    assert (req.username, req.action, req.topic, req.qos, req.retain) == (
        "dev-1", "publish", "devices/dev-1/telemetry", 1, False)
    # A placeholder without a value is rendered empty (or "undefined"): read as absent.
    sub = dict(EMQX_AUTHZ_REQUEST, action="subscribe", topic="commands/dev-1/#",
               retain="undefined", qos="")
    req = parse_authz_request(json.dumps(sub).encode())
    assert (req.action, req.retain, req.qos) == ("subscribe", None, None)


@pytest.mark.parametrize("body", [
    b"", b"[]", b"null", b"{", b'{"username": ""}', b'{"username": 5.5}',
    b'{"username": "d", "clientid": "e"}', b'{"username": "d", "cert_common_name": "e"}',
    b'{"username": "d", "cert_pem": "not base64!"}', b'{"username": ["d"]}',
    b'{"username": "d\\u0000"}', b"{" + b'"username": "d", "x": "' + b"a" * 20_000 + b'"}',
])
def test_malformed_authn_requests_raise(body: bytes) -> None:
    with pytest.raises(EmqxRequestError):
        parse_authn_request(body)


@pytest.mark.parametrize("change", [
    {"action": "all"}, {"action": "PUBLISH"}, {"action": ""}, {"topic": ""},
    {"topic": "a/#"}, {"topic": "a/+/b"}, {"topic": "a\u0000b"}, {"qos": "3"},
    {"retain": "maybe"}, {"username": ""},
])
def test_malformed_authz_requests_raise(change: dict[str, str]) -> None:
    with pytest.raises(EmqxRequestError):
        parse_authz_request(json.dumps(dict(EMQX_AUTHZ_REQUEST, **change)).encode())


def test_authn_response_has_the_documented_shape(rt: Runtime, emqx: TestClient,
                                                 enroll) -> None:  # type: ignore[no-untyped-def]
    dev = enroll("dev-1")
    resp = emqx.post("/v1/emqx/authn", json=dev.authn_body())
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) <= set(DOC_AUTHN_RESPONSE)
    assert body["result"] == "allow" and body["is_superuser"] is False
    # emqx_authn_http:expire_sec/1: integer seconds, in the future, not milliseconds.
    assert isinstance(body["expire_at"], int)
    now = int(rt.now().timestamp())
    assert now < body["expire_at"] < (now * 1000) // 2
    for rule in body["acl"]:
        check_rule(rule)
    denied = emqx.post("/v1/emqx/authn", json=dev.authn_body(username="dev-2",
                                                              clientid="dev-2",
                                                              cert_common_name="dev-2"))
    assert denied.status_code == 200 and denied.json()["result"] == "deny"


def test_authz_response_has_the_documented_shape(emqx: TestClient, enroll) -> None:  # type: ignore[no-untyped-def]
    enroll("dev-1")
    assert authz(emqx, "dev-1", "publish", "devices/dev-1/t") in DOC_AUTHZ_RESULTS
    # Never "ignore": EMQX would fall through to the next authorizer.
    assert authz(emqx, "nobody", "publish", "devices/nobody/t") == "deny"
