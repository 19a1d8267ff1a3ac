"""``iotsec init``: a new home with its store, CA hierarchy and first admin token."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, insert, inspect, select

from iotsec.access.policy import default_device_role
from iotsec.app.access.api_tokens import Scope, create_token
from iotsec.app.access.roles import write_role
from iotsec.app.runtime import Runtime, utcnow
from iotsec.app.store_location import with_remembered_database
from iotsec.config import Settings
from iotsec.custody.home import open_key_store, remember_keystore, with_remembered_keystore
from iotsec.errors import ConflictError
from iotsec.pki.ca import Authority, create_issuing, create_root
from iotsec.pki.keys import KeyType
from iotsec.store import models as m
from iotsec.store.db import make_engine, reading, transaction
from iotsec.store.migrate import upgrade
from iotsec.timeutil import ts

__all__ = ["BOOTSTRAP_TOKEN_DAYS", "InitResult", "init_home"]

#: Lifetime of the admin token 'iotsec init' prints.
BOOTSTRAP_TOKEN_DAYS = 90


@dataclass(frozen=True)
class InitResult:
    home: str
    root: Authority
    issuing: Authority
    admin_token: str | None
    created: bool


def _initialised(engine: Engine) -> bool:
    """Whether the store already holds a CA hierarchy."""
    with reading(engine) as conn:
        if not inspect(conn).has_table(m.authorities.name):
            return False
        return bool(conn.execute(select(func.count()).select_from(m.authorities)).scalar())


def init_home(settings: Settings, *, key_type: KeyType = KeyType.ECDSA_P256,
              now: datetime | None = None, exist_ok: bool = False) -> InitResult:
    """Create (or, with ``exist_ok``, reuse) a home: migrate the store, make the CAs."""
    now = now or utcnow()
    settings = with_remembered_database(settings)
    home = settings.resolved_home
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = make_engine(settings.store_url)
    try:
        # Checked before anything is written: a refused init changes nothing, neither the
        # schema nor the home's record of its keystore (which every later command reads).
        if _initialised(engine):
            if not exist_ok:
                raise ConflictError(f"{home} is already initialised",
                                    hint="use it as it is, or choose another IOTSEC_HOME")
            upgrade(engine)
            settings = with_remembered_keystore(settings)
            rt = Runtime(settings=settings, engine=engine, keys=open_key_store(settings),
                         clock=lambda: now)
            return InitResult(home=str(home), root=rt.authority("root"),
                              issuing=rt.authority("issuing"), admin_token=None, created=False)
        upgrade(engine)
        keys = open_key_store(settings, create_passphrase=True)
        remember_keystore(settings)
        tag = secrets.token_hex(4)
        root_signer = keys.generate(f"root-{tag}", key_type)
        root = Authority.from_der(create_root(root_signer, now, label=tag), root_signer)
        issuing_signer = keys.generate(f"issuing-{tag}", key_type)
        issuing = Authority.from_der(create_issuing(root, issuing_signer, now, label=tag),
                                     issuing_signer)
        with transaction(engine) as conn:
            root_id = conn.execute(insert(m.authorities).values(
                role="root", parent_id=None, key_label=f"root-{tag}", key_type=key_type.value,
                subject=root.certificate.subject.rfc4514_string(), cert_der=root.der,
                not_after=ts(root.not_after), active=True, created_at=ts(now),
            ).returning(m.authorities.c.id)).scalar_one()
            issuing_id = conn.execute(insert(m.authorities).values(
                role="issuing", parent_id=root_id, key_label=f"issuing-{tag}",
                key_type=key_type.value, subject=issuing.certificate.subject.rfc4514_string(),
                cert_der=issuing.der, not_after=ts(issuing.not_after), active=True,
                created_at=ts(now),
            ).returning(m.authorities.c.id)).scalar_one()
            for authority_id in (root_id, issuing_id):
                conn.execute(insert(m.crls).values(authority_id=authority_id, number=0,
                                                   this_update=0, next_update=0, stale=True,
                                                   der=None))
            write_role(conn, default_device_role(), ts(now), replace=False)
            # The bootstrap token expires like any other (audit/token-no-expiry); on the
            # host, 'iotsec token create' mints the next one without a token.
            token = create_token(conn, name="admin", scope=Scope.ADMIN, now=ts(now),
                                 expires_at=ts(now) + BOOTSTRAP_TOKEN_DAYS * 86_400)
        return InitResult(home=str(home), root=root, issuing=issuing, admin_token=token,
                          created=True)
    finally:
        engine.dispose()
