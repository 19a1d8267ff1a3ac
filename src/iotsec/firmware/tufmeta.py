"""TUF metadata for firmware distribution: building, parsing and checking it, without I/O.

Update metadata follows The Update Framework (TUF 1.0), written and read with the ``tuf``
package's metadata API so that any TUF client (python-tuf's ``ngclient``, go-tuf, the
device SDK in :mod:`iotsec.sdk.updater`) can verify it:

- ``root`` names the keys and threshold of every role. Its keys are meant to stay offline:
  a new root is staged here, signed on another machine, and imported once its threshold
  (and the previous root's threshold) is met.
- ``targets`` lists every published image with its length, SHA-256 and custom metadata
  (product, version, security counter, hardware, channel). Its keys may stay offline too.
- ``snapshot`` and ``timestamp`` are signed online, with keys in key custody, and re-signed
  well before they expire, so a frozen mirror is noticed within a day.

Consistent snapshots are always on: every metadata file is also published as
``VERSION.ROLE.json`` and every image as ``SHA256.NAME``, so a client never mixes files of
two repository states.

Every check here raises one :class:`~iotsec.errors.TufMetadataError` subclass: too few
signatures (:class:`TufThresholdError`), expired (:class:`TufExpiredError`), or a version
that does not move forward (:class:`TufRollbackError`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from securesystemslib.signer._key import Key, SSlibKey
from securesystemslib.signer._signature import Signature
from securesystemslib.signer._signer import Signer
from tuf.api._payload import (
    TOP_LEVEL_ROLE_NAMES,
    MetaFile,
    Role,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata
from tuf.api.serialization import DeserializationError

from iotsec.errors import (
    InputTooLargeError,
    InvalidInputError,
    KeyCustodyError,
    TufExpiredError,
    TufMetadataError,
    TufRollbackError,
    TufThresholdError,
)
from iotsec.firmware.releases import Release, check_target_path
from iotsec.pki.keys import Signer as CustodyKey

__all__ = [
    "MAX_KEYS_PER_ROLE", "MAX_METADATA", "OFFLINE_ROLES", "ONLINE_ROLES", "ROLES", "CustodySigner",
    "Expiry", "check_expiry", "check_root", "check_targets", "check_threshold", "load", "new_root",
    "new_snapshot", "new_targets", "new_timestamp", "next_root", "public_key", "role_keys",
    "role_of", "serialize", "sign", "signature_count"
]

ROOT, TARGETS, SNAPSHOT, TIMESTAMP = "root", "targets", "snapshot", "timestamp"
ROLES = (ROOT, TARGETS, SNAPSHOT, TIMESTAMP)
OFFLINE_ROLES = (ROOT, TARGETS)
ONLINE_ROLES = (SNAPSHOT, TIMESTAMP)

#: Largest metadata file per role: python-tuf ngclient's own limits, so that whatever the
#: repository accepts, every device accepts too.
MAX_METADATA = {ROOT: 512_000, TIMESTAMP: 16_384, SNAPSHOT: 2_000_000, TARGETS: 5_000_000}
#: Keys and threshold per role are bounded: more is a mistake, not a policy.
MAX_KEYS_PER_ROLE = 16


@dataclass(frozen=True)
class Expiry:
    """How long each role's metadata is valid when signed."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=90)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        for role in ROLES:
            value = self.of(role)
            if not timedelta(minutes=5) <= value <= timedelta(days=3660):
                raise InvalidInputError(f"the {role} expiry {value} is out of range",
                                        hint="use between 5 minutes and 10 years")
        if self.timestamp > self.snapshot:
            raise InvalidInputError("the timestamp must not outlive the snapshot",
                                    hint="give timestamp a shorter expiry than snapshot")

    def of(self, role: str) -> timedelta:
        value: timedelta = getattr(self, role)
        return value


# --------------------------------------------------------------------------- releases


# --------------------------------------------------------------------------- keys


def public_key(key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
               ) -> SSlibKey:
    """The TUF key for a public key: Ed25519, ECDSA P-256 or RSA (PSS, SHA-256)."""
    try:
        return SSlibKey.from_crypto(key)
    except ValueError as exc:
        raise InvalidInputError("this key type cannot sign TUF metadata",
                                hint="use an Ed25519, ECDSA P-256 or RSA key") from exc


class CustodySigner(Signer):
    """A TUF signer over a key in key custody (:mod:`iotsec.custody`): the private key never
    leaves its store. The custody interface signs ECDSA with SHA-256, which is TUF's
    ``ecdsa-sha2-nistp256`` scheme exactly (DER signature, hex-encoded)."""

    def __init__(self, key: CustodyKey) -> None:
        public = key.public_key()
        if not (isinstance(public, ec.EllipticCurvePublicKey)
                and isinstance(public.curve, ec.SECP256R1)):
            raise InvalidInputError("online TUF keys in custody are ECDSA P-256")
        self._key = key
        self._public = SSlibKey.from_crypto(public)

    @property
    def public_key(self) -> Key:
        return self._public

    @classmethod
    def from_priv_key_uri(cls, priv_key_uri: str, public_key: Key,
                          secrets_handler: Any = None) -> Signer:
        # Part of securesystemslib's Signer interface; these keys never come from a URI.
        raise KeyCustodyError("online TUF keys are loaded from iotsec's key custody, not "
                              "from a key URI", hint="use 'iotsec ota repo' commands")

    def sign(self, payload: bytes) -> Signature:
        return Signature(self._public.keyid, self._key.sign(payload).hex())


# --------------------------------------------------------------------------- parsing


def load(data: bytes, role: str) -> Metadata[Any]:
    """Parse metadata of ``role`` (size-limited before parsing); never trusts it."""
    if role not in MAX_METADATA:
        raise TufMetadataError(f"unknown TUF role {role[:20]!r}")
    if len(data) > MAX_METADATA[role]:
        raise InputTooLargeError(f"{role} metadata is {len(data)} bytes; the limit is "
                                 f"{MAX_METADATA[role]}")
    try:
        md: Metadata[Any] = Metadata.from_bytes(data)
    except (DeserializationError, ValueError, TypeError, KeyError) as exc:
        raise TufMetadataError(f"not valid TUF {role} metadata") from exc
    if md.signed.type != role:
        raise TufMetadataError(f"this is {md.signed.type} metadata, not {role}",
                               hint=f"give the {role} metadata file")
    return md


def role_of(data: bytes) -> str:
    """Which top-level role a metadata file claims to be (before it is trusted)."""
    if len(data) > max(MAX_METADATA.values()):
        raise InputTooLargeError("the metadata file is too large")
    try:
        kind = json.loads(data)["signed"]["_type"]
    except (ValueError, KeyError, TypeError) as exc:
        raise TufMetadataError("not a TUF metadata file") from exc
    if kind not in ROLES:
        raise TufMetadataError(f"unknown TUF role {str(kind)[:20]!r}")
    return str(kind)


def check_expiry(md: Metadata[Any], now: datetime) -> None:
    if md.signed.is_expired(now):
        raise TufExpiredError(f"{md.signed.type} metadata version {md.signed.version} "
                              f"expired at {md.signed.expires.isoformat()}")


def check_threshold(delegator: Root, role: str, md: Metadata[Any], *,
                    what: str | None = None) -> None:
    """At least the threshold of ``role``'s keys (per ``delegator``) signed ``md``."""
    result = delegator.get_verification_result(role, md.signed_bytes, md.signatures)
    if not result.verified:
        raise TufThresholdError(f"{what or role} metadata version {md.signed.version} is "
                                f"signed by {len(result.signed)} of the {result.threshold} "
                                f"required {role} keys")


def signature_count(delegator: Root, role: str, md: Metadata[Any]) -> tuple[int, int]:
    """``(valid signatures, threshold)`` of ``md`` for ``role``."""
    result = delegator.get_verification_result(role, md.signed_bytes, md.signatures)
    return len(result.signed), result.threshold


def check_root(previous: Root | None, md: Metadata[Root], now: datetime) -> None:
    """A new root is the next version, signed by the thresholds of both the previous root
    and itself (TUF 5.3.4-5.3.5), and not expired."""
    new = md.signed
    if previous is not None and new.version != previous.version + 1:
        raise TufRollbackError(f"root version {new.version} does not follow the trusted "
                               f"version {previous.version}")
    if previous is None and new.version != 1:
        raise TufRollbackError("the first root must be version 1")
    if previous is not None:
        check_threshold(previous, ROOT, md, what="root (by the previous root's keys)")
    check_threshold(new, ROOT, md)
    check_expiry(md, now)


def check_targets(root: Root, current_version: int, md: Metadata[Targets],
                  now: datetime) -> None:
    """New targets metadata: signed to threshold, a newer version, not expired, and every
    target an iotsec release."""
    check_threshold(root, TARGETS, md)
    if md.signed.version <= current_version:
        raise TufRollbackError(f"targets version {md.signed.version} is not newer than the "
                               f"published version {current_version} (replayed?)")
    check_expiry(md, now)
    if md.signed.delegations is not None:
        raise TufMetadataError("delegated targets roles are not used by this repository")
    for path, target in md.signed.targets.items():
        check_target_path(path)
        Release.from_custom(target.custom)


# --------------------------------------------------------------------------- building


def _expires(now: datetime, delta: timedelta) -> datetime:
    return (now + delta).replace(microsecond=0)


def _role(keys: Iterable[Key], threshold: int, role: str) -> Role:
    ids = sorted({k.keyid for k in keys})
    if not 1 <= threshold <= len(ids):
        raise InvalidInputError(f"the {role} threshold {threshold} needs between 1 and "
                                f"{len(ids)} keys", hint=f"give at least {threshold} {role} keys")
    if len(ids) > MAX_KEYS_PER_ROLE:
        raise InvalidInputError(f"a role has at most {MAX_KEYS_PER_ROLE} keys")
    return Role(ids, threshold)


def new_root(*, keys: Mapping[str, Iterable[Key]], thresholds: Mapping[str, int],
             now: datetime, expiry: Expiry, version: int = 1) -> Metadata[Root]:
    """Unsigned root metadata naming ``keys[role]`` with ``thresholds[role]`` for every role."""
    if set(keys) != TOP_LEVEL_ROLE_NAMES:
        raise InvalidInputError("every top-level role needs keys")
    all_keys: dict[str, Key] = {}
    roles: dict[str, Role] = {}
    for role in ROLES:
        listed = list(keys[role])
        roles[role] = _role(listed, thresholds.get(role, 1), role)
        for key in listed:
            all_keys[key.keyid] = key
    if set(roles[ROOT].keyids) & (set(roles[SNAPSHOT].keyids) | set(roles[TIMESTAMP].keyids)):
        raise InvalidInputError("a root key must not also be an online key",
                                hint="keep root keys offline, apart from timestamp/snapshot")
    root = Root(version=version, expires=_expires(now, expiry.root), keys=all_keys,
                roles=roles, consistent_snapshot=True)
    return Metadata(root)


def role_keys(root: Root, role: str) -> list[Key]:
    return [root.keys[k] for k in root.roles[role].keyids if k in root.keys]


def next_root(current: Root, *, now: datetime, expiry: Expiry,
              replace: Mapping[str, Iterable[Key]] | None = None,
              thresholds: Mapping[str, int] | None = None) -> Metadata[Root]:
    """The next root version: the same keys, except the roles in ``replace``."""
    keys = {role: role_keys(current, role) for role in ROLES}
    for role, new in (replace or {}).items():
        keys[role] = list(new)
    limits = {role: current.roles[role].threshold for role in ROLES}
    limits.update(thresholds or {})
    return new_root(keys=keys, thresholds=limits, now=now, expiry=expiry,
                    version=current.version + 1)


def new_targets(previous: Targets | None, *, now: datetime, expiry: Expiry,
                add: Iterable[TargetFile] = ()) -> Metadata[Targets]:
    """The next targets version: everything ``previous`` lists, plus ``add``."""
    targets = dict(previous.targets) if previous is not None else {}
    for target in add:
        check_target_path(target.path)
        targets[target.path] = target
    version = previous.version + 1 if previous is not None else 1
    return Metadata(Targets(version=version, expires=_expires(now, expiry.targets),
                            targets=targets))


def new_snapshot(version: int, targets_version: int, *, now: datetime,
                 expiry: Expiry) -> Metadata[Snapshot]:
    return Metadata(Snapshot(version=version, expires=_expires(now, expiry.snapshot),
                             meta={"targets.json": MetaFile(version=targets_version)}))


def new_timestamp(version: int, snapshot_version: int, snapshot_bytes: bytes, *,
                  now: datetime, expiry: Expiry) -> Metadata[Timestamp]:
    """Timestamp metadata naming the snapshot by version, length and SHA-256, so a client
    refuses any other snapshot file served under that name."""
    meta = MetaFile.from_data(snapshot_version, snapshot_bytes, ["sha256"])
    return Metadata(Timestamp(version=version, expires=_expires(now, expiry.timestamp),
                              snapshot_meta=meta))


def sign(md: Metadata[Any], signers: Iterable[Signer]) -> Metadata[Any]:
    """Add a signature by each signer (existing signatures of other keys are kept)."""
    for signer in signers:
        try:
            md.sign(signer, append=True)
        except UnsignedMetadataError as exc:
            raise TufThresholdError(f"could not sign {md.signed.type} metadata") from exc
    return md


def serialize(md: Metadata[Any]) -> bytes:
    """The bytes published for ``md`` (python-tuf's compact JSON)."""
    return md.to_bytes()
