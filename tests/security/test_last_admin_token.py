"""At least one working admin credential always remains: the last unexpired admin token
cannot be revoked (through the service, the CLI or the API), and an API caller revoking
its own token is refused unless another admin token remains (then it is allowed: the
caller is logged out, and the other admin token still administers iotsec)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.app.access import api_tokens as tokens
from iotsec.app.events import list_events
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError
from tests.cli.support import Cli, use_home
from tests.conftest import FakeClock


def _admin_id(rt: Runtime) -> str:
    (admin,) = [t for t in tokens.list_tokens(rt) if t.scope is tokens.Scope.ADMIN]
    return admin.id


def test_the_last_unexpired_admin_token_cannot_be_revoked(rt: Runtime,
                                                          clock: FakeClock) -> None:
    first = _admin_id(rt)
    with pytest.raises(ConflictError) as refused:
        tokens.revoke_token(rt, first)
    assert "last unexpired admin token" in str(refused.value)
    assert "iotsec token create --scope admin" in (refused.value.hint or "")
    assert not tokens.get_token(rt, first).revoked
    # Operator and auditor tokens do not count as admin credentials.
    tokens.issue_token(rt, "ops", tokens.Scope.OPERATOR, None)
    with pytest.raises(ConflictError):
        tokens.revoke_token(rt, first)
    # Nor does an admin token that has expired.
    short, _ = tokens.issue_token(rt, "short", tokens.Scope.ADMIN, timedelta(hours=1))
    clock.advance(timedelta(hours=2))
    with pytest.raises(ConflictError):
        tokens.revoke_token(rt, first)
    tokens.revoke_token(rt, short.id)  # an expired admin token is no working credential
    second, _ = tokens.issue_token(rt, "second", tokens.Scope.ADMIN, timedelta(days=30))
    assert tokens.revoke_token(rt, first).revoked
    with pytest.raises(ConflictError):
        tokens.revoke_token(rt, second.id)


def test_the_api_refuses_revoking_the_callers_last_admin_token(api: TestClient,
                                                               rt: Runtime) -> None:
    own = _admin_id(rt)
    resp = api.delete(f"/v1/tokens/{own}")
    assert resp.status_code == 409, resp.text
    assert "the token this request authenticates with" in resp.json()["detail"]
    assert api.get("/v1/tokens").status_code == 200  # still logged in
    # With another admin token, the caller may revoke its own: it is logged out.
    created = api.post("/v1/tokens", json={"name": "next", "scope": "admin",
                                           "expires_in": "30d"})
    assert created.status_code == 201
    assert api.delete(f"/v1/tokens/{own}").status_code == 200
    assert api.get("/v1/tokens").status_code == 401
    other = TestClient(create_app(rt),
                       headers={"Authorization": f"Bearer {created.json()['token']}"})
    assert other.get("/v1/tokens").status_code == 200
    assert other.delete(f"/v1/tokens/{created.json()['id']}").status_code == 409
    rt.events.flush()
    (event,) = [e for e in list_events(rt.engine, kind="token.revoked")]
    assert event.subject == own and dict(event.detail or {}) == {"own": True}


def test_the_cli_refuses_revoking_the_last_admin_token(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    use_home(monkeypatch, tmp_path / "home", initialise=False)
    cli = Cli(capsys)
    cli.ok("init", "--store-passphrase")
    (admin,) = cli.json("token", "list")
    err = cli.refused("token", "revoke", admin["id"])
    assert "last unexpired admin token" in err and "--scope admin" in err
    cli.ok("token", "create", "next", "--scope", "admin")
    cli.ok("token", "revoke", admin["id"])
