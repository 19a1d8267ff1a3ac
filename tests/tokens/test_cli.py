"""``iotsec device-token`` in process, on a home selected through IOTSEC_HOME."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from iotsec.app.identity import devices
from iotsec.app.runtime import open_runtime
from iotsec.cli.device_tokens import app
from iotsec.config import Settings
from iotsec.errors import TokenReplayError
from iotsec.timeutil import ts
from tests.cli.support import use_home
from tests.tokens.support import claims_for, p256, public_pem, sign


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = use_home(monkeypatch, tmp_path / "home")
    rt = open_runtime(Settings(home=home))
    try:
        devices.add_device(rt, devices.NewDevice.parse("d1"))
    finally:
        rt.close()
    return home


def run(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(app, list(args), input=stdin)


def now() -> int:
    from datetime import UTC, datetime

    return ts(datetime.now(UTC))


def test_key_add_list_verify_and_revoke(cli_home: Path, tmp_path: Path) -> None:
    key = p256()
    pem = tmp_path / "d1.pub.pem"
    pem.write_bytes(public_pem(key))
    added = run("key", "add", "d1", "--public-key", str(pem), "--json")
    assert added.exit_code == 0, added.output
    kid = json.loads(added.stdout)["kid"]
    listed = run("key", "list", "d1", "--json")
    assert [k["kid"] for k in json.loads(listed.stdout)] == [kid]
    assert "1 key of d1" in run("key", "list", "d1").stdout

    token = sign(key, kid, claims_for("d1", now()))
    ok = run("verify", token, "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["device_id"] == "d1"

    # Read from stdin; a second use is a replay: exit 1 with the reason.
    fresh = sign(key, kid, claims_for("d1", now()))
    assert "d1" in run("verify", "-", stdin=fresh + "\n").stdout
    replay = run("verify", "-", stdin=fresh)
    assert replay.exit_code == 1
    assert isinstance(replay.exception, TokenReplayError)
    as_json = run("verify", fresh, "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout) == {"valid": False, "error": "device-token-replayed",
                                          "detail": "the token's jti has already been used"}

    assert run("key", "revoke", kid).exit_code == 0
    revoked = run("verify", sign(key, kid, claims_for("d1", now())), "--json")
    assert json.loads(revoked.stdout)["error"] == "device-token-key-revoked"


def test_a_kid_that_begins_with_a_dash_is_revoked_by_its_id(cli_home: Path,
                                                            tmp_path: Path) -> None:
    # One kid in 64 begins with "-"; such a kid must not be mistaken for an option.
    from iotsec.identity.device_tokens import load_public_key

    key = next(k for k in iter(p256, None)
               if load_public_key(public_pem(k)).kid.startswith("-"))
    pem = tmp_path / "dash.pub.pem"
    pem.write_bytes(public_pem(key))
    kid = json.loads(run("key", "add", "d1", "--public-key", str(pem), "--json").stdout)["kid"]
    assert kid.startswith("-")
    revoked = run("key", "revoke", kid, "--json")
    assert revoked.exit_code == 0, revoked.output
    assert json.loads(revoked.stdout)["kid"] == kid
    assert run("key", "revoke", "--", kid).exit_code == 1  # already revoked: a clear error
    assert run("key", "revoke", "--no-such-kid").exit_code == 1


def test_secret_create_rotate_and_verify(cli_home: Path) -> None:
    created = run("secret", "create", "d1", "--json")
    assert created.exit_code == 0, created.output
    first = json.loads(created.stdout)
    assert first["algorithm"] == "HS256"
    assert len(first["secret"]) == 43
    token = sign(first["secret"].encode(), first["kid"], claims_for("d1", now()))
    assert run("verify", token).exit_code == 0

    again = run("secret", "create", "d1")
    assert again.exit_code == 1  # already has one: use rotate

    rotated = run("secret", "rotate", "d1", "--grace", "2h", "--json")
    assert rotated.exit_code == 0, rotated.output
    second = json.loads(rotated.stdout)
    assert second["kid"] != first["kid"]
    assert second["previous_valid_until"]
    for secret in (first, second):
        tok = sign(secret["secret"].encode(), secret["kid"], claims_for("d1", now()))
        assert run("verify", tok).exit_code == 0
    statuses = {k["kid"]: k["status"] for k in json.loads(run("key", "list", "d1",
                                                              "--json").stdout)}
    assert statuses == {first["kid"]: "rotating", second["kid"]: "active"}

    people = run("secret", "rotate", "d1", "--grace", "0s")
    assert people.exit_code == 0
    assert "shown once" in people.stderr
    assert people.stdout.strip()  # the new secret itself, on stdout only


def test_refusals_are_exit_1(cli_home: Path, tmp_path: Path) -> None:
    assert run("verify", "garbage").exit_code == 1
    assert run("key", "add", "ghost", "--public-key", str(tmp_path / "none.pem")).exit_code == 1
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    assert run("key", "add", "d1", "--public-key", str(bad)).exit_code == 1
    assert run("key", "revoke", "nope").exit_code == 1
    assert run("secret", "rotate", "d1", "--grace", "soon").exit_code == 1
    assert run("secret", "rotate", "d1").exit_code == 1  # nothing to rotate yet


def test_expired_token(cli_home: Path, tmp_path: Path) -> None:
    key = p256()
    pem = tmp_path / "k.pem"
    pem.write_bytes(public_pem(key))
    kid = json.loads(run("key", "add", "d1", "--public-key", str(pem), "--json").stdout)["kid"]
    old = now() - int(timedelta(hours=2).total_seconds())
    answer = run("verify", sign(key, kid, claims_for("d1", old)), "--json")
    assert answer.exit_code == 1
    assert json.loads(answer.stdout)["error"] == "device-token-expired"


def test_mounts_under_a_root_app(cli_home: Path) -> None:
    import typer

    root = typer.Typer()
    root.add_typer(app, name="device-token")

    @root.callback()
    def _root() -> None:
        """The root app."""

    answer = CliRunner().invoke(root, ["device-token", "key", "list", "d1", "--json"])
    assert answer.exit_code == 0, answer.output
    assert json.loads(answer.stdout) == []
    assert "verify" in CliRunner().invoke(root, ["device-token", "--help"]).stdout
