"""Typed settings, read from the environment (``IOTSEC_*``).

The variables are read by :class:`EnvSettings` itself (a pydantic model; names matched in any
case, lists given as JSON), as pydantic-settings would read them: every command reads its
settings, and this keeps that loader and its sources out of each command's start-up.

The embedded default keeps everything inside ``$IOTSEC_HOME`` (``./.iotsec``): a SQLite
database in WAL mode, the CA keys (encrypted PKCS#8) and, unless ``IOTSEC_CA_PASSPHRASE``
is given, a generated passphrase in a 0600 file. ``IOTSEC_DATABASE_URL`` moves the store
to PostgreSQL, so that several stateless ``iotsec serve`` processes can share it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from iotsec.errors import ConfigError

__all__ = ["EnvSettings", "NotJsonError", "Settings", "environment_values", "settings_error"]

_KINDS: dict[Any, str] = {int: "a whole number", float: "a number", bool: "true or false",
                          list: "a JSON list", str: "text", Path: "a path"}
_BOUNDS: tuple[tuple[type, str], ...] = ((Ge, "ge"), (Gt, "gt"), (Le, "le"), (Lt, "lt"),
                                         (MinLen, "min_length"), (MaxLen, "max_length"))


def _allowed(field: FieldInfo | None, error: ErrorDetails | None) -> str:
    """What a setting accepts, in words: its kind, then its range, length or pattern."""
    if error is not None and error["type"] == "literal_error":
        return f"one of {error.get('ctx', {}).get('expected', '')}"
    annotation = field.annotation if field is not None else None
    # An optional setting (``str | None``) is described by what it holds when set.
    held = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(held) == 1:
        annotation = held[0]
    parts = [_KINDS.get(get_origin(annotation) or annotation, "a valid value")]
    bounds: dict[type, Any] = {}
    for item in field.metadata if field is not None else ():
        for kind, attribute in _BOUNDS:
            if isinstance(item, kind):
                bounds[kind] = getattr(item, attribute)
        if getattr(item, "pattern", None):
            parts.append(f"matching {item.pattern}")
    low = (f">= {bounds[Ge]}" if Ge in bounds else f"> {bounds[Gt]}" if Gt in bounds else "")
    high = (f"<= {bounds[Le]}" if Le in bounds else f"< {bounds[Lt]}" if Lt in bounds else "")
    if Ge in bounds and Le in bounds:
        parts.append(f"between {bounds[Ge]} and {bounds[Le]}")
    elif low or high:
        parts.append(" and ".join(x for x in (low, high) if x))
    if MinLen in bounds or MaxLen in bounds:
        parts.append(f"of {bounds.get(MinLen, 0)} to {bounds.get(MaxLen, 'any number of')} "
                     "characters")
    return " ".join(parts)


class NotJsonError(ValueError):
    """The variable of a list setting does not hold JSON (its field's name in ``name``)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the value of {name} is not JSON")
        self.name = name


def settings_error(model: type[EnvSettings], exc: ValidationError | NotJsonError,
                   given: dict[str, Any]) -> ConfigError:
    """One clear line for settings that cannot be used: the variable (or the option given
    in code), its value unless it is a secret, and what is allowed."""
    prefix = model.env_prefix
    error: ErrorDetails | None = None
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        error = errors[0]
        name = str(error["loc"][0]) if error["loc"] else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    else:
        name, more = exc.name, ""
    field = model.model_fields.get(name)
    var = name if name in given else f"{prefix}{name}".upper()
    secret = field is not None and "SecretStr" in repr(field.annotation)
    value = given.get(name) if name in given else error["input"] if error else None
    shown = "" if secret or value is None else f"={str(value)[:60]!r}"
    return ConfigError(f"setting {var}{shown} is not valid: it must be "
                       f"{_allowed(field, error)}{more}",
                       hint=f"correct the value given for {var}" if name in given
                       else f"correct or unset {var}")


_COLLECTIONS = (list, tuple, set, frozenset, dict)


def _is_collection(annotation: Any) -> bool:
    """Whether a field holds a collection (given in its variable as JSON), also when it is
    optional (``list[str] | None``)."""
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        return any(_is_collection(a) for a in get_args(annotation))
    return origin in _COLLECTIONS or annotation in _COLLECTIONS


def environment_values(model: type[EnvSettings], environ: Mapping[str, str] | None = None
                       ) -> dict[str, Any]:
    """The values of ``model``'s fields given in the environment: the variable named
    ``env_prefix`` + the field name, in any case; a collection's value decoded from JSON.
    Raises :class:`NotJsonError` when it is not JSON."""
    wanted = {f"{model.env_prefix}{name}".lower(): name for name in model.model_fields}
    values: dict[str, Any] = {}
    for key, value in (os.environ if environ is None else environ).items():
        name = wanted.get(key.lower())
        if name is None:
            continue
        if _is_collection(model.model_fields[name].annotation):
            try:
                values[name] = json.loads(value)
            except ValueError:
                raise NotJsonError(name) from None
        else:
            values[name] = value
    return values


class EnvSettings(BaseModel):
    """Settings read from the environment (variables named :attr:`env_prefix` + the field
    name, in any case); values given to the constructor win. A value that is not allowed is
    a :class:`~iotsec.errors.ConfigError` that names it and says what is allowed."""

    #: The prefix of this model's variables.
    env_prefix: ClassVar[str] = ""
    model_config = ConfigDict(extra="ignore", validate_default=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**{**environment_values(type(self)), **values})
        except (ValidationError, NotJsonError) as exc:
            raise settings_error(type(self), exc, values) from None


class Settings(EnvSettings):
    env_prefix: ClassVar[str] = "IOTSEC_"

    home: Path = Field(default=Path(".iotsec"), description="the iotsec home directory")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store; default: SQLite inside the home",
    )
    ca_passphrase: SecretStr | None = Field(
        default=None,
        description="passphrase protecting the CA keys; default: a generated one in the home",
    )

    crl_lifetime_hours: int = Field(default=168, ge=2, le=24 * 365,
                                    description="nextUpdate - thisUpdate of published CRLs")
    crl_refresh_hours: int = Field(default=24, ge=1, le=24 * 365,
                                   description="rebuild a CRL at least this often")

    hot_cache_seconds: float = Field(
        default=1.0, ge=0, le=60,
        description="how long a serving process may reuse a token lookup or the policy "
        "version before reading the store again (revocations in the same process apply at "
        "once; in other processes within this delay, or on PostgreSQL as soon as they "
        "commit, through the change feed)")
    device_dns_names: list[str] = Field(
        default_factory=list,
        description="DNS SANs for device certificates, as templates with {device_id} "
        "(JSON list, e.g. [\"{device_id}.devices.example.com\"])")
    auth_failure_limit: int = Field(default=10, ge=1, le=1_000_000,
                                    description="failed API authentications per source and "
                                    "minute before that source is refused for a minute")
    console_idle_minutes: int = Field(
        default=30, ge=1, le=24 * 60,
        description="a web console session unused this long ends (sign in again)")
    console_absolute_hours: int = Field(
        default=12, ge=1, le=24 * 7,
        description="a web console session ends this long after sign-in, however active")
    campaign_tick_seconds: float = Field(
        default=60.0, ge=0, le=86_400,
        description="how often 'iotsec serve' evaluates running update campaigns (device "
        "timeouts, waves, failure thresholds); 0 turns it off")
    alert_webhook_url: str | None = Field(
        default=None, pattern=r"^https?://[\x21-\x7e]{1,2000}$",
        description="where alerts are POSTed as JSON (https, or http to a loopback address "
        "only), signed with IOTSEC_ALERT_WEBHOOK_SECRET")
    alert_webhook_secret: SecretStr | None = Field(
        default=None, min_length=16,
        description="the HMAC-SHA256 key of the X-Iotsec-Signature header of alert webhooks")
    alert_webhook_ca: Path | None = Field(
        default=None, description="CA certificates (PEM) the alert webhook's server "
        "certificate must chain to (default: the system's)")
    alert_syslog: str | None = Field(
        default=None, pattern=r"^(udp|tcp|tls)://[A-Za-z0-9.:\[\]_-]{1,255}:[0-9]{1,5}$",
        description="where alerts are sent as RFC 5424 syslog messages: udp://HOST:PORT, "
        "tcp://HOST:PORT (RFC 6587 octet counting) or tls://HOST:PORT (RFC 5425); tcp and "
        "udp only to a loopback address")
    alert_syslog_ca: Path | None = Field(
        default=None, description="CA certificates (PEM) the syslog server's certificate "
        "must chain to for tls:// (default: the system's)")
    alert_smtp_url: str | None = Field(
        default=None, pattern=r"^smtp://[A-Za-z0-9.:\[\]_-]{1,255}(:[0-9]{1,5})?$",
        description="the SMTP server alerts are mailed through (STARTTLS is required, "
        "except to a loopback address)")
    alert_smtp_ca: Path | None = Field(
        default=None, description="CA certificates (PEM) the SMTP server's certificate must "
        "chain to (default: the system's)")
    alert_smtp_from: str | None = Field(
        default=None, pattern=r"^[^\s@<>]{1,64}@[A-Za-z0-9.-]{1,255}$",
        description="the sender address of alert mails")
    alert_smtp_to: list[str] = Field(
        default_factory=list, description="the recipients of alert mails (JSON list)")
    alert_smtp_user: str | None = Field(default=None, max_length=256,
                                        description="SMTP login, after STARTTLS")
    alert_smtp_password: SecretStr | None = Field(default=None,
                                                  description="SMTP password")
    alert_expiry_days: int = Field(
        default=30, ge=1, le=3650,
        description="certificates expiring within this many days raise the cert.expiring "
        "alert (CAs: three times as long)")
    alert_audit_hours: float = Field(
        default=24.0, ge=0, le=8760,
        description="how often the scheduled checks run the fleet audit and raise an alert "
        "for each finding at or above IOTSEC_ALERT_AUDIT_SEVERITY; 0 turns it off")
    alert_audit_severity: Literal["critical", "high", "medium", "low"] = Field(
        default="high",
        description="the lowest severity of an audit finding that the scheduled audit "
        "raises as an alert")
    alert_tick_seconds: float = Field(
        default=60.0, ge=0, le=86_400,
        description="how often 'iotsec serve' runs the scheduled alert checks and retries "
        "alert deliveries; 0 turns both off")
    detect_tick_seconds: float = Field(
        default=0.2, ge=0, le=60,
        description="how often the detector in 'iotsec serve' reads the broker log "
        "(IOTSEC_BROKER_DIR/run/mosquitto.log) and the EMQX hook events when idle; 0 turns "
        "detection, and the lease that elects one server to run it, off")
    detect_lease_seconds: float = Field(
        default=6.0, ge=2, le=300,
        description="how long the detector lease lasts without renewal: another 'iotsec "
        "serve' takes detection and the scheduled checks over this long after the holder "
        "stops")
    event_checkpoint_seconds: float = Field(
        default=60.0, ge=0, le=86_400,
        description="how often 'iotsec serve' signs a checkpoint of the event chain with the "
        "audit key, when events were added since the last one; 0 turns it off")
    quarantine_topic: str = Field(
        default="quarantine", pattern=r"^[A-Za-z0-9_.-]{1,64}(/[A-Za-z0-9_.-]{1,64}){0,3}$",
        description="a quarantined device may reach only <prefix>/<device-id>/# (unless a "
        "role named 'quarantine' in the store says otherwise)")
    quarantine_max_devices: int = Field(
        default=25, ge=1, le=1_000_000,
        description="'incident quarantine' refuses a selection of more devices than this "
        "unless the exact count is confirmed (--confirm-count)")
    broker_dir: Path | None = Field(
        default=None,
        description="a Mosquitto directory made by 'iotsec broker mosquitto render': "
        "'iotsec serve' keeps it in sync (ACL, CRL before its nextUpdate) in the background")
    crl_url: str | None = Field(
        default=None, pattern=r"^https?://[\x21-\x7e]{1,2000}$",
        description="public URL of the CRL (e.g. https://pki.example.com/crl); when set, "
        "device certificates carry it with ?ca=<id> (their CA) as their CRL distribution "
        "point")
    crl_delta_hours: int = Field(
        default=24, ge=1, le=24 * 365,
        description="nextUpdate - thisUpdate of delta CRLs; a delta CRL is re-signed after "
        "half of it, and at once after a revocation")
    crl_delta_max_entries: int = Field(
        default=10_000, ge=1, le=1_000_000,
        description="when a delta CRL would list more revocations than this, the complete "
        "CRL it completes is re-issued first (relying parties fetch the new base)")
    crl_partitions: int = Field(
        default=0, ge=0, le=4096,
        description="split device certificates over this many partition CRLs, each named by "
        "the CDP of its certificates (<IOTSEC_CRL_URL>/p/<k>?ca=<id>); 0 or 1: off. Needs "
        "IOTSEC_CRL_URL; raise it later if needed, never lower it (certificates keep the "
        "partition they were issued with)")
    public_url: str | None = Field(
        default=None, pattern=r"^http://([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
        r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]{2,45}\])"
        r"(:[0-9]{1,5})?/?$",
        description="origin of the public plain-HTTP listener ('iotsec serve "
        "--public-http-port'), as relying parties reach it: http://HOST[:PORT], no path; "
        "when set, issued certificates carry its /ocsp (AIA) and /ca/<id>.der "
        "(caIssuers) and, unless IOTSEC_CRL_URL is set, its /crl?ca=<id> as CRL "
        "distribution point, <id> being their CA's")
    ocsp_signer: Literal["responder", "ca"] = Field(
        default="responder",
        description="who signs OCSP answers: 'responder' (a delegated OCSP certificate per "
        "CA, short-lived and rotated by 'iotsec serve') or 'ca' (the CA key itself)")
    ocsp_validity_hours: int = Field(
        default=24, ge=1, le=48,
        description="nextUpdate - thisUpdate of OCSP answers; an answer without a nonce is "
        "signed once and re-signed when half of this has passed or a revocation changes it")

    deployment: str = Field(
        default="iotsec", pattern=r"^[\x21-\x7e]{1,256}$",
        description="name of this deployment: the audience ('aud') every device JWT must "
        "name, so a token made for one deployment is refused by another")
    device_token_max_lifetime: int = Field(
        default=3600, ge=60, le=86400,
        description="longest accepted lifetime (exp - iat) of a device JWT, in seconds")

    renew_after_expiry: int = Field(
        default=0, ge=0, le=90 * 86400,
        description="seconds after its notAfter during which a device may still re-enrol "
        "over EST with its expired certificate (0: never; at most 90 days)")
    renew_grace: int = Field(
        default=86400, ge=0, le=90 * 86400,
        description="seconds a certificate replaced by an EST re-enrolment stays valid "
        "before it is revoked as superseded (at most 90 days)")
    est_retry_after: int = Field(
        default=60, ge=1, le=86400,
        description="seconds an EST client waiting for an operator's approval is told to "
        "wait before asking again (Retry-After)")

    keystore: Literal["file", "pkcs11"] = Field(
        default="file",
        description="where new CA and key-encryption keys are generated: 'file' (encrypted "
        "PKCS#8 and KEK files in the home) or 'pkcs11' (non-extractable keys in a token)")
    pkcs11_module: Path | None = Field(
        default=None,
        description="path of the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so)")
    pkcs11_token: str | None = Field(
        default=None, min_length=1, max_length=32,
        description="label of the PKCS#11 token holding iotsec's keys")
    pkcs11_pin: SecretStr | None = Field(
        default=None,
        description="user PIN of the PKCS#11 token (from the environment only, never logged)")

    @property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def store_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_home / 'iotsec.db'}"

    @property
    def keys_dir(self) -> Path:
        return self.resolved_home / "keys"

    @property
    def passphrase_file(self) -> Path:
        return self.resolved_home / "ca-passphrase"

    @property
    def server_dir(self) -> Path:
        return self.resolved_home / "server"

    @property
    def ocsp_dir(self) -> Path:
        return self.resolved_home / "ocsp"

    @property
    def public_base(self) -> str | None:
        """IOTSEC_PUBLIC_URL without a trailing slash."""
        return self.public_url.rstrip("/") if self.public_url else None
