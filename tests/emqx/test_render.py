"""``iotsec broker emqx render``: the HOCON snippet (parsed with a HOCON parser), the files
it names, their modes, and the token it carries."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
import typer
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from iotsec.api.app import create_app
from iotsec.app.access.api_tokens import Scope, issue_token, list_tokens
from iotsec.app.broker.emqx_render import EmqxRenderOptions, render
from iotsec.app.runtime import Runtime
from iotsec.cli import broker
from iotsec.errors import BrokerConfigError

pyhocon = pytest.importorskip("pyhocon", reason="pyhocon parses the rendered HOCON")

root = typer.Typer()
root.add_typer(broker.app, name="broker")


@root.callback()
def _root() -> None:
    """iotsec"""


def _parse(path: Path) -> object:
    return pyhocon.ConfigFactory.parse_string(path.read_text(encoding="utf-8"))


@pytest.fixture
def database_url() -> None:
    """Rendering reads the store like any use case; the SQLite home is enough here."""
    return None


def test_cli_render_writes_a_valid_snippet(rt: Runtime, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_HOME", str(rt.settings.home))
    out = tmp_path / "emqx"
    result = CliRunner().invoke(root, [
        "broker", "emqx", "render", "-o", str(out), "--api-url",
        "https://iotsec.example.com:8443", "--bind", "0.0.0.0", "--port", "8884",  # noqa: S104
        "--dns", "mqtt.example.com", "--issue-token", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["token_issued"] and data["server_certificate_issued"] is True
    assert "iotsec_" not in result.stdout  # the token is never printed
    conf = _parse(out / "emqx-iotsec.hocon")

    ssl = conf.get("listeners.ssl.default")
    assert ssl.get("bind") == "0.0.0.0:8884"
    opts = ssl.get("ssl_options")
    assert opts.get("verify") == "verify_peer" and opts.get("fail_if_no_peer_cert") is True
    assert list(opts.get("versions")) == ["tlsv1.3", "tlsv1.2"]
    assert all(re.search(r"GCM|CHACHA20", c) for c in opts.get("ciphers"))
    for key in ("cacertfile", "certfile", "keyfile"):
        assert Path(opts.get(key)).is_file()
    for plain in ("tcp", "ws", "wss"):
        assert conf.get(f"listeners.{plain}.default.enable") is False
    assert conf.get("mqtt.peer_cert_as_username") == "cn"
    assert conf.get("mqtt.peer_cert_as_clientid") == "cn"

    (authn,) = conf.get("authentication")
    assert (authn.get("mechanism"), authn.get("backend"), authn.get("method")) == (
        "password_based", "http", "post")
    assert authn.get("url") == "https://iotsec.example.com:8443/v1/emqx/authn"
    assert authn.get("body.cert_pem") == "${cert_pem}"  # a placeholder, kept for EMQX
    assert authn.get("body.username") == "${username}"
    assert authn.get("ssl.verify") == "verify_peer"
    assert authn.get("ssl.server_name_indication") == "iotsec.example.com"
    bearer = authn.get("headers")["authorization"]
    assert re.fullmatch(r"Bearer iotsec_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", bearer)

    authz = conf.get("authorization")
    assert authz.get("no_match") == "deny" and authz.get("deny_action") == "disconnect"
    assert authz.get("cache.enable") is True and authz.get("cache.ttl") == "30s"
    (source,) = authz.get("sources")  # http only: no file source with {allow, all}
    assert source.get("type") == "http"
    assert source.get("url") == "https://iotsec.example.com:8443/v1/emqx/authz"
    assert source.get("body.topic") == "${topic}" and source.get("body.action") == "${action}"
    assert source.get("headers")["authorization"] == bearer

    # The token in the snippet is a broker token that the hooks accept.
    client = TestClient(create_app(rt), headers={"Authorization": bearer})
    resp = client.post("/v1/emqx/authz", json={"username": "x", "action": "publish",
                                               "topic": "t"})
    assert resp.status_code == 200 and resp.json() == {"result": "deny"}
    assert client.get("/v1/devices").status_code == 403


def test_files_modes_and_certificate(rt: Runtime, tmp_path: Path) -> None:
    out = tmp_path / "emqx"
    options = EmqxRenderOptions(api_url="https://iotsec.example.com:8443", bind="0.0.0.0",  # noqa: S104
                                dns=("mqtt.example.com",), issue_token=True)
    first = render(rt, out, options)
    assert stat.S_IMODE(os.stat(first.snippet).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out / "certs" / "server.key").st_mode) == 0o600
    chain = x509.load_pem_x509_certificates((out / "certs" / "server.pem").read_bytes())
    server, issuing = chain[0], chain[1]
    server.verify_directly_issued_by(issuing)
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mqtt.example.com" in san.get_values_for_type(x509.DNSName)
    crls = (out / "certs" / "crl.pem").read_bytes().split(b"-----END X509 CRL-----")
    assert x509.load_pem_x509_crl(crls[0] + b"-----END X509 CRL-----\n").is_signature_valid(
        issuing.public_key())  # type: ignore[arg-type]
    ca = x509.load_pem_x509_certificates((out / "certs" / "ca.pem").read_bytes())
    assert ca[0] == issuing
    # A second render keeps the server certificate while it is current.
    again = render(rt, out, options)
    assert again.server_certificate_issued is False
    assert x509.load_pem_x509_certificates(
        (out / "certs" / "server.pem").read_bytes())[0] == server


def test_token_file_must_be_private_and_a_token(rt: Runtime, tmp_path: Path) -> None:
    _, token = issue_token(rt, "emqx", Scope.BROKER, None)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o644)
    options = EmqxRenderOptions(api_url="https://iotsec.example.com", token_file=token_file)
    with pytest.raises(BrokerConfigError, match="readable by other users"):
        render(rt, tmp_path / "a", options)
    token_file.chmod(0o600)
    result = render(rt, tmp_path / "a", options)
    assert token in Path(result.snippet).read_text()
    token_file.write_text("not a token")
    with pytest.raises(BrokerConfigError, match="not an iotsec API token"):
        render(rt, tmp_path / "b", options)


@pytest.mark.parametrize(("url", "issue", "token_file", "message"), [
    ("https://iotsec.example.com", False, False, "one of them"),
    ("https://iotsec.example.com", True, True, "one of them"),
    ("http://iotsec.example.com", True, False, "over https"),
    ("ftp://iotsec.example.com", True, False, "not an http"),
    ("https://iotsec.example.com/a b", True, False, "not an http"),
])
def test_bad_options_are_refused_before_writing(rt: Runtime, tmp_path: Path, url: str,
                                                issue: bool, token_file: bool,
                                                message: str) -> None:
    path = tmp_path / "token"
    path.write_text("x")
    path.chmod(0o600)
    options = EmqxRenderOptions(api_url=url, issue_token=issue,
                                token_file=path if token_file else None)
    before = list_tokens(rt)
    with pytest.raises(BrokerConfigError, match=message):
        render(rt, tmp_path / "out", options)
    assert not (tmp_path / "out" / "emqx-iotsec.hocon").exists()
    assert list_tokens(rt) == before  # no token issued for a refused render


def test_loopback_http_is_allowed(rt: Runtime, tmp_path: Path) -> None:
    result = render(rt, tmp_path / "out", EmqxRenderOptions(
        api_url="http://127.0.0.1:8443", issue_token=True))
    conf = _parse(Path(result.snippet))
    assert "ssl" not in conf.get("authentication")[0]


# Field names of EMQX 5's listener TLS options, from emqx_schema.erl
# (common_ssl_opts_schema/2 and server_ssl_opts_schema/2); EMQX refuses unknown fields.
EMQX_SERVER_SSL_FIELDS = {
    "cacertfile", "cacerts", "certfile", "keyfile", "verify", "reuse_sessions", "depth",
    "password", "versions", "ciphers", "secure_renegotiate", "log_level", "hibernate_after",
    "dhfile", "fail_if_no_peer_cert", "honor_cipher_order", "client_renegotiation",
    "handshake_timeout", "gc_after_handshake", "ocsp", "enable_crl_check"}


def test_listener_uses_only_emqx_tls_fields(rt: Runtime, tmp_path: Path) -> None:
    result = render(rt, tmp_path / "out", EmqxRenderOptions(
        api_url="https://iotsec.example.com", issue_token=True))
    opts = _parse(Path(result.snippet)).get("listeners.ssl.default.ssl_options")
    assert set(opts) <= EMQX_SERVER_SSL_FIELDS
    # emqx_schema:validate_server_ssl_opts/1: fail_if_no_peer_cert needs verify_peer.
    assert opts.get("fail_if_no_peer_cert") is True and opts.get("verify") == "verify_peer"
