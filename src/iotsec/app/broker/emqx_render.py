"""``iotsec broker emqx render``: the EMQX configuration snippet and the files it names.

``DIR`` receives::

    emqx-iotsec.hocon   the snippet to include from emqx.conf (holds the broker token)
    certs/ca.pem        the iotsec CA chain (devices' certificates are checked against it)
    certs/server.pem    the broker's certificate and chain (serverAuth, the given names)
    certs/server.key    its key (P-256, unencrypted: EMQX reads it unattended)
    certs/crl.pem       the CRLs of every trusted CA, for operators and external checks

Files that hold a secret (the snippet, the key) are 0600, or 0640 with the broker's group
when run as root with ``--broker-user``; the others 0644/0640. Each is replaced
atomically, so a node reading the directory never sees half a file. The server certificate
is reused while it is current and covers the names asked for (``broker_pki``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path, PurePosixPath

from iotsec.app.access.api_tokens import Scope, issue_token
from iotsec.app.broker.files import Owner, replace_shared
from iotsec.app.broker.pki import ServerNames, server_certificate
from iotsec.app.pki.authorities import authority_crl, has_crl, trusted_authorities
from iotsec.app.pki.bundles import trust_bundle_pem
from iotsec.app.runtime import Runtime
from iotsec.broker.adapter import PkiFiles
from iotsec.broker.emqx_adapter import EmqxAdapter
from iotsec.broker.emqx_conf import check_api_url
from iotsec.errors import BrokerConfigError
from iotsec.pki import x509 as enc

__all__ = [
    "MAX_TOKEN_FILE", "SNIPPET", "TOKEN_LIFETIME", "EmqxRenderOptions", "EmqxRenderResult",
    "render"
]

SNIPPET = "emqx-iotsec.hocon"
MAX_TOKEN_FILE = 1024
TOKEN_LIFETIME = timedelta(days=365)


@dataclass(frozen=True)
class EmqxRenderOptions:
    api_url: str
    port: int = 8883
    bind: str = "127.0.0.1"
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    #: Where certs/ will be on the EMQX nodes (default: DIR/certs as written).
    certs_path: Path | None = None
    broker_user: str | None = None
    token_file: Path | None = None
    issue_token: bool = False


@dataclass(frozen=True)
class EmqxRenderResult:
    directory: str
    snippet: str
    files: tuple[str, ...]
    server_certificate_issued: bool
    token_issued: str | None  # the new token's id (never the token itself)
    crl_check: bool
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _put(path: Path, data: bytes, owner: Owner, mode: int) -> None:
    replace_shared(path, data, owner, mode)  # the broker's group (as root), and the mode


def _token(rt: Runtime, options: EmqxRenderOptions) -> tuple[str, str | None]:
    if options.issue_token == (options.token_file is not None):
        raise BrokerConfigError("give --token-file FILE or --issue-token (one of them)",
                                hint="create a token with 'iotsec token create emqx --scope "
                                "broker' and save it in a 0600 file, or let render issue one")
    if options.token_file is not None:
        path = options.token_file
        try:
            if path.stat().st_mode & 0o077:
                raise BrokerConfigError(f"{path} is readable by other users",
                                        hint=f"run 'chmod 600 {path}'")
            text = path.read_bytes()[:MAX_TOKEN_FILE].decode("ascii", "replace").strip()
        except OSError as exc:
            raise BrokerConfigError(f"cannot read the token file {path}: "
                                    f"{type(exc).__name__}") from None
        return text, None
    info, token = issue_token(rt, f"emqx-{secrets.token_hex(3)}", Scope.BROKER, TOKEN_LIFETIME)
    return token, info.id


def render(rt: Runtime, directory: Path, options: EmqxRenderOptions) -> EmqxRenderResult:
    """Write the snippet and the files it names into ``directory``."""
    # Everything that can be refused is checked before a token is issued or a file written.
    check_api_url(options.api_url)
    owner = Owner.resolve(options.broker_user)
    names = ServerNames.parse(options.bind, options.dns, options.ips)
    root = directory.expanduser().absolute()
    certs = root / "certs"
    node_certs = (options.certs_path or certs).as_posix()
    token, token_id = _token(rt, options)
    crl_check = rt.settings.crl_url is not None
    adapter = EmqxAdapter(options.api_url, token, bind=options.bind, port=options.port,
                          crl_check=crl_check)
    for path in (root, certs):
        path.mkdir(mode=0o750, parents=True, exist_ok=True)
        owner.share(path, 0o750 if owner.gid is not None else 0o755)
    previous = certs if (certs / "server.pem").exists() else None
    chain, key, issued = server_certificate(rt, previous, names, options.bind)
    crls = b"".join(enc.to_pem(authority_crl(rt, a.id).der, "X509 CRL")
                    for a in trusted_authorities(rt) if a.role != "cross"
                    and not (a.key_offline and not has_crl(rt, a.id)))
    public = 0o640 if owner.gid is not None else 0o644
    _put(certs / "ca.pem", trust_bundle_pem(rt).encode("ascii"), owner, public)
    _put(certs / "server.key", key, owner, 0o640 if owner.gid is not None else 0o600)
    _put(certs / "server.pem", chain, owner, public)
    _put(certs / "crl.pem", crls, owner, public)
    snippet = root / SNIPPET
    config = adapter.render_config(PkiFiles(PurePosixPath(node_certs)))
    _put(snippet, config.encode("utf-8"), owner, 0o640 if owner.gid is not None else 0o600)
    warnings = []
    if not crl_check:
        warnings.append("IOTSEC_CRL_URL is not set: EMQX cannot check CRLs itself; revocation "
                        "is enforced when devices authenticate (within IOTSEC_EMQX_AUTHN_TTL)")
    if options.bind in ("0.0.0.0", "::") and not options.dns:  # noqa: S104
        warnings.append("no --dns given: devices must reach the broker by a name or address "
                        "the server certificate covers")
    files = tuple(str(p) for p in (snippet, certs / "ca.pem", certs / "server.pem",
                                   certs / "server.key", certs / "crl.pem"))
    return EmqxRenderResult(directory=str(root), snippet=str(snippet), files=files,
                            server_certificate_issued=issued, token_issued=token_id,
                            crl_check=crl_check, warnings=tuple(warnings))
