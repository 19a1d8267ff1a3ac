"""Property tests: no request body or query makes the API answer 500."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from iotsec.api.app import create_app
from iotsec.app.runtime import Runtime
from tests.api.support import assert_problem

FUZZ = hsettings(max_examples=100, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = (st.none() | st.booleans() | st.integers() | st.text(max_size=40)
           | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                           max_leaves=20)
device_ids = (st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True)
              | st.text(max_size=140))
# Bodies close to the schema reach the service layer; the rest exercise the validator.
near_schema = st.fixed_dictionaries(
    {"id": device_ids},
    optional={"groups": st.lists(device_ids, max_size=4) | json_values,
              "attributes": st.dictionaries(st.text(max_size=12), st.text(max_size=20),
                                            max_size=4) | json_values,
              "extra": json_values})
bodies = near_schema | json_values | st.dictionaries(
    st.sampled_from(["id", "groups", "attributes"]) | st.text(max_size=8), json_values,
    max_size=4)


@pytest.fixture
def raw(rt: Runtime, token: str) -> Iterator[TestClient]:
    """A client that reports server errors as responses (so a 500 can be asserted on)."""
    with TestClient(create_app(rt), raise_server_exceptions=False,
                    headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


@FUZZ
@given(body=bodies)
def test_post_devices_never_500(raw: TestClient, body: object) -> None:
    resp = raw.post("/v1/devices", json=body)
    assert resp.status_code in (201, 409, 422), resp.text
    if resp.status_code == 201:
        assert resp.json()["id"] == body["id"]  # type: ignore[index]
        assert raw.get(f"/v1/devices/{body['id']}").status_code == 200  # type: ignore[index]
    else:
        assert_problem(resp, resp.status_code)


@FUZZ
@given(data=st.binary(max_size=300))
def test_post_devices_with_raw_bytes_never_500(raw: TestClient, data: bytes) -> None:
    resp = raw.post("/v1/devices", content=data, headers={"content-type": "application/json"})
    # 400: bytes that are not UTF-8 JSON at all; 422: JSON that does not fit the schema.
    assert resp.status_code in (201, 400, 409, 422), resp.text
    if resp.status_code != 201:
        assert_problem(resp, resp.status_code)


@FUZZ
@given(csr=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_issue_with_arbitrary_csr_text_never_500(raw: TestClient, csr: str) -> None:
    raw.post("/v1/devices", json={"id": "fuzz-1"})
    resp = raw.post("/v1/devices/fuzz-1/certificates", json={"csr": csr})
    assert resp.status_code in (400, 413, 422), resp.text
    assert_problem(resp, resp.status_code)


@FUZZ
@given(after=st.text(max_size=20).map(lambda t: t.replace("\x00", "")),
       serial=st.text(min_size=1, max_size=50), window=st.text(max_size=16))
def test_query_and_path_text_never_500(raw: TestClient, after: str, serial: str,
                                       window: str) -> None:
    # NUL in ``after`` is left out here: see test_nul_in_after_is_client_error below.
    for resp in (raw.get("/v1/devices", params={"after": after}),
                 raw.get("/v1/certificates", params={"expiring_within": window}),
                 raw.get("/v1/certificates", params={"device": after})):
        assert resp.status_code in (200, 422), (resp.request.url, resp.text)
    resp = raw.get("/v1/certificates/" + quote(serial, safe=""))
    if resp.request.url.path.rstrip("/") == "/v1/certificates":
        # The client normalised the path (e.g. an encoded '/') back to the list route.
        assert resp.status_code == 200, (resp.request.url, resp.text)
        return
    # 405 only for dot segments ('.', '..'), which the client resolves to another path.
    assert resp.status_code in (404, 405, 422), (resp.request.url, resp.text)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_nul_in_after_is_client_error(raw: TestClient) -> None:
    resp = raw.get("/v1/devices", params={"after": "a\x00b"})
    assert_problem(resp, 422)

