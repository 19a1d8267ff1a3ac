"""Settings read from the environment: names in any case, collections as JSON, constructor
values first, and one clear line for a value that cannot be used."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iotsec.app.broker.emqx import EmqxSettings
from iotsec.config import Settings, environment_values
from iotsec.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower().startswith("iotsec_"):
            monkeypatch.delenv(name)


def test_defaults_without_variables() -> None:
    settings = Settings()
    assert settings.home == Path(".iotsec")
    assert settings.crl_lifetime_hours == 168
    assert settings.device_dns_names == []
    assert settings.model_fields_set == set()


def test_a_variable_is_read_in_any_case_and_marks_the_field_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_CRL_LIFETIME_HOURS", "48")
    monkeypatch.setenv("iotsec_home", "/srv/iotsec")
    settings = Settings()
    assert settings.crl_lifetime_hours == 48
    assert settings.home == Path("/srv/iotsec")
    assert settings.model_fields_set == {"crl_lifetime_hours", "home"}


def test_a_value_given_in_code_wins_over_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_HOME", "/from/env")
    assert Settings(home=Path("/from/code")).home == Path("/from/code")


def test_lists_are_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_DEVICE_DNS_NAMES", '["{device_id}.devices.example.com"]')
    assert Settings().device_dns_names == ["{device_id}.devices.example.com"]
    monkeypatch.setenv("IOTSEC_DEVICE_DNS_NAMES", "not json")
    with pytest.raises(ConfigError) as caught:
        Settings()
    assert str(caught.value) == ("setting IOTSEC_DEVICE_DNS_NAMES is not valid: it must be "
                                 "a JSON list")
    assert caught.value.hint == "correct or unset IOTSEC_DEVICE_DNS_NAMES"


def test_a_value_out_of_range_names_the_variable_and_what_is_allowed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_CRL_LIFETIME_HOURS", "1")
    with pytest.raises(ConfigError) as caught:
        Settings()
    assert str(caught.value) == ("setting IOTSEC_CRL_LIFETIME_HOURS='1' is not valid: it "
                                 "must be a whole number between 2 and 8760")


def test_a_secret_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_ALERT_WEBHOOK_SECRET", "too-short")
    with pytest.raises(ConfigError) as caught:
        Settings()
    assert "too-short" not in str(caught.value)
    assert str(caught.value).startswith("setting IOTSEC_ALERT_WEBHOOK_SECRET is not valid")


def test_a_literal_lists_its_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_KEYSTORE", "hsm")
    with pytest.raises(ConfigError, match="it must be one of 'file' or 'pkcs11'"):
        Settings()


def test_each_model_reads_its_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_EMQX_AUTHN_TTL", "60")
    monkeypatch.setenv("IOTSEC_EMQX_REQUIRE_CERT_PEM", "false")
    monkeypatch.setenv("IOTSEC_UNRELATED", "ignored")
    emqx = EmqxSettings()
    assert (emqx.authn_ttl, emqx.require_cert_pem) == (60, False)
    assert environment_values(Settings, {"IOTSEC_EMQX_AUTHN_TTL": "60"}) == {}
    monkeypatch.setenv("IOTSEC_EMQX_AUTHN_TTL", "5")
    with pytest.raises(ConfigError, match="IOTSEC_EMQX_AUTHN_TTL='5'"):
        EmqxSettings()
