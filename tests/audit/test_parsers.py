"""The audit's parsers: the cheap certificate key reader (checked against cryptography's
full parse), the mosquitto.conf reader and the CRL file reader, with fuzzing."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.audit.brokerconf import MAX_CONF_BYTES, parse_conf, parse_crls
from iotsec.audit.keyinfo import (
    MAX_DER,
    KeyReadError,
    certificate_facts,
    oid_text,
    spki_facts,
)
from iotsec.broker.mosquitto import Layout, ListenerSettings, render_conf
from iotsec.errors import AuditBrokerDirError

NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k")])
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def cert(key, algorithm=hashes.SHA256()) -> bytes:  # type: ignore[no-untyped-def]
    built = (x509.CertificateBuilder().subject_name(NAME).issuer_name(NAME)
             .public_key(key.public_key()).serial_number(1234567)
             .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    return built.sign(key, algorithm).public_bytes(Encoding.DER)


KEYS = [
    (lambda: ec.generate_private_key(ec.SECP256R1()), "ec", 256, "P-256", "ecdsa-with-SHA256"),
    (lambda: ec.generate_private_key(ec.SECP384R1()), "ec", 384, "P-384", "ecdsa-with-SHA256"),
    (lambda: ec.generate_private_key(ec.SECP521R1()), "ec", 521, "P-521", "ecdsa-with-SHA256"),
    (lambda: ec.generate_private_key(ec.SECP224R1()), "ec", 224, "P-224", "ecdsa-with-SHA256"),
    (lambda: ec.generate_private_key(ec.SECP256K1()), "ec", 256, "secp256k1",
     "ecdsa-with-SHA256"),
    (lambda: rsa.generate_private_key(65537, 1024), "rsa", 1024, None,  # noqa: S505
     "sha256WithRSAEncryption"),
    (lambda: rsa.generate_private_key(65537, 2048), "rsa", 2048, None,
     "sha256WithRSAEncryption"),
    (lambda: rsa.generate_private_key(65537, 3072), "rsa", 3072, None,
     "sha256WithRSAEncryption"),
    (lambda: dsa.generate_private_key(2048), "dsa", 2048, None, "2.16.840.1.101.3.4.3.2"),
]


@pytest.mark.parametrize(("make", "algorithm", "bits", "curve", "signature"), KEYS)
def test_key_facts_match_cryptography(make, algorithm, bits, curve, signature):  # type: ignore[no-untyped-def]
    key = make()
    der = cert(key)
    facts = certificate_facts(der)
    assert (facts.key.algorithm, facts.key.bits, facts.key.curve) == (algorithm, bits, curve)
    assert facts.signature == signature
    full = x509.load_der_x509_certificate(der)
    assert facts.spki == full.public_key().public_bytes(Encoding.DER,
                                                        PublicFormat.SubjectPublicKeyInfo)
    assert spki_facts(facts.spki) == facts.key
    assert not facts.weak_signature


def test_edwards_keys_and_sha384():
    for key, name in ((ed25519.Ed25519PrivateKey.generate(), "ed25519"),
                      (ed448.Ed448PrivateKey.generate(), "ed448")):
        facts = certificate_facts(cert(key, None))  # type: ignore[arg-type]
        assert facts.key.algorithm == name and facts.signature == name
    facts = certificate_facts(cert(ec.generate_private_key(ec.SECP384R1()), hashes.SHA384()))
    assert facts.signature == "ecdsa-with-SHA384"


def test_sha1_signatures_are_weak(openssl: str, tmp_path: Path):
    import subprocess

    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-sha1", "-nodes",
                    "-subj", "/CN=old", "-days", "30", "-outform", "DER",
                    "-keyout", str(tmp_path / "k"), "-out", str(tmp_path / "c")],
                   check=True, capture_output=True)
    facts = certificate_facts((tmp_path / "c").read_bytes())
    assert facts.signature == "sha1WithRSAEncryption" and facts.weak_signature


def test_oid_text():
    assert oid_text(bytes.fromhex("2a8648ce3d030107")) == "1.2.840.10045.3.1.7"
    assert oid_text(bytes.fromhex("2b6570")) == "1.3.101.112"
    with pytest.raises(KeyReadError):
        oid_text(b"")
    with pytest.raises(KeyReadError):
        oid_text(b"\x2a\x86")


def test_bad_certificates_are_refused():
    der = cert(ec.generate_private_key(ec.SECP256R1()))
    for bad in (b"", b"\x30", der[:-1], der + b"\x00", b"\x31" + der[1:],
                b"\x30\x84\xff\xff\xff\xff", b"\x00" * (MAX_DER + 1)):
        with pytest.raises(KeyReadError):
            certificate_facts(bad)
    with pytest.raises(KeyReadError):
        spki_facts(b"\x30\x03\x06\x01\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_key_reader_fuzz_random_bytes(data: bytes):
    with contextlib.suppress(KeyReadError):
        certificate_facts(data)
    with contextlib.suppress(KeyReadError):
        spki_facts(data)


_SAMPLE = cert(ec.generate_private_key(ec.SECP256R1()))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_SAMPLE) - 1), st.integers(0, 255), st.integers(1, len(_SAMPLE)))
def test_key_reader_fuzz_mutated_certificate(pos: int, value: int, cut: int):
    mutated = bytearray(_SAMPLE)
    mutated[pos] = value
    for data in (bytes(mutated), _SAMPLE[:cut]):
        try:
            facts = certificate_facts(data)
        except KeyReadError:
            continue
        assert facts.key.algorithm in ("ec", "rsa", "dsa", "ed25519", "ed448", "unknown")


# --------------------------------------------------------------------------- mosquitto.conf


def test_the_rendered_configuration_is_read_as_written():
    layout = Layout(Path("/srv/broker"))
    conf = parse_conf(render_conf(layout, ListenerSettings.parse(plain_localhost_port=1884)))
    network = [x for x in conf.listeners if x.network]
    assert [(x.port, x.bind, x.tls, x.require_certificate) for x in network] == [
        (8883, "127.0.0.1", True, True), (1884, "127.0.0.1", False, False)]
    assert network[0].crlfile == "/srv/broker/current/crl.pem"
    sockets = [x for x in conf.listeners if not x.network]
    assert [x.socket for x in sockets] == ["/srv/broker/run/admin.sock"]
    assert not conf.allow_anonymous and conf.per_listener_anonymous == ()
    assert conf.log_files == ("/srv/broker/run/mosquitto.log",)
    assert conf.connection_messages


def test_mosquitto_defaults_and_legacy_directives():
    empty = parse_conf("# nothing\n")
    assert [(x.port, x.bind, x.tls) for x in empty.listeners] == [(1883, "127.0.0.1", False)]
    legacy = parse_conf("port 1883\nbind_address 0.0.0.0\nallow_anonymous true\n"
                        "listener 8883\ncertfile /c.pem\nconnection_messages false\n")
    assert [(x.port, x.bind, x.tls) for x in legacy.listeners] == [
        (1883, "0.0.0.0", False), (8883, None, True)]  # noqa: S104
    assert legacy.allow_anonymous and not legacy.connection_messages
    per = parse_conf("per_listener_settings true\nlistener 1883\nallow_anonymous true\n"
                     "listener 8883\nallow_anonymous false\ncertfile /c\npsk_hint x\n")
    assert not per.allow_anonymous and per.per_listener_anonymous == (1883,)
    assert parse_conf("listener x\nlistener 0 /s.sock\n").listeners[0].socket == "/s.sock"


def test_an_oversized_configuration_is_refused():
    with pytest.raises(AuditBrokerDirError):
        parse_conf("#" * (MAX_CONF_BYTES + 1))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_conf_reader_fuzz(text: str):
    conf = parse_conf(text)
    assert conf.listeners  # Mosquitto always listens somewhere


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    "listener 1883", "listener 8883 0.0.0.0", "listener 0 /x.sock", "port 1", "certfile /c",
    "allow_anonymous true", "allow_anonymous false", "per_listener_settings true",
    "require_certificate true", "crlfile /crl", "log_dest file /l", "bind_address ::1",
    "psk_hint h", "# c", ""]), max_size=20))
def test_conf_reader_fuzz_directives(lines: list[str]):
    conf = parse_conf("\n".join(lines))
    for x in conf.listeners:
        assert x.network or x.socket is not None


# --------------------------------------------------------------------------- CRL files


def _crl(number: int) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateRevocationListBuilder().issuer_name(NAME)
            .last_update(NOW).next_update(NOW + timedelta(days=7))
            .add_extension(x509.CRLNumber(number), critical=False)
            .sign(key, hashes.SHA256()).public_bytes(Encoding.PEM))


def test_crl_files_hold_one_crl_per_ca():
    crls = parse_crls(_crl(3) + _crl(9))
    assert [(c.issuer, c.number) for c in crls] == [("CN=k", 3), ("CN=k", 9)]
    assert crls[0].next_update == int((NOW + timedelta(days=7)).timestamp())


@pytest.mark.parametrize("data", [b"", b"garbage", b"-----BEGIN X509 CRL-----\nAA==\n"
                                  b"-----END X509 CRL-----\n", b"\x30\x03\x02\x01\x00"])
def test_unreadable_crl_files_are_refused(data: bytes):
    with pytest.raises(AuditBrokerDirError):
        parse_crls(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_crl_reader_fuzz(data: bytes):
    with contextlib.suppress(AuditBrokerDirError):
        parse_crls(data)
