"""The credential check's logic: control attempt first, confirmation of a hit, limits."""

from __future__ import annotations

import asyncio

import pytest

from iotsec.netprobe.credentials import check_credentials
from iotsec.scan.credentials import (
    Credential,
    CredentialConfig,
    Outcome,
    default_credentials,
    parse_credentials,
)

LIST = (Credential("root", "xc3511"), Credential("admin", "admin"), Credential("root", ""))


def run(accept: object, **config: object) -> tuple[str, list[Credential]]:
    tried: list[Credential] = []

    async def attempt(cred: Credential) -> Outcome:
        tried.append(cred)
        result = accept(cred)  # type: ignore[operator]
        assert isinstance(result, Outcome)
        return result

    cfg = CredentialConfig(**{"rate": 1000, "credentials": LIST, **config})  # type: ignore[arg-type]
    outcome = asyncio.run(check_credentials(attempt, cfg))
    return outcome.verdict + (f":{outcome.credential.username}" if outcome.credential
                              else ""), tried


def test_default_hit_is_confirmed_with_a_random_password() -> None:
    verdict, tried = run(lambda c: Outcome.ACCEPTED if (c.username, c.password) ==
                         ("admin", "admin") else Outcome.REJECTED)
    assert verdict == "default:admin"
    assert tried[0].username.startswith("iotsec-")  # the control attempt comes first
    assert tried[1:3] == list(LIST[:2])
    assert tried[3].username == "admin" and tried[3].password not in ("admin", "")


def test_a_service_that_accepts_anything_is_not_a_default_password_hit() -> None:
    verdict, tried = run(lambda c: Outcome.ACCEPTED)
    assert verdict == "accepts-any" and len(tried) == 1


def test_a_user_whose_password_is_not_checked() -> None:
    verdict, _ = run(lambda c: Outcome.ACCEPTED if c.username == "root" and
                     not c.username.startswith("iotsec-") else Outcome.REJECTED)
    assert verdict == "any-password:root"


def test_unreadable_answers_are_never_hits() -> None:
    verdict, tried = run(lambda c: Outcome.UNKNOWN)
    assert verdict == "inconclusive" and len(tried) == 1
    answers = iter([Outcome.REJECTED] + [Outcome.UNKNOWN] * 10)
    verdict, tried = run(lambda c: next(answers))
    assert verdict == "inconclusive" and len(tried) == 4


def test_nothing_found() -> None:
    verdict, tried = run(lambda c: Outcome.REJECTED)
    assert verdict == "none" and len(tried) == 1 + len(LIST)


def test_budget_stops_the_list() -> None:
    verdict, tried = run(lambda c: Outcome.REJECTED, rate=2, budget=1)
    assert verdict == "inconclusive" and len(tried) <= 3


def test_built_in_list() -> None:
    pairs = default_credentials()
    assert pairs[0] == Credential("root", "xc3511")  # Mirai's first entry
    assert Credential("admin", "admin") in pairs and Credential("root", "") in pairs
    assert len(pairs) == len(set(pairs)) >= 90
    assert "xc3511" not in repr(pairs[0])


@pytest.mark.parametrize("data", [
    b"nocolon\n", b":pw\n", b"".join(f"u{i}:p\n".encode() for i in range(6000)),
    b"x" * 300_000])
def test_list_parser_refuses(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_credentials(data)


def test_config_limits() -> None:
    with pytest.raises(ValueError):
        CredentialConfig(rate=0)
    with pytest.raises(ValueError):
        CredentialConfig(timeout=0)
