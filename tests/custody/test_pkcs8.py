"""scrypt-protected PKCS#8: what iotsec writes, OpenSSL reads; what OpenSSL writes with
``-scrypt``, iotsec reads; older PBKDF2 files still load; the reader refuses bad structure
and unbounded scrypt costs, and never crashes on garbage (Hypothesis).

The rest of the suite writes keys at a cheap cost (tests/conftest.py); the tests here that
are about what production writes ask for ``production_scrypt_cost``."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from iotsec.custody.file_keys import FileKeyStore
from iotsec.errors import EncryptedKeyError, InputTooLargeError, KeyCustodyError
from iotsec.pki import der, pkcs8
from iotsec.pki.keys import KeyType

PASSPHRASE = b"correct horse battery staple"
KEYS = {
    "ecdsa-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "rsa-2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
}


def _spki(key: object) -> bytes:
    public = key.public_key()  # type: ignore[attr-defined]
    data: bytes = public.public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    return data


def _asn1(path: Path, openssl: str) -> str:
    return subprocess.run([openssl, "asn1parse", "-in", str(path)], capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.usefixtures("production_scrypt_cost")
@pytest.mark.parametrize("kind", list(KEYS))
def test_openssl_reads_what_iotsec_writes(kind: str, tmp_path: Path, openssl: str) -> None:
    key = KEYS[kind]()
    path = tmp_path / "key.pem"
    path.write_bytes(pkcs8.encrypt_private_key(key, PASSPHRASE))
    structure = _asn1(path, openssl)
    assert ":PBES2" in structure and ":scrypt" in structure and ":aes-256-cbc" in structure
    proc = subprocess.run([openssl, "pkey", "-in", str(path), "-passin",
                           f"pass:{PASSPHRASE.decode()}", "-pubout", "-outform", "DER"],
                          capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _spki(key)
    # And a wrong passphrase makes OpenSSL fail too: the encryption is real.
    wrong = subprocess.run([openssl, "pkey", "-in", str(path), "-passin", "pass:nope-nope",
                            "-noout"], capture_output=True, check=False)
    assert wrong.returncode != 0


def test_production_cost_is_the_default() -> None:
    assert pkcs8.ScryptCost(n=2**14, r=8, p=2) == pkcs8.DEFAULT_SCRYPT_COST
    # A process that is not this test suite writes at the production cost.
    code = ("import sys\n"
            "from cryptography.hazmat.primitives.asymmetric import ec\n"
            "from iotsec.pki import pkcs8\n"
            "key = ec.generate_private_key(ec.SECP256R1())\n"
            "sys.stdout.buffer.write(pkcs8.encrypt_private_key(key, b'passphrase'))\n")
    pem = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    assert der.integer(2**14) + der.integer(8) + der.integer(2) in pkcs8.pem_body(pem)


@pytest.mark.parametrize(("n", "r", "p"), [(2**22, 8, 1), (3000, 8, 1), (1, 8, 1),
                                           (2**14, 0, 1), (2**14, 8, 17)])
def test_a_cost_out_of_range_cannot_be_built(n: int, r: int, p: int) -> None:
    with pytest.raises(EncryptedKeyError):
        pkcs8.ScryptCost(n=n, r=r, p=p)


def test_the_reader_takes_the_cost_from_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cheap = pkcs8.encrypt_private_key(key, PASSPHRASE, cost=pkcs8.ScryptCost(2**4, 8, 1))
    assert der.integer(2**4) + der.integer(8) + der.integer(1) in pkcs8.pem_body(cheap)
    # Whatever cost this process would write with, the file's own parameters are used.
    monkeypatch.setattr(pkcs8, "SCRYPT_COST", pkcs8.ScryptCost(2**6, 4, 3))
    assert _spki(pkcs8.decrypt_private_key(cheap, PASSPHRASE)) == _spki(key)
    written = pkcs8.pem_body(pkcs8.encrypt_private_key(key, PASSPHRASE))
    assert der.integer(2**6) + der.integer(4) + der.integer(3) in written
    with pytest.raises(EncryptedKeyError):
        pkcs8.decrypt_private_key(cheap, b"incorrect donkey battery staple")


@pytest.mark.usefixtures("production_scrypt_cost")
def test_written_parameters(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = pkcs8.pem_body(pkcs8.encrypt_private_key(key, PASSPHRASE))
    # salt (16 bytes), N=2^14, r=8, p=2, keyLength 32: the exact DER of scrypt-params.
    assert der.integer(2**14) + der.integer(8) + der.integer(2) + der.integer(32) in encrypted
    assert der.oid(pkcs8.OID_SCRYPT) in encrypted and der.oid(pkcs8.OID_AES256_CBC) in encrypted
    # Two encryptions of one key differ (random salt and IV).
    assert pkcs8.encrypt_private_key(key, PASSPHRASE) != pkcs8.encrypt_private_key(
        key, PASSPHRASE)
    # cryptography (through OpenSSL) reads it as well.
    loaded = serialization.load_pem_private_key(pkcs8.encrypt_private_key(key, PASSPHRASE),
                                                PASSPHRASE)
    assert _spki(loaded) == _spki(key)


@pytest.mark.parametrize("kind", list(KEYS))
def test_iotsec_reads_what_openssl_writes_with_scrypt(kind: str, tmp_path: Path,
                                                      openssl: str) -> None:
    key = KEYS[kind]()
    plain, encrypted = tmp_path / "plain.pem", tmp_path / "enc.pem"
    plain.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    subprocess.run([openssl, "pkcs8", "-topk8", "-scrypt", "-in", str(plain), "-out",
                    str(encrypted), "-passout", f"pass:{PASSPHRASE.decode()}"], check=True,
                   capture_output=True)
    data = encrypted.read_bytes()
    assert pkcs8.uses_scrypt(pkcs8.pem_body(data))  # OpenSSL's form omits keyLength
    assert _spki(pkcs8.decrypt_private_key(data, PASSPHRASE)) == _spki(key)
    with pytest.raises(EncryptedKeyError):
        pkcs8.decrypt_private_key(data, b"incorrect donkey battery staple")


def test_pbkdf2_files_still_load() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    old = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(PASSPHRASE))
    assert not pkcs8.uses_scrypt(pkcs8.pem_body(old))
    assert _spki(pkcs8.decrypt_private_key(old, PASSPHRASE)) == _spki(key)
    with pytest.raises(EncryptedKeyError):
        pkcs8.decrypt_private_key(old, b"incorrect donkey battery staple")


@pytest.mark.usefixtures("production_scrypt_cost")
def test_file_store_writes_scrypt_and_reads_pbkdf2(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys", PASSPHRASE)
    signer = store.generate("ca-new", KeyType.ECDSA_P256)
    written = store.private_key_path("ca-new").read_bytes()
    assert pkcs8.uses_scrypt(pkcs8.pem_body(written))
    assert der.integer(2**14) + der.integer(8) + der.integer(2) in pkcs8.pem_body(written)
    # A key written by an earlier iotsec (PBKDF2) next to it still loads and signs.
    legacy = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "keys" / "ca-old.key.pem").write_bytes(legacy.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE)))
    fresh = FileKeyStore(tmp_path / "keys", PASSPHRASE)
    assert _spki(fresh.load("ca-old")) == _spki(legacy)
    assert _spki(fresh.load("ca-new")) == _spki(signer)
    with pytest.raises(KeyCustodyError, match="cannot decrypt"):
        FileKeyStore(tmp_path / "keys", b"incorrect donkey battery staple").load("ca-new")


def _scrypt_info(n: int, r: int, p: int, *, salt: bytes = b"s" * 16, iv: bytes = b"i" * 16,
                 cipher: str = pkcs8.OID_AES256_CBC, body: bytes = b"c" * 32,
                 key_length: int | None = 32) -> bytes:
    params = [der.octet_string(salt), der.integer(n), der.integer(r), der.integer(p)]
    if key_length is not None:
        params.append(der.integer(key_length))
    kdf = der.sequence(der.oid(pkcs8.OID_SCRYPT), der.sequence(*params))
    scheme = der.sequence(der.oid(cipher), der.octet_string(iv))
    return der.sequence(der.sequence(der.oid(pkcs8.OID_PBES2), der.sequence(kdf, scheme)),
                        der.octet_string(body))


@pytest.mark.parametrize(("info", "message"), [
    (_scrypt_info(2**22, 8, 1), "MiB of memory"),
    (_scrypt_info(2**40, 8, 1), "out of range"),
    (_scrypt_info(3000, 8, 1), "power of two"),
    (_scrypt_info(2**14, 8, 64), "out of range"),
    (_scrypt_info(2**14, 8, 1, iv=b"short"), "IV"),
    (_scrypt_info(2**14, 8, 1, key_length=16), "key length"),
    (_scrypt_info(2**14, 8, 1, body=b"c" * 33), "whole AES blocks"),
    (_scrypt_info(2**14, 8, 1, cipher="2.16.840.1.101.3.4.1.2"), "not AES-256-CBC"),
    (_scrypt_info(2**14, 8, 1) + b"\x00", "unexpected data"),
    (_scrypt_info(2**14, 8, 1)[:-3], "past the end"),
    (b"\x30\x80\x00\x00", "invalid DER length"),
    (b"\x30\x81\x05" + b"\x00" * 5, "non-minimal"),
])
def test_reader_refuses_bad_structure_before_any_work(info: bytes, message: str) -> None:
    with pytest.raises(EncryptedKeyError, match=message):
        pkcs8.decrypt_der(info, PASSPHRASE)


def test_reader_size_limits() -> None:
    with pytest.raises(InputTooLargeError):
        pkcs8.decrypt_der(b"\x30" * (pkcs8.MAX_PEM + 1), PASSPHRASE)
    with pytest.raises(InputTooLargeError):
        pkcs8.pem_body(b"-" * (pkcs8.MAX_PEM + 1))
    with pytest.raises(EncryptedKeyError, match="not an ENCRYPTED PRIVATE KEY"):
        pkcs8.pem_body(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(EncryptedKeyError, match="not base64"):
        pkcs8.pem_body(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nA===B\n"
                       b"-----END ENCRYPTED PRIVATE KEY-----\n")


_VALID = _scrypt_info(2**4, 1, 1)


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.builds(
    lambda cut, flip, data: data[:cut] + bytes((data[cut] ^ flip,)) + data[cut + 1:]
    if cut < len(data) else data,
    st.integers(0, len(_VALID) - 1), st.integers(1, 255), st.just(_VALID)))
@example(_VALID)
def test_fuzz_reader_only_raises_its_own_error(data: bytes) -> None:
    # Cheap costs only (the bound keeps a hostile file from asking for more), and every
    # outcome is either a key or EncryptedKeyError: never a crash, never another exception.
    with contextlib.suppress(EncryptedKeyError):
        pkcs8.decrypt_der(data, PASSPHRASE)
    with contextlib.suppress(EncryptedKeyError):
        pkcs8.decrypt_private_key(pkcs8.to_pem(data), PASSPHRASE)


@pytest.mark.usefixtures("production_scrypt_cost")
def test_a_tls_server_loads_the_stores_scrypt_key_through_openssl(tmp_path: Path) -> None:
    """The reason for the written cost: ``iotsec serve`` hands the key file to OpenSSL."""
    import ssl

    from iotsec.app.pki.server_tls import ensure_server_tls
    from iotsec.app.runtime import open_runtime
    from iotsec.app.setup import init_home
    from iotsec.config import Settings

    settings = Settings(home=tmp_path / "home")
    init_home(settings, store_passphrase=True)
    rt = open_runtime(settings)
    try:
        tls = ensure_server_tls(rt, "localhost")
    finally:
        rt.close()
    assert pkcs8.uses_scrypt(pkcs8.pem_body(tls.key_file.read_bytes()))
    assert der.integer(2**14) + der.integer(8) + der.integer(2) in pkcs8.pem_body(
        tls.key_file.read_bytes())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(tls.chain_file), str(tls.key_file), tls.key_password)
