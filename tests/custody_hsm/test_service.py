"""The custody use cases with a token: signing keys generated and exported, KEKs held in the
token, a rotation from file KEKs into the token and back, and the settings it needs."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr
from sqlalchemy import select

from iotsec.app.custody import kek_rotation as rotation
from iotsec.app.custody import keys as service
from iotsec.app.identity import device_tokens
from iotsec.app.runtime import Runtime
from iotsec.config import Settings
from iotsec.custody import home
from iotsec.errors import (
    KeyCustodyError,
    NotFoundError,
    Pkcs11ModuleError,
    Pkcs11PinError,
    Pkcs11TokenNotFoundError,
    UnknownKekError,
)
from iotsec.pki.keys import KeyType
from iotsec.protect.records import record_kek_id
from iotsec.store import models as m
from tests.custody_hsm.conftest import Hsm
from tests.custody_hsm.support import (
    add_devices,
    assert_all_open,
    hs256_token,
    new_secret,
    stored,
)


def test_generate_list_and_export_public_in_the_token(hsm_rt: Runtime) -> None:
    entry = service.generate_key(hsm_rt, "firmware-2026", KeyType.ECDSA_P256)
    assert (entry.backend, entry.key_type, entry.extractable) == ("pkcs11", "ecdsa-p256", False)
    pem = service.export_public(hsm_rt, "firmware-2026")
    public = serialization.load_pem_public_key(pem)
    signer = service.hsm_key_store(hsm_rt).load("firmware-2026")
    assert public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo) == \
        signer.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    listed = {e.label: e for e in service.list_keys(hsm_rt)}
    assert listed["firmware-2026"].purpose == "signing"
    assert listed["firmware-2026"].backend == "pkcs11"
    assert {e.purpose for e in listed.values()} >= {"ca-root", "ca-issuing", "signing"}
    with pytest.raises(NotFoundError):
        service.export_public(hsm_rt, "no-such-key")
    # Using a token key is an audit event.
    signer.sign(b"x")
    with hsm_rt.engine.connect() as conn:
        kinds = conn.execute(select(m.events.c.kind, m.events.c.subject)).all()
    assert ("key.generate", "firmware-2026") in kinds and ("key.use", "firmware-2026") in kinds


def test_device_secrets_under_a_token_kek(hsm_rt: Runtime) -> None:
    add_devices(hsm_rt, "d1", "d2")
    made = [new_secret(hsm_rt, "d1")]
    kek_id = record_kek_id(stored(hsm_rt)[made[0].kid][1:])
    assert kek_id.startswith("hsm:kek-")  # IOTSEC_KEYSTORE=pkcs11: the first KEK is in the token
    assert device_tokens.verify(hsm_rt, hs256_token(hsm_rt, made[0])).kid == made[0].kid
    made.append(new_secret(hsm_rt, "d2"))
    result = rotation.rotate_kek(hsm_rt)
    assert result.complete and result.target.startswith("hsm:") and result.rewrapped == 2
    assert result.retired == [kek_id]
    assert_all_open(hsm_rt, made)
    listed = {e.label: e.state for e in service.list_keys(hsm_rt)}
    assert listed[result.target] == "active" and listed[kek_id] == "retired"


def test_rotation_from_file_keys_into_the_token_and_back(
        hsm: Hsm, rt: Runtime, settings: Settings) -> None:
    add_devices(rt, "d1", "d2", "d3")
    made = [new_secret(rt, "d1"), new_secret(rt, "d2"), new_secret(rt, "d3")]
    file_kek = rt.custody.keks().active_id()
    assert file_kek is not None and file_kek.startswith("kek-")
    # The same home, now with the token configured (new keys still default to files).
    from iotsec.app.runtime import open_runtime

    hsm_settings = hsm.settings(settings, keystore="file")
    with_token = open_runtime(hsm_settings, clock=rt.clock)
    try:
        into = rotation.rotate_kek(with_token, backend="pkcs11")
        assert into.complete and into.target.startswith("hsm:kek-")
        assert into.rewrapped == 3
        assert all(record_kek_id(v[1:]).startswith("hsm:") for v in stored(rt).values())
        assert_all_open(with_token, made)
        for s in made:
            device_tokens.verify(with_token, hs256_token(with_token, s))
        # Without the token configured, the records cannot be opened: a clear error.
        fresh = open_runtime(settings, clock=rt.clock)
        try:
            with pytest.raises(UnknownKekError) as info:
                service.open_device_secret(fresh, made[0].kid, "d1",
                                           stored(fresh)[made[0].kid])
            assert "IOTSEC_PKCS11_MODULE" in info.value.hint
        finally:
            fresh.close()
        back = rotation.rotate_kek(with_token, backend="file", destroy=True)
        assert back.complete and back.target.startswith("kek-")
        assert back.retired == [into.target]
        assert with_token.custody.token().objects({}) == []  # the token KEK was destroyed
        assert_all_open(with_token, made)
    finally:
        with_token.custody.close()
        with_token.close()


def test_missing_settings_say_which(settings: Settings) -> None:
    with pytest.raises(Pkcs11ModuleError, match="IOTSEC_PKCS11_MODULE"):
        home.pkcs11_config(settings)
    partial = settings.model_copy(update={"pkcs11_module": "/usr/lib/x.so"})
    with pytest.raises(Pkcs11TokenNotFoundError, match="IOTSEC_PKCS11_TOKEN"):
        home.pkcs11_config(partial)
    no_pin = partial.model_copy(update={"pkcs11_token": "t"})
    with pytest.raises(Pkcs11PinError) as info:
        home.pkcs11_config(no_pin)
    assert "IOTSEC_PKCS11_PIN" in info.value.hint
    config = home.pkcs11_config(no_pin.model_copy(
        update={"pkcs11_pin": SecretStr("1234-secret")}))
    assert "1234-secret" not in repr(config)


def test_wrong_pin_from_the_settings(hsm: Hsm, settings: Settings) -> None:
    wrong = hsm.settings(settings).model_copy(update={"pkcs11_pin": SecretStr("0000wrong")})
    # Opening the store presents no PIN (the login is lazy); the first use of a key does.
    store = home.open_key_store(wrong, create_passphrase=True)
    with pytest.raises(Pkcs11PinError) as info:
        store.generate("ca-key", KeyType.ECDSA_P256)
    assert "0000wrong" not in f"{info.value} {info.value.hint}"
    with pytest.raises(Pkcs11PinError):
        store.load("ca-key")


def test_the_home_remembers_its_keystore_but_never_the_pin(
        hsm: Hsm, settings: Settings, initialised: object) -> None:
    configured = hsm.settings(settings)
    home.remember_keystore(configured)
    recorded = (settings.resolved_home / home.KEYSTORE_FILE).read_text()
    assert hsm.pin not in recorded and hsm.label in recorded
    plain = Settings(home=settings.home, database_url=settings.database_url)
    restored = home.with_remembered_keystore(plain)
    assert (restored.keystore, restored.pkcs11_module, restored.pkcs11_token) == (
        "pkcs11", hsm.module, hsm.label)
    # What the environment sets wins over the record.
    chosen = Settings(home=settings.home, pkcs11_token="other-token")
    assert home.with_remembered_keystore(chosen).pkcs11_token == "other-token"
    (settings.resolved_home / home.KEYSTORE_FILE).write_text("[1, 2]")
    with pytest.raises(KeyCustodyError, match="not a keystore record"):
        home.with_remembered_keystore(plain)
    (settings.resolved_home / home.KEYSTORE_FILE).write_text('{"keystore": "cloud"}')
    with pytest.raises(KeyCustodyError, match="not a valid keystore record"):
        home.with_remembered_keystore(plain)
