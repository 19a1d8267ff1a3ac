"""The offline-root ceremony and imported CAs, through the command line (SQLite):
``init --offline-root`` keeps no root key in the home; ``ca request`` -> ``ca
sign-intermediate`` (without a home) -> ``ca import``; import refusals (not a CA, another
key, expired, another root) and ``init --import-ca`` refusals write nothing; the results
verify with ``openssl``; the parsers are fuzzed."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.app.pki.authorities import authority_crl, resolve_ca
from iotsec.app.pki.ceremony import import_root_crl, load_signing_key, sign_intermediate_offline
from iotsec.app.runtime import open_runtime
from iotsec.config import Settings
from iotsec.errors import IotsecError
from iotsec.pki.ca import load_ca_certificate
from tests.cli.support import Cli

pytestmark = pytest.mark.openssl

PASSPHRASE = "correct horse battery staple"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: x509.Name, public_key: CertificateIssuerPublicKeyTypes, issuer: x509.Name,
          issuer_key: CertificateIssuerPrivateKeyTypes, *, ca: bool = True,
          path_length: int | None = 0, not_before: datetime | None = None,
          not_after: datetime | None = None) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(not_before or now - timedelta(days=1))
               .not_valid_after(not_after or now + timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None),
                              critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=True, content_commitment=False,
                   key_encipherment=False, data_encipherment=False, key_agreement=False,
                   key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False),
                   critical=True))
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _openssl_verify(openssl: str, ca_file: Path, leaf: Path) -> str:
    done = subprocess.run([openssl, "verify", "-x509_strict", "-CAfile", str(ca_file),
                           str(leaf)], capture_output=True, text=True, timeout=30,
                          check=False)
    return done.stdout + done.stderr


def _issue_device(cli: Cli, tmp: Path, device_id: str) -> Path:
    cli.ok("device", "add", device_id)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
           .sign(key, hashes.SHA256()))
    (tmp / f"{device_id}.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    out = tmp / f"{device_id}.crt"
    cli.ok("cert", "issue", device_id, "--csr", str(tmp / f"{device_id}.csr"), "-o", str(out))
    return out


@pytest.fixture
def offline(cli: Cli, cli_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("IOTSEC_ROOT_KEY_PASSPHRASE", PASSPHRASE)
    key_file = cli_home.parent / "root.key"
    made: dict[str, Any] = cli.json("init", "--store-passphrase", "--offline-root",
                                    "--root-key-out", str(key_file))
    made["key_file"] = key_file
    return made


def test_offline_root_ceremony_end_to_end(cli: Cli, cli_home: Path, offline: dict[str, Any],
                                          openssl: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    key_file: Path = offline["key_file"]
    assert offline["root_key"] == "offline" and offline["root_key_file"] == str(key_file)
    assert offline["ca_passphrase"] == "home-file"  # said, not hidden
    # The root key is not in the home: only the issuing CA's key is.
    cas = cli.json("ca", "list")
    root = next(a for a in cas if a["role"] == "root")
    assert root["key_offline"] is True
    assert not list(cli_home.rglob(f"{root['key_label']}*"))
    assert [p.name for p in (cli_home / "keys").glob("*.key.pem")] == [
        f"{a['key_label']}.key.pem" for a in cas if a["role"] == "issuing"]
    # OpenSSL reads the exported key with the passphrase, and not without it.
    read = subprocess.run([openssl, "pkey", "-in", str(key_file), "-passin",
                           f"pass:{PASSPHRASE}", "-noout"], capture_output=True, timeout=30,
                          check=False)
    assert read.returncode == 0, read.stderr
    assert subprocess.run([openssl, "pkey", "-in", str(key_file), "-passin", "pass:wrong",
                           "-noout"], capture_output=True, timeout=30,
                          check=False).returncode != 0
    # The home cannot sign an issuing CA.
    assert "offline" in cli.refused("ca", "rotate")
    # The root's CRL was signed before the key left, and is served.
    root_crl = tmp_path / "root.crl"
    cli.ok("crl", "--ca", "root", "--pem", "-o", str(root_crl))
    crl = x509.load_pem_x509_crl(root_crl.read_bytes())
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - datetime.now(UTC) > timedelta(days=300)

    old_cert = _issue_device(cli, tmp_path, "before")
    # 1. request (online)
    csr = tmp_path / "issuing.csr"
    cli.ok("ca", "request", "-o", str(csr))
    # 2. sign (offline: no home at all)
    root_pem = tmp_path / "root.pem"
    root_pem.write_text(cli.ok("ca", "chain").out.split("-----END CERTIFICATE-----\n")[1]
                        + "-----END CERTIFICATE-----\n")
    monkeypatch.setenv("IOTSEC_HOME", str(tmp_path / "no-home-here"))
    signed = tmp_path / "issuing.crt"
    cli.ok("ca", "sign-intermediate", "--root-key", str(key_file), "--root-cert",
           str(root_pem), str(csr), "-o", str(signed))
    assert not (tmp_path / "no-home-here").exists()
    monkeypatch.setenv("IOTSEC_HOME", str(cli_home))
    # 3. import (online): the new CA is active, the previous one retiring.
    changed = cli.json("ca", "import", str(signed))["changed"]
    assert [(a["role"], a["state"]) for a in changed] == [("issuing", "active"),
                                                          ("issuing", "retiring")]
    new_cert = _issue_device(cli, tmp_path, "after")
    assert (x509.load_pem_x509_certificate(new_cert.read_bytes()).issuer.rfc4514_string()
            == changed[0]["subject"])
    bundle = tmp_path / "bundle.pem"
    cli.ok("ca", "bundle", "-o", str(bundle))
    for leaf in (old_cert, new_cert):
        assert _openssl_verify(openssl, bundle, leaf).strip().endswith(": OK")
    # The request is used up: the same certificate is not imported twice.
    assert "pending request" in cli.refused("ca", "import", str(signed))


def _pending_key(cli: Cli, tmp_path: Path) -> x509.CertificateSigningRequest:
    csr = tmp_path / "pending.csr"
    cli.ok("ca", "request", "-o", str(csr))
    return x509.load_pem_x509_csr(csr.read_bytes())


def test_import_refusals_write_nothing(cli: Cli, offline: dict[str, Any],
                                       tmp_path: Path) -> None:
    root_key = load_signing_key(offline["key_file"].read_bytes(), PASSPHRASE.encode()).private_key
    request = _pending_key(cli, tmp_path)
    # The issuer name must match the root's byte for byte: taken from its certificate.
    chain = x509.load_pem_x509_certificates(cli.ok("ca", "chain").out.encode())
    root_name = chain[-1].subject
    spki = request.public_key()
    stranger = ec.generate_private_key(ec.SECP256R1())
    other_root_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cases = {
        "not a CA": _cert(request.subject, spki, root_name, root_key, ca=False),
        "pending request": _cert(request.subject, stranger.public_key(), root_name, root_key),
        "not valid now": _cert(request.subject, spki, root_name, root_key,
                               not_before=now - timedelta(days=30),
                               not_after=now - timedelta(days=1)),
        "not issued by the root": _cert(request.subject, spki, root_name, other_root_key),
    }
    before = cli.json("ca", "list")
    for reason, cert in cases.items():
        path = tmp_path / "candidate.pem"
        path.write_bytes(_pem(cert))
        assert reason in cli.refused("ca", "import", str(path)), reason
        assert cli.json("ca", "list") == before
    (tmp_path / "garbage.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n")
    assert "not a PEM or DER" in cli.refused("ca", "import", str(tmp_path / "garbage.pem"))
    (tmp_path / "big.pem").write_bytes(b"0" * 70_000)
    cli.refused("ca", "import", str(tmp_path / "big.pem"))
    assert cli.json("ca", "list") == before
    # The right certificate still imports: the refusals consumed nothing.
    good = _cert(request.subject, spki, root_name, root_key)
    (tmp_path / "good.pem").write_bytes(_pem(good))
    assert cli.json("ca", "import", str(tmp_path / "good.pem"))["changed"][0]["state"] \
        == "active"


def test_sign_intermediate_refusals(cli: Cli, offline: dict[str, Any], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    request = tmp_path / "r.csr"
    cli.ok("ca", "request", "-o", str(request))
    chain = x509.load_pem_x509_certificates(cli.ok("ca", "chain").out.encode())
    (tmp_path / "root.pem").write_bytes(_pem(chain[-1]))
    (tmp_path / "issuing.pem").write_bytes(_pem(chain[0]))
    args = ["ca", "sign-intermediate", "--root-key", str(offline["key_file"])]
    monkeypatch.setenv("IOTSEC_ROOT_KEY_PASSPHRASE", "a wrong passphrase")
    assert "wrong passphrase" in cli.refused(*args, "--root-cert", str(tmp_path / "root.pem"),
                                             str(request))
    monkeypatch.setenv("IOTSEC_ROOT_KEY_PASSPHRASE", PASSPHRASE)
    assert "does not match" in cli.refused(*args, "--root-cert",
                                           str(tmp_path / "issuing.pem"), str(request))
    tampered = bytearray(x509.load_pem_x509_csr(request.read_bytes()).public_bytes(
        serialization.Encoding.DER))
    tampered[-5] ^= 0x01
    (tmp_path / "bad.csr").write_bytes(bytes(tampered))
    cli.refused(*args, "--root-cert", str(tmp_path / "root.pem"), str(tmp_path / "bad.csr"))
    monkeypatch.delenv("IOTSEC_ROOT_KEY_PASSPHRASE")
    assert "passphrase" in cli.refused(*args, "--root-cert", str(tmp_path / "root.pem"),
                                       str(request))


def _enterprise(tmp_path: Path) -> dict[str, Path]:
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = _cert(_name("Example Root"), root_key.public_key(), _name("Example Root"),
                 root_key, path_length=None)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    issuing = _cert(_name("Example IoT Issuing"), ca_key.public_key(), root.subject, root_key)
    files = {"root": tmp_path / "ent-root.pem", "ca": tmp_path / "ent-ca.pem",
             "key": tmp_path / "ent-ca.key"}
    files["root"].write_bytes(_pem(root))
    files["ca"].write_bytes(_pem(issuing))
    files["key"].write_bytes(ca_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"enterprise key pass")))
    wrong_key = ec.generate_private_key(ec.SECP256R1())
    files["wrong-key"] = tmp_path / "wrong.key"
    files["wrong-key"].write_bytes(wrong_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    files["leaf"] = tmp_path / "ent-leaf.pem"
    files["leaf"].write_bytes(_pem(_cert(_name("not a ca"), ca_key.public_key(), root.subject,
                                         root_key, ca=False)))
    now = datetime.now(UTC)
    files["expired"] = tmp_path / "ent-expired.pem"
    files["expired"].write_bytes(_pem(_cert(
        _name("Example IoT Issuing"), ca_key.public_key(), root.subject, root_key,
        not_before=now - timedelta(days=60), not_after=now - timedelta(days=1))))
    other = ec.generate_private_key(ec.SECP256R1())
    files["other-root"] = tmp_path / "other-root.pem"
    files["other-root"].write_bytes(_pem(_cert(_name("Other Root"), other.public_key(),
                                               _name("Other Root"), other,
                                               path_length=None)))
    return files


def test_init_import_ca_refusals_write_nothing_then_adopts(
        cli: Cli, cli_home: Path, tmp_path: Path, openssl: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    f = _enterprise(tmp_path)
    monkeypatch.setenv("IOTSEC_IMPORT_KEY_PASSPHRASE", "enterprise key pass")

    def init(ca: Path, root: Path, key: Path) -> list[str]:
        return ["init", "--store-passphrase", "--import-ca", str(ca), "--import-root",
                str(root), "--import-key", str(key)]
    refusals = {
        "not a CA": init(f["leaf"], f["root"], f["key"]),
        "does not certify the expected key": init(f["ca"], f["root"], f["wrong-key"]),
        "not valid now": init(f["expired"], f["root"], f["key"]),
        "not issued by the root": init(f["ca"], f["other-root"], f["key"]),
    }
    for reason, args in refusals.items():
        assert reason in cli.refused(*args), reason
        assert not cli_home.exists(), reason  # nothing written: not even the home
    made = cli.json(*init(f["ca"], f["root"], f["key"]))
    assert made["imported"] is True and made["root"] == "CN=Example Root,O=Example Corp"
    assert made["issuing"] == "CN=Example IoT Issuing,O=Example Corp"
    leaf = _issue_device(cli, tmp_path, "ent-dev")
    untrusted = subprocess.run([openssl, "verify", "-CAfile", str(f["root"]), "-untrusted",
                                str(f["ca"]), str(leaf)], capture_output=True, text=True,
                               timeout=30, check=False)
    assert untrusted.stdout.strip().endswith(": OK"), untrusted
    cas = cli.json("ca", "list")
    assert [(a["role"], a["key_offline"]) for a in cas] == [("root", True),
                                                            ("issuing", False)]
    assert "offline" in cli.refused("ca", "rotate")
    assert json.loads(cli.ok("ca", "list", "--json").out) == cas


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_ca_certificate_parser(data: bytes) -> None:
    with contextlib.suppress(IotsecError):
        load_ca_certificate(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1024), st.binary(max_size=512))
def test_fuzz_sign_intermediate_inputs(csr: bytes, key: bytes) -> None:
    with pytest.raises(IotsecError):
        sign_intermediate_offline(root_key=key, passphrase=b"x" * 12, root_cert=b"",
                                  csr=csr, now=datetime.now(UTC))


def test_offline_root_crl_renewed_offline(cli: Cli, offline: dict[str, Any], tmp_path: Path,
                                          openssl: str) -> None:
    chain = x509.load_pem_x509_certificates(cli.ok("ca", "chain").out.encode())
    (tmp_path / "root.pem").write_bytes(_pem(chain[-1]))
    before = x509.load_pem_x509_crl(cli.ok("crl", "--ca", "root", "--pem").out.encode())
    sign = ["ca", "sign-crl", "--root-key", str(offline["key_file"]), "--root-cert",
            str(tmp_path / "root.pem")]
    time.sleep(1.1)  # the CRL number is the signing time in seconds: a later second
    cli.ok(*sign, "--days", "30", "-o", str(tmp_path / "next.crl"))
    text = subprocess.run([openssl, "crl", "-in", str(tmp_path / "next.crl"), "-noout",
                           "-issuer", "-crlnumber"], capture_output=True, text=True,
                          timeout=30, check=True).stdout
    assert "iotsec Root CA" in text
    published = cli.json("ca", "import-crl", str(tmp_path / "next.crl"))
    number = before.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert published["number"] > number
    served = x509.load_pem_x509_crl(cli.ok("crl", "--ca", "root", "--pem").out.encode())
    assert served.public_bytes(serialization.Encoding.DER) == x509.load_pem_x509_crl(
        (tmp_path / "next.crl").read_bytes()).public_bytes(serialization.Encoding.DER)
    # Refused, nothing written: the same CRL again (no higher number), one the issuing CA
    # signed (its key is online), garbage.
    assert "roll back" in cli.refused("ca", "import-crl", str(tmp_path / "next.crl"))
    (tmp_path / "issuing.crl").write_text(cli.ok("crl", "--pem").out)
    assert "offline" in cli.refused("ca", "import-crl", str(tmp_path / "issuing.crl"))
    (tmp_path / "junk.crl").write_bytes(b"junk")
    assert "not a PEM or DER CRL" in cli.refused("ca", "import-crl", str(tmp_path / "junk.crl"))
    assert "1 to 1095" in cli.refused(*sign, "--days", "0")
    assert cli.ok("crl", "--ca", "root", "--pem").out == served.public_bytes(
        serialization.Encoding.PEM).decode()


def test_fuzz_crl_import_writes_nothing(offline: dict[str, Any], cli_home: Path) -> None:
    rt = open_runtime(Settings(home=cli_home))
    try:
        before = authority_crl(rt, resolve_ca(rt, "root")).der

        @settings(max_examples=100, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(st.binary(max_size=1024) | st.builds(
            lambda body: b"-----BEGIN X509 CRL-----\n" + body + b"\n-----END X509 CRL-----\n",
            st.binary(max_size=512)))
        def attempt(data: bytes) -> None:
            with pytest.raises(IotsecError):
                import_root_crl(rt, data)

        attempt()
        assert authority_crl(rt, resolve_ca(rt, "root")).der == before
    finally:
        rt.close()


def test_offline_root_options_are_checked_before_anything_is_written(
        cli: Cli, cli_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "--root-key-out" in cli.refused("init", "--store-passphrase", "--offline-root")
    assert "--offline-root" in cli.refused("init", "--store-passphrase", "--root-token", "t")
    monkeypatch.delenv("IOTSEC_ROOT_TOKEN_PIN", raising=False)
    assert "PIN" in cli.refused("init", "--store-passphrase", "--offline-root", "--root-token",
                                "root-token", "--pkcs11-module", "/nonexistent.so")
    monkeypatch.setenv("IOTSEC_ROOT_KEY_PASSPHRASE", "short")
    assert "12 characters" in cli.refused("init", "--store-passphrase", "--offline-root",
                                          "--root-key-out", str(cli_home.parent / "k.pem"))
    assert not cli_home.exists() and not (cli_home.parent / "k.pem").exists()
