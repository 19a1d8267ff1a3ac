"""The EMQX 5 configuration snippet that makes EMQX enforce iotsec's decisions (pure).

It is HOCON, included from ``emqx.conf`` on every node of the cluster, and sets:

- ``listeners.ssl.default``: mutual TLS (``verify = verify_peer``,
  ``fail_if_no_peer_cert = true``), TLS 1.3 and 1.2 only, AEAD ECDHE suites, the server
  certificate and CA chain issued by iotsec; the plaintext (``tcp``) and WebSocket
  listeners are switched off;
- ``mqtt.peer_cert_as_username = cn`` and ``peer_cert_as_clientid = cn``: the identity is
  the certificate's CN (the device id); a device cannot pick another device's client id;
- ``authentication``: one HTTP authenticator posting to iotsec; when it answers an error
  or nothing, EMQX has no other authenticator to ask and refuses the client;
- ``authorization``: ``no_match = deny``, ``deny_action = disconnect`` and one source,
  HTTP to iotsec. Setting ``sources`` replaces EMQX's default list, whose file source
  (``acl.conf``) ends in ``{allow, all}``.

EMQX reads a ``${name}`` *inside a quoted string* as a request placeholder, and HOCON
substitutes only outside quotes, so every placeholder here is quoted. EMQX's HOCON parser
concatenates values across newlines, so array elements are always comma-separated.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from iotsec.errors import BrokerConfigError

__all__ = [
    "AUTHN_BODY", "AUTHN_PATH", "AUTHZ_BODY", "AUTHZ_PATH", "CIPHERS", "TLS_VERSIONS",
    "EmqxConfig", "check_api_url", "q", "render_snippet"
]

#: TLS 1.3 suites, then the TLS 1.2 ECDHE-ECDSA AEAD suites (the server key is P-256).
CIPHERS = ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256",
           "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256",
           "ECDHE-ECDSA-CHACHA20-POLY1305")
TLS_VERSIONS = ("tlsv1.3", "tlsv1.2")
#: What EMQX puts in the authentication request (keys are what iotsec reads).
AUTHN_BODY = (("clientid", "${clientid}"), ("username", "${username}"),
              ("peerhost", "${peerhost}"), ("cert_common_name", "${cert_common_name}"),
              ("cert_subject", "${cert_subject}"), ("cert_pem", "${cert_pem}"))
AUTHZ_BODY = (("clientid", "${clientid}"), ("username", "${username}"),
              ("peerhost", "${peerhost}"), ("action", "${action}"), ("topic", "${topic}"),
              ("qos", "${qos}"), ("retain", "${retain}"))
AUTHN_PATH = "/v1/emqx/authn"
AUTHZ_PATH = "/v1/emqx/authz"
_TOKEN = re.compile(r"^iotsec_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")
_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]{1,260}(/[A-Za-z0-9._~/-]{0,200})?$")


@dataclass(frozen=True, slots=True)
class EmqxConfig:
    """What the snippet needs; paths are where the files will be on the EMQX nodes."""

    api_url: str
    token: str
    bind: str
    port: int
    cacertfile: str
    certfile: str
    keyfile: str
    crl_check: bool = False
    authz_cache_ttl: str = "30s"
    request_timeout: str = "5s"

    def __post_init__(self) -> None:
        check_api_url(self.api_url)
        if not _TOKEN.fullmatch(self.token):
            raise BrokerConfigError("the broker token is not an iotsec API token",
                                    hint="create one with 'iotsec token create emqx "
                                    "--scope broker'")
        if not 1 <= self.port <= 65535:
            raise BrokerConfigError(f"port {self.port} is out of range")


def check_api_url(url: str) -> str:
    """``url`` if it is an https URL (or http on the loopback interface) of iotsec serve."""
    if not _URL.fullmatch(url):
        raise BrokerConfigError(f"--api-url {url[:80]!r} is not an http(s) URL of iotsec serve",
                                hint="e.g. --api-url https://iotsec.example.com:8443")
    if urlsplit(url).scheme != "https" and not _loopback(url):
        raise BrokerConfigError("the iotsec API must be reached over https (plain http only "
                                "on the loopback interface)",
                                hint="serve iotsec with TLS ('iotsec serve') and give an "
                                "https:// --api-url")
    return url


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("127.0.0.1", "::1", "localhost")


def q(text: str) -> str:
    """A HOCON quoted string (JSON string syntax, which HOCON accepts)."""
    return json.dumps(text, ensure_ascii=True)


def _body(fields: tuple[tuple[str, str], ...], indent: str) -> str:
    return "\n".join(f"{indent}{k} = {q(v)}" for k, v in fields)


def _http(cfg: EmqxConfig, path: str, body: tuple[tuple[str, str], ...], indent: str) -> str:
    url = cfg.api_url.rstrip("/") + path
    i = indent
    lines = [
        f"{i}enable = true",
        f"{i}method = post",
        f"{i}url = {q(url)}",
        f"{i}headers {{",
        f"{i}  \"content-type\" = \"application/json\"",
        f"{i}  \"authorization\" = {q('Bearer ' + cfg.token)}",
        f"{i}}}",
        f"{i}body {{",
        _body(body, i + "  "),
        f"{i}}}",
        f"{i}connect_timeout = {q(cfg.request_timeout)}",
        f"{i}request_timeout = {q(cfg.request_timeout)}",
        f"{i}pool_size = 8",
        f"{i}enable_pipelining = 100",
    ]
    if urlsplit(url).scheme == "https":
        host = urlsplit(url).hostname or ""
        lines += [f"{i}ssl {{", f"{i}  enable = true", f"{i}  verify = verify_peer",
                  f"{i}  cacertfile = {q(cfg.cacertfile)}"]
        if not _is_ip(host):  # SNI carries host names only; an address is checked as such
            lines.append(f"{i}  server_name_indication = {q(host)}")
        lines += [f"{i}  versions = [{', '.join(q(v) for v in TLS_VERSIONS)}]", f"{i}}}"]
    return "\n".join(lines)


def render_snippet(cfg: EmqxConfig, header: str) -> str:
    """The HOCON text; it holds the broker token, so it is written 0600/0640."""
    bind = f"[{cfg.bind}]:{cfg.port}" if ":" in cfg.bind else f"{cfg.bind}:{cfg.port}"
    ciphers = ", ".join(q(c) for c in CIPHERS)
    versions = ", ".join(q(v) for v in TLS_VERSIONS)
    crl = ("    enable_crl_check = true\n" if cfg.crl_check else
           "    # No CRL distribution point in device certificates (IOTSEC_CRL_URL unset):\n"
           "    # revocation is enforced by iotsec at authentication (expire_at bounds it).\n")
    return f"""# {header}
# It holds the broker's API token: keep it readable by EMQX only.

listeners.tcp.default.enable = false
listeners.ws.default.enable = false
listeners.wss.default.enable = false

listeners.ssl.default {{
  enable = true
  bind = {q(bind)}
  ssl_options {{
    cacertfile = {q(cfg.cacertfile)}
    certfile = {q(cfg.certfile)}
    keyfile = {q(cfg.keyfile)}
    verify = verify_peer
    fail_if_no_peer_cert = true
    versions = [{versions}]
    ciphers = [{ciphers}]
    honor_cipher_order = true
    secure_renegotiate = true
    client_renegotiation = false
    reuse_sessions = true
    depth = 3
{crl}  }}
}}

mqtt {{
  peer_cert_as_username = cn
  peer_cert_as_clientid = cn
}}

authentication = [
  {{
    mechanism = password_based
    backend = http
{_http(cfg, AUTHN_PATH, AUTHN_BODY, "    ")}
  }}
]

authorization {{
  no_match = deny
  deny_action = disconnect
  cache {{
    enable = true
    max_size = 32
    ttl = {q(cfg.authz_cache_ttl)}
  }}
  sources = [
    {{
      type = http
{_http(cfg, AUTHZ_PATH, AUTHZ_BODY, "      ")}
    }}
  ]
}}
"""
