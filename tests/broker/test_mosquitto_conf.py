"""mosquitto.conf rendering, the ACL reader and the CRL check (pure)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from iotsec.broker.mosquitto import (
    Layout,
    ListenerSettings,
    check_acl,
    check_crl,
    password_line,
    render_conf,
)
from iotsec.errors import BrokerConfigError, BrokerCrlError, BrokerValidationError
from tests.helpers import self_signed

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def conf(**kw: object) -> str:
    return render_conf(Layout.parse(Path("/srv/b")), ListenerSettings.parse(**kw))  # type: ignore[arg-type]


def test_device_listener_is_mutual_tls_12_plus_with_the_certificate_as_identity() -> None:
    text = conf(port=8883, bind="10.0.0.5")
    lines = text.splitlines()
    assert "listener 8883 10.0.0.5" in lines
    for expected in ("allow_anonymous false", "require_certificate true",
                     "use_identity_as_username true", "use_username_as_clientid true",
                     "tls_version tlsv1.2", "crlfile /srv/b/current/crl.pem",
                     "acl_file /srv/b/current/acl", "per_listener_settings false"):
        assert expected in lines
    # No plaintext TCP listener: the only other one is the control socket.
    listeners = [ln for ln in lines if ln.startswith("listener ")]
    assert listeners == ["listener 8883 10.0.0.5", "listener 0 /srv/b/run/admin.sock"]
    assert "allow_anonymous true" not in text


def test_plaintext_listener_only_on_loopback_when_asked() -> None:
    lines = conf(plain_localhost_port=1883).splitlines()
    assert "listener 1883 127.0.0.1" in lines
    with pytest.raises(BrokerConfigError):
        ListenerSettings.parse(port=1883, plain_localhost_port=1883)


def test_dry_run_configuration_uses_a_socket_and_the_candidate_files() -> None:
    layout = Layout.parse(Path("/srv/b"))
    text = render_conf(layout, ListenerSettings.parse(), files=Path("/srv/b/.gen-2"),
                       check_socket=Path("/srv/b/run/check-1.sock"))
    assert "listener 0 /srv/b/run/check-1.sock" in text
    assert "crlfile /srv/b/.gen-2/crl.pem" in text
    assert "admin.sock" not in text and "pid_file" not in text


@pytest.mark.parametrize("bad", ["/with space", "/a/../b", "/semi;colon", "/new\nline",
                                 "/" + "x" * 120])
def test_unsafe_directories_are_refused(bad: str) -> None:
    with pytest.raises(BrokerConfigError):
        Layout.parse(Path(bad))


@pytest.mark.parametrize("bind", ["example.com", "300.1.1.1", ""])
def test_bind_must_be_an_address(bind: str) -> None:
    with pytest.raises(BrokerConfigError):
        ListenerSettings.parse(bind=bind)


def test_password_line_is_mosquittos_pbkdf2_sha512_format() -> None:
    salt = bytes(range(12))
    line = password_line("_iotsec_admin", "s3cret", salt)
    user, rest = line.rstrip("\n").split(":", 1)
    _, kind, iterations, salt_b64, digest_b64 = rest.split("$")
    assert (user, kind, iterations) == ("_iotsec_admin", "7", "101")
    assert base64.b64decode(salt_b64) == salt
    assert base64.b64decode(digest_b64) == hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, 101)
    with pytest.raises(BrokerConfigError):
        password_line("a:b", "x", salt)


@pytest.mark.parametrize(("text", "why"), [
    ("topic read a\n", "anonymous"),
    ("user a\ntopic read a/#/b\n", "valid topic"),
    ("user a\ntopic read a+\n", "valid topic"),
    ("user a\ntopic maybe a\n", "access type"),
    ("user a\nsomething else\n", "not a user"),
    ("user a\ntopic read " + "x" * 1000 + "\n", "longer"),
    ("user a\ntopic read a\rb\n", "control"),
    ("user a b\n", "one user"),
    ("pattern read a/%c\n", "%"),
    ("user a\nuser a\n", "two blocks"),
])
def test_acl_reader_refuses_what_mosquitto_would_misread(text: str, why: str) -> None:
    with pytest.raises(BrokerValidationError, match=why):
        check_acl(text)


def test_acl_reader_requires_internal_accounts_to_be_denied() -> None:
    check_acl("user x\ntopic deny #\n", required_users=("x",))
    with pytest.raises(BrokerValidationError, match="deny everything"):
        check_acl("user x\ntopic read a\n", required_users=("x",))


@given(st.text(max_size=300))
def test_acl_reader_never_fails_other_than_by_refusing(text: str) -> None:
    with contextlib.suppress(BrokerValidationError):
        check_acl(text)


# --- CRL check -----------------------------------------------------------------------------


def _ca(name: str = "Issuing") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(key, name, not_before=NOW - timedelta(days=1),
                       not_after=NOW + timedelta(days=900))
    return key, cert


def _crl(key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate, *, number: int = 5,
         next_update: timedelta = timedelta(days=7), this_update: datetime = NOW) -> bytes:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
               .last_update(this_update).next_update(this_update + next_update)
               .add_extension(x509.CRLNumber(number), critical=False))
    from cryptography.hazmat.primitives.serialization import Encoding

    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


def test_a_good_crl_passes() -> None:
    key, ca = _ca()
    info = check_crl(_crl(key, ca), ca, now=NOW, min_remaining=timedelta(hours=1),
                     previous_number=5)
    assert info.number == 5 and info.next_update == NOW + timedelta(days=7)


def test_bad_crls_are_refused() -> None:
    key, ca = _ca()
    other_key, other = _ca("Other")
    hour = timedelta(hours=1)
    cases = {
        "readable": b"\x30\x03\x02\x01\x00",
        "issued by": _crl(other_key, other),
        "signature": _crl(other_key, ca),
        "older": _crl(key, ca, number=3),
        "nextUpdate": _crl(key, ca, next_update=timedelta(minutes=30)),
        "future": _crl(key, ca, this_update=NOW + timedelta(days=1)),
    }
    for why, der in cases.items():
        with pytest.raises(BrokerCrlError, match=why):
            check_crl(der, ca, now=NOW, min_remaining=hour, previous_number=4)
