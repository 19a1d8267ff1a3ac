"""PKCS#11 custody against a real SoftHSM2 token: keys generated inside and never
extractable, a CA whose keys live in the token (certificate and CRL checked by openssl),
KEKs that wrap data keys inside the token, and one clear error per failure."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkcs11 import Attribute, ObjectClass

from iotsec.custody.base import check_label
from iotsec.custody.pkcs11 import Pkcs11KeyStore
from iotsec.custody.pkcs11_kek import Pkcs11KekStore
from iotsec.custody.pkcs11_token import Pkcs11Token, connect
from iotsec.errors import (
    ConflictError,
    DataKeyUnwrapError,
    KeyCustodyError,
    KeyTypeMismatchError,
    Pkcs11KeyNotFoundError,
    Pkcs11ModuleError,
    Pkcs11PinError,
    Pkcs11TokenNotFoundError,
    RecordAuthenticationError,
    RetiredKekError,
    UnknownKekError,
)
from iotsec.pki.ca import Authority, create_issuing, create_root
from iotsec.pki.crl import RevocationReason, build_crl, encode_entry
from iotsec.pki.keys import KeyType, Signer
from iotsec.protect.records import decrypt_record, encrypt_record, rewrap_record
from tests.custody_hsm.conftest import Hsm
from tests.pki.support import issue_leaf, run_openssl, write_pem

DATA = b"to be signed by a key that never leaves the token"


def _verify(signer: Signer, signature: bytes, data: bytes) -> None:
    public = signer.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        digest = hashes.SHA384() if signer.key_type is KeyType.ECDSA_P384 else hashes.SHA256()
        public.verify(signature, data, ec.ECDSA(digest))


@pytest.mark.parametrize("key_type", list(KeyType), ids=lambda k: k.value)
def test_signing_keys_are_generated_inside_and_never_extractable(
        token: Pkcs11Token, key_type: KeyType) -> None:
    store = Pkcs11KeyStore(token)
    label = f"ca-{key_type.value}"
    assert not store.exists(label)
    signer = store.generate(label, key_type)
    assert store.exists(label)
    assert signer.key_type is key_type
    _verify(signer, signer.sign(DATA), DATA)
    # Loaded again (another store, no cache): the same public key, still signing.
    again = Pkcs11KeyStore(token).load(label)
    assert again.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == \
        signer.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    _verify(again, again.sign(DATA), DATA)
    [private] = token.objects({Attribute.LABEL: label, Attribute.CLASS: ObjectClass.PRIVATE_KEY})
    assert private[Attribute.EXTRACTABLE] is False
    assert private[Attribute.NEVER_EXTRACTABLE] is True
    assert private[Attribute.SENSITIVE] is True
    assert private[Attribute.TOKEN] is True
    [listed] = [k for k in store.list() if k.label == label]
    assert (listed.kind, listed.key_type, listed.extractable) == ("signing", key_type.value,
                                                                  False)
    with pytest.raises(ConflictError):
        store.generate(label, key_type)


def test_ecdsa_signatures_are_der_and_randomised(token: Pkcs11Token) -> None:
    signer = Pkcs11KeyStore(token).generate("ca-der", KeyType.ECDSA_P256)
    first, second = signer.sign(DATA), signer.sign(DATA)
    assert first != second
    assert first[0] == 0x30  # DER SEQUENCE of r and s, not the token's raw r || s
    with pytest.raises(InvalidSignature):
        _verify(signer, first, DATA + b"!")


def test_ca_in_the_token_issues_a_certificate_and_a_crl_openssl_accepts(
        token: Pkcs11Token, openssl: str, tmp_path: Path) -> None:
    store = Pkcs11KeyStore(token)
    now = datetime.now(UTC).replace(microsecond=0)
    root_signer = store.generate("root-hsm", KeyType.ECDSA_P256)
    root = Authority.from_der(create_root(root_signer, now, label="hsm"), root_signer)
    issuing_signer = store.generate("issuing-hsm", KeyType.ECDSA_P384)
    issuing = Authority.from_der(create_issuing(root, issuing_signer, now, label="hsm"),
                                 issuing_signer)
    kept = issue_leaf(issuing, "dev-kept", now)
    revoked = issue_leaf(issuing, "dev-revoked", now)
    root_pem = write_pem(tmp_path / "root.pem", root.der)
    issuing_pem = write_pem(tmp_path / "issuing.pem", issuing.der)

    ok = run_openssl(openssl, "verify", "-x509_strict", "-CAfile", root_pem, "-untrusted",
                     issuing_pem, write_pem(tmp_path / "kept.pem", kept.der))
    assert ok.returncode == 0, ok.stderr

    crl_der = build_crl(issuing, [encode_entry(revoked.serial, now - timedelta(minutes=1),
                                               RevocationReason.keyCompromise)],
                        number=1, this_update=now - timedelta(minutes=1),
                        next_update=now + timedelta(days=1))
    crl = x509.load_der_x509_crl(crl_der)
    crl_pem = tmp_path / "crl.pem"
    crl_pem.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    checked = run_openssl(openssl, "crl", "-in", crl_pem, "-noout", "-CAfile", issuing_pem)
    assert checked.returncode == 0 and "verify OK" in checked.stderr + checked.stdout, checked
    with_crl: list[str | Path] = ["verify", "-x509_strict", "-crl_check", "-CRLfile", crl_pem,
                "-CAfile", root_pem, "-untrusted", issuing_pem]
    good = run_openssl(openssl, *with_crl, write_pem(tmp_path / "kept2.pem", kept.der))
    assert good.returncode == 0, good.stderr
    bad = run_openssl(openssl, *with_crl, write_pem(tmp_path / "revoked.pem", revoked.der))
    assert bad.returncode != 0 and "revoked" in bad.stdout + bad.stderr


def test_kek_wraps_inside_the_token(token: Pkcs11Token) -> None:
    keks = Pkcs11KekStore(token)
    kek = keks.generate()
    assert kek.key_id.startswith("hsm:kek-") and keks.ids() == [kek.key_id]
    [obj] = token.objects({Attribute.LABEL: kek.label})
    assert obj[Attribute.EXTRACTABLE] is False and obj[Attribute.SENSITIVE] is True
    data_key = bytes(range(32))
    wrapped = kek.wrap(data_key, b"table|1|field")
    assert data_key not in wrapped and len(wrapped) == 61
    assert kek.unwrap(wrapped, b"table|1|field") == data_key
    assert Pkcs11KekStore(token).kek(kek.key_id).unwrap(wrapped, b"table|1|field") == data_key
    with pytest.raises(DataKeyUnwrapError):
        kek.unwrap(wrapped, b"table|2|field")
    for index in (1, 20, len(wrapped) - 1):
        bad = bytearray(wrapped)
        bad[index] ^= 1
        with pytest.raises(DataKeyUnwrapError):
            kek.unwrap(bytes(bad), b"table|1|field")
    with pytest.raises(DataKeyUnwrapError, match="malformed"):
        kek.unwrap(wrapped[:-1][:20], b"table|1|field")
    # The token still works after refused unwraps.
    assert kek.unwrap(wrapped, b"table|1|field") == data_key


def test_records_sealed_under_a_token_kek(token: Pkcs11Token, tmp_path: Path) -> None:
    keks = Pkcs11KekStore(token)
    first, second = keks.generate(), keks.generate()
    blob = encrypt_record(b"device secret", first, table="device_secrets", record_id="k|d",
                       field="ciphertext")
    assert decrypt_record(blob, keks, table="device_secrets", record_id="k|d",
                       field="ciphertext") == b"device secret"
    with pytest.raises(RecordAuthenticationError):
        decrypt_record(blob, keks, table="device_secrets", record_id="k|e", field="ciphertext")
    moved = rewrap_record(blob, keks, second, table="device_secrets", record_id="k|d",
                          field="ciphertext")
    assert moved.endswith(blob[-(12 + 13 + 16):])  # the value's ciphertext is untouched
    assert decrypt_record(moved, keks, table="device_secrets", record_id="k|d",
                       field="ciphertext") == b"device secret"


def test_retired_token_kek_stops_unwrapping_until_reinstated(token: Pkcs11Token) -> None:
    keks = Pkcs11KekStore(token)
    kek = keks.generate()
    wrapped = kek.wrap(b"k" * 32, b"x")
    keks.retire(kek.key_id)
    assert keks.ids() == [] and keks.retired_ids() == [kek.key_id]
    fresh = Pkcs11KekStore(token)
    with pytest.raises(RetiredKekError):
        fresh.kek(kek.key_id)
    with pytest.raises(KeyCustodyError):
        kek.unwrap(wrapped, b"x")  # the old handle's label no longer resolves
    fresh.reinstate(kek.key_id)
    assert Pkcs11KekStore(token).kek(kek.key_id).unwrap(wrapped, b"x") == b"k" * 32
    keks.retire(kek.key_id, destroy=True)
    with pytest.raises(UnknownKekError):
        Pkcs11KekStore(token).kek(kek.key_id)
    assert token.objects({Attribute.CLASS: ObjectClass.SECRET_KEY}) == []


# --- one clear error per failure --------------------------------------------------------


def test_wrong_pin_is_refused_without_echoing_it(hsm: Hsm) -> None:
    wrong = "not-the-pin-" + hsm.pin[:4]
    with pytest.raises(Pkcs11PinError) as info:
        connect(hsm.config(pin=wrong))
    text = f"{info.value} {info.value.hint} {info.value!r}"
    assert hsm.label in str(info.value) and wrong not in text and hsm.pin not in text
    # The right PIN still works afterwards.
    connect(hsm.config()).close()


def test_config_repr_hides_the_pin(hsm: Hsm) -> None:
    assert hsm.pin not in repr(hsm.config())
    conn = connect(hsm.config())
    try:
        assert hsm.pin not in repr(conn) and hsm.pin not in repr(Pkcs11KeyStore(conn))
    finally:
        conn.close()


def test_missing_module(hsm: Hsm, tmp_path: Path) -> None:
    with pytest.raises(Pkcs11ModuleError, match="does not exist") as info:
        connect(hsm.config(module=str(tmp_path / "libnothere.so")))
    assert "IOTSEC_PKCS11_MODULE" in info.value.hint
    not_a_library = tmp_path / "libfake.so"
    not_a_library.write_bytes(b"\x7fELF but not really")
    with pytest.raises(Pkcs11ModuleError, match="cannot load"):
        connect(hsm.config(module=str(not_a_library)))
    not_pkcs11 = shutil.which("true")
    assert not_pkcs11 is not None
    with pytest.raises(Pkcs11ModuleError):
        connect(hsm.config(module=not_pkcs11))


def test_missing_token(hsm: Hsm) -> None:
    with pytest.raises(Pkcs11TokenNotFoundError, match="no-such-token") as info:
        connect(hsm.config(label="no-such-token"))
    assert "softhsm2-util --show-slots" in info.value.hint


def test_missing_key_label(token: Pkcs11Token) -> None:
    with pytest.raises(Pkcs11KeyNotFoundError, match="'absent'"):
        Pkcs11KeyStore(token).load("absent")
    with pytest.raises(UnknownKekError, match="hsm:kek-absent"):
        Pkcs11KekStore(token).kek("hsm:kek-absent")
    with pytest.raises(UnknownKekError):
        Pkcs11KekStore(token).kek("kek-in-a-file")


def test_keys_of_the_wrong_type(token: Pkcs11Token) -> None:
    kek = Pkcs11KekStore(token).generate()
    with pytest.raises(KeyTypeMismatchError, match="not a signing key"):
        Pkcs11KeyStore(token).load(kek.label)
    Pkcs11KeyStore(token).generate("kek-looks-like-one", KeyType.ECDSA_P256)
    with pytest.raises(KeyTypeMismatchError, match="not an AES"):
        Pkcs11KekStore(token).kek("hsm:kek-looks-like-one")
    with pytest.raises(KeyCustodyError, match="invalid key label"):
        check_label("Root CA")


def test_closed_connection_refuses(hsm: Hsm) -> None:
    conn = connect(hsm.config())
    store = Pkcs11KeyStore(conn)
    signer = store.generate("ca-closed", KeyType.ECDSA_P256)
    conn.close()
    with pytest.raises(KeyCustodyError, match="closed"):
        signer.sign(DATA)


def test_one_token_shared_by_threads(token: Pkcs11Token) -> None:
    """python-pkcs11 initialises the module for single-threaded use; iotsec serialises the
    calls, so a server's threads can share one connection."""
    import threading

    kek = Pkcs11KekStore(token).generate()
    signer = Pkcs11KeyStore(token).generate("ca-threads", KeyType.ECDSA_P256)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(40):
                key = bytes([i]) * 32
                assert kek.unwrap(kek.wrap(key, b"t"), b"t") == key
                _verify(signer, signer.sign(DATA), DATA)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
