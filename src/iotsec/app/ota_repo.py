"""The TUF update repository in the home (``$IOTSEC_HOME/tuf``): create it, publish images,
stage metadata for offline signing, import what was signed, and keep the online roles fresh.

Layout (what an HTTP server, or ``/v1/ota/tuf/...``, serves as is)::

    tuf/config.json                 expiry per role, online key labels, trusted image keys
    tuf/metadata/N.root.json        every root version (clients walk them one by one)
    tuf/metadata/root.json          the newest root
    tuf/metadata/N.targets.json     consistent snapshots: every version under its number
    tuf/metadata/N.snapshot.json
    tuf/metadata/timestamp.json     the only file whose name never changes
    tuf/targets/PRODUCT/SHA256.NAME images and channel pointers, named by their hash
    tuf/staged/N.ROLE.json          root or targets metadata waiting for offline signatures

Root and targets keys never enter the home: their holders sign staged files elsewhere
(``iotsec ota metadata sign``) and the result is imported (``iotsec ota metadata import``),
or they pass their key files to a command that signs on the spot. Snapshot and timestamp
keys are online, in key custody (:mod:`iotsec.keys`, encrypted at rest), and are rotated
by staging a new root that names fresh ones.

Every change holds an exclusive lock on ``tuf/.lock``; files are replaced atomically and
the timestamp is written last, so a client never sees a half-published state.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from securesystemslib.signer._crypto_signer import CryptoSigner
from securesystemslib.signer._key import Key
from securesystemslib.signer._signer import Signer
from sqlalchemy import insert
from tuf.api._payload import Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.metadata import Metadata

from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.errors import (
    ConflictError,
    FirmwareKeyError,
    InvalidInputError,
    NotFoundError,
    OtaRepositoryError,
    ReleaseDowngradeError,
    TufMetadataError,
    TufThresholdError,
)
from iotsec.firmware import tufmeta as t
from iotsec.firmware.keys import MAX_KEY_FILE, TrustedKey, public_pem
from iotsec.firmware.verify import verify_image
from iotsec.keys.base import KeyType
from iotsec.keys.file import write_private_file
from iotsec.store import models as m
from iotsec.store.db import transaction
from iotsec.timeutil import ts

_METADATA_NAME = re.compile(
    r"(?:[1-9][0-9]{0,9}\.)?(root|targets|snapshot|timestamp)\.json")
#: Largest image the repository accepts (the MCUboot format's own limit is 4 GiB).
MAX_IMAGE = 4 * 1024**3
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class KeyFile:
    """A TUF key given to a command: its public key, and a signer when the private key was
    given (and unlocked)."""

    public: Key
    signer: Signer | None = None


@dataclass(frozen=True)
class Outcome:
    """What a repository command did: files published, and files left staged."""

    published: tuple[str, ...] = ()
    staged: tuple[tuple[str, str], ...] = ()  # (path, "n of m signatures")
    release: t.Release | None = None


@dataclass
class _Config:
    expiry: t.Expiry
    online: dict[str, str]
    pending_online: dict[str, dict[str, str]] = field(default_factory=dict)
    firmware_keys: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps({
            "format": 1,
            "expiry": {r: int(self.expiry.of(r).total_seconds()) for r in t.ROLES},
            "online": self.online, "pending_online": self.pending_online,
            "firmware_keys": self.firmware_keys}, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> _Config:
        try:
            doc = json.loads(data)
            expiry = t.Expiry(**{r: timedelta(seconds=int(doc["expiry"][r])) for r in t.ROLES})
            return cls(expiry=expiry, online=dict(doc["online"]),
                       pending_online={str(k): dict(v)
                                       for k, v in doc.get("pending_online", {}).items()},
                       firmware_keys=list(doc["firmware_keys"]))
        except (ValueError, KeyError, TypeError, InvalidInputError) as exc:
            raise OtaRepositoryError("the repository configuration is corrupt",
                                     hint="restore tuf/config.json from backup") from exc


# --------------------------------------------------------------------------- key files


def _read_key(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_KEY_FILE:
            raise FirmwareKeyError(f"key file {path} is larger than {MAX_KEY_FILE} bytes")
        with path.open("rb") as fh:
            return fh.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise NotFoundError(f"key file {path} does not exist", hint="check the path") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a directory", hint="give a key file") from None


def load_key_file(path: Path, passphrase: Any) -> KeyFile:
    """A public key file, or an encrypted private key (``passphrase()`` is asked for only
    then): Ed25519, ECDSA P-256 or RSA, PEM."""
    data = _read_key(path)
    if b"PRIVATE KEY-----" not in data:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise FirmwareKeyError(f"{path} is not a PEM key") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
                          | rsa.RSAPublicKey):
            raise FirmwareKeyError(f"{path}: this key type cannot sign TUF metadata")
        return KeyFile(t.public_key(key))
    if b"ENCRYPTED" not in data:
        raise FirmwareKeyError(f"the private key {path} is not encrypted",
                               hint="encrypt it with 'iotsec firmware import-key'")
    try:
        private = serialization.load_pem_private_key(data, password=passphrase())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise FirmwareKeyError(f"cannot decrypt the key {path}",
                               hint="check the passphrase (IOTSEC_TUF_KEY_PASSPHRASE)") from None
    if not isinstance(private, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
                      | rsa.RSAPrivateKey):
        raise FirmwareKeyError(f"{path}: this key type cannot sign TUF metadata")
    public = t.public_key(private.public_key())
    return KeyFile(public, CryptoSigner(private, public))


def sign_metadata(data: bytes, signers: Sequence[Signer]) -> tuple[bytes, str]:
    """Add signatures to a staged metadata file (on the offline machine: no home needed).
    Returns the new bytes and the role."""
    if not signers:
        raise InvalidInputError("no private key to sign with", hint="give --key KEY")
    role = t.role_of(data)
    md = t.load(data, role)
    if role not in t.OFFLINE_ROLES:
        raise TufMetadataError(f"{role} metadata is signed online, by the server")
    return t.serialize(t.sign(md, signers)), role


# --------------------------------------------------------------------------- files


class _Repo:
    """Paths and atomic file access of one repository directory."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.dir = rt.settings.resolved_home / "tuf"
        self.metadata = self.dir / "metadata"
        self.targets = self.dir / "targets"
        self.staged = self.dir / "staged"
        self.config_path = self.dir / "config.json"

    @property
    def exists(self) -> bool:
        return self.config_path.exists()

    def config(self) -> _Config:
        if not self.exists:
            raise OtaRepositoryError(f"there is no update repository in {self.dir}")
        return _Config.from_json(self.config_path.read_bytes()[:1_000_000])

    def save_config(self, config: _Config) -> None:
        write_private_file(self.config_path, config.to_json(), overwrite=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def read(self, name: str, role: str) -> Metadata[Any] | None:
        path = self.metadata / name
        if not path.exists():
            return None
        with path.open("rb") as fh:
            return t.load(fh.read(t.MAX_METADATA[role] + 1), role)

    def root(self) -> Metadata[Root] | None:
        return self.read("root.json", t.ROOT)

    def trusted_root(self) -> Root:
        root = self.root()
        if root is None:
            raise OtaRepositoryError("the repository has no signed root yet",
                                     hint="sign the staged root ('iotsec ota repo status' "
                                     "lists it) and import it")
        signed: Root = root.signed
        return signed

    def targets_md(self) -> Metadata[Targets] | None:
        return self.read("targets.json", t.TARGETS)

    def staged_path(self, role: str) -> Path | None:
        found = sorted(self.staged.glob(f"*.{role}.json"),
                       key=lambda p: int(p.name.split(".")[0]) if p.name[0].isdigit() else 0)
        return found[-1] if found else None

    def target_file(self, path: str, sha256: str) -> Path:
        directory, _, name = t.check_target_path(path).rpartition("/")
        return self.targets / directory / f"{sha256}.{name}"

    def publish_metadata(self, md: Metadata[Any], *, versioned: bool = True) -> bytes:
        data = t.serialize(md)
        role = md.signed.type
        if versioned:
            self.write(self.metadata / f"{md.signed.version}.{role}.json", data)
        self.write(self.metadata / f"{role}.json", data)
        return data


def _signers(keys: Iterable[KeyFile]) -> list[Signer]:
    return [k.signer for k in keys if k.signer is not None]


def _online_signer(rt: Runtime, label: str) -> Signer:
    return t.CustodySigner(rt.keys.load(label))


def _new_online_keys(rt: Runtime) -> dict[str, str]:
    tag = secrets.token_hex(4)
    labels = {role: f"tuf-{role}-{tag}" for role in t.ONLINE_ROLES}
    for label in labels.values():
        rt.keys.generate(label, KeyType.ECDSA_P256)
    return labels


def _online_keys(rt: Runtime, labels: dict[str, str]) -> dict[str, list[Key]]:
    return {role: [_online_signer(rt, labels[role]).public_key] for role in t.ONLINE_ROLES}


# --------------------------------------------------------------------------- use cases


def init_repository(rt: Runtime, *, root_keys: Sequence[KeyFile], root_threshold: int,
                    targets_keys: Sequence[KeyFile], targets_threshold: int,
                    firmware_keys: Sequence[TrustedKey], expiry: t.Expiry | None = None
                    ) -> Outcome:
    """Create the repository: online keys in custody, root and (empty) targets version 1,
    signed now with whatever private keys were given, staged otherwise."""
    repo = _Repo(rt)
    if not firmware_keys:
        raise InvalidInputError("the repository needs the public key(s) images are signed with",
                                hint="give --firmware-key PUB.pem")
    with repo.locked():
        if repo.exists:
            raise ConflictError(f"an update repository already exists in {repo.dir}",
                                hint="see 'iotsec ota repo status'")
        expiry = expiry or t.Expiry()
        labels = _new_online_keys(rt)
        now = rt.now()
        keys = {t.ROOT: [k.public for k in root_keys],
                t.TARGETS: [k.public for k in targets_keys], **_online_keys(rt, labels)}
        root = t.sign(t.new_root(keys=keys, thresholds={t.ROOT: root_threshold,
                                                        t.TARGETS: targets_threshold},
                                 now=now, expiry=expiry), _signers(root_keys))
        targets = t.sign(t.new_targets(None, now=now, expiry=expiry), _signers(targets_keys))
        config = _Config(expiry=expiry, online=labels,
                         firmware_keys=[public_pem(k.public_key).decode() for k in firmware_keys])
        repo.save_config(config)
        for md in (root, targets):
            repo.write(repo.staged / f"1.{md.signed.type}.json", t.serialize(md))
        outcome = _advance(repo, config)
    rt.events.record(Event(rt.now(), "ota.repository", "success", subject=str(repo.dir),
                           detail={"action": "init", "published": list(outcome.published)}))
    return outcome


def _advance(repo: _Repo, config: _Config) -> Outcome:
    """Import every staged file that now meets its threshold; then (re)publish snapshot and
    timestamp if anything changed. Caller holds the lock."""
    published: list[str] = []
    staged: list[tuple[str, str]] = []
    now = repo.rt.now()
    for role in t.OFFLINE_ROLES:
        while (path := repo.staged_path(role)) is not None:
            md = t.load(path.read_bytes(), role)
            trusted = repo.root()
            if role == t.TARGETS and trusted is None:
                staged.append((str(path), "waiting for the root"))
                break
            anchor: Root = trusted.signed if role == t.TARGETS and trusted else md.signed
            count, need = t.signature_count(anchor, role, md)
            if role == t.ROOT and trusted is not None:
                count2, need2 = t.signature_count(trusted.signed, t.ROOT, md)
                count, need = min(count, count2), max(need, need2)
            if count < need:
                staged.append((str(path), f"{count} of {need} signatures"))
                break
            _import(repo, config, md, now)
            path.unlink()
            published.append(f"{md.signed.version}.{role}.json")
    if repo.root() is not None and repo.targets_md() is not None:
        published.extend(_refresh(repo, config, force=bool(published)))
    return Outcome(tuple(published), tuple(staged))


def _import(repo: _Repo, config: _Config, md: Metadata[Any], now: datetime) -> None:
    role = md.signed.type
    if role == t.ROOT:
        current = repo.root()
        t.check_root(current.signed if current is not None else None, md, now)
        repo.publish_metadata(md)
        pending = config.pending_online.pop(str(md.signed.version), None)
        if pending is not None:
            config.online = pending
        repo.save_config(config)
        return
    current_targets = repo.targets_md()
    t.check_targets(repo.trusted_root(), current_targets.signed.version
                    if current_targets is not None else 0, md, now)
    for path, target in md.signed.targets.items():
        stored = repo.target_file(path, target.hashes["sha256"])
        if not stored.exists() or stored.stat().st_size != target.length:
            raise TufMetadataError(f"the targets metadata lists {path}, which the repository "
                                   "does not hold", hint="publish the image with 'iotsec "
                                   "firmware publish' before signing its metadata")
    repo.publish_metadata(md)
    _record_releases(repo.rt, current_targets.signed if current_targets else None, md.signed)


def _record_releases(rt: Runtime, before: Targets | None, after: Targets) -> None:
    rows = []
    for path, target in after.targets.items():
        if "/channels/" not in path:
            continue
        old = before.targets.get(path) if before is not None else None
        if old is not None and old.custom == target.custom:
            continue
        release = t.Release.from_custom(target.custom)
        image = after.targets[release.target]
        rows.append({"product": release.product, "channel": release.channel,
                     "version": str(release.version),
                     "security_counter": release.security_counter,
                     "target_path": release.target, "sha256": image.hashes["sha256"],
                     "length": image.length, "hardware": json.dumps(list(release.hardware)),
                     "targets_version": after.version, "published_at": release.published_at})
    if rows:
        with transaction(rt.engine) as conn:
            conn.execute(insert(m.ota_releases), rows)


def _refresh(repo: _Repo, config: _Config, *, force: bool) -> list[str]:
    """Re-sign snapshot (when targets moved or half its life is gone) and timestamp (when
    the snapshot moved or half its life is gone)."""
    now = repo.rt.now()
    targets = repo.targets_md()
    assert targets is not None
    snapshot: Metadata[Snapshot] | None = repo.read("snapshot.json", t.SNAPSHOT)
    timestamp: Metadata[Timestamp] | None = repo.read("timestamp.json", t.TIMESTAMP)
    done: list[str] = []

    def stale(md: Metadata[Any] | None, role: str) -> bool:
        return md is None or md.signed.expires - now < config.expiry.of(role) / 2

    root = repo.trusted_root()
    keys_moved = any(
        md is not None and not set(md.signatures) & set(root.roles[role].keyids)
        for md, role in ((snapshot, t.SNAPSHOT), (timestamp, t.TIMESTAMP)))
    snap_bytes: bytes | None = None
    if (force or keys_moved or stale(snapshot, t.SNAPSHOT) or snapshot is None
            or snapshot.signed.meta["targets.json"].version != targets.signed.version):
        version = snapshot.signed.version + 1 if snapshot is not None else 1
        snapshot = t.sign(t.new_snapshot(version, targets.signed.version, now=now,
                                         expiry=config.expiry),
                          [_online_signer(repo.rt, config.online[t.SNAPSHOT])])
        snap_bytes = repo.publish_metadata(snapshot)
        done.append(f"{version}.snapshot.json")
    assert snapshot is not None
    if snap_bytes is not None or keys_moved or stale(timestamp, t.TIMESTAMP):
        if snap_bytes is None:
            snap_bytes = (repo.metadata / f"{snapshot.signed.version}.snapshot.json").read_bytes()
        version = timestamp.signed.version + 1 if timestamp is not None else 1
        timestamp = t.sign(t.new_timestamp(version, snapshot.signed.version, snap_bytes,
                                           now=now, expiry=config.expiry),
                           [_online_signer(repo.rt, config.online[t.TIMESTAMP])])
        repo.publish_metadata(timestamp, versioned=False)
        done.append("timestamp.json")
    return done


def refresh(rt: Runtime, *, force: bool = False) -> list[str]:
    """Re-sign the online roles if due (run it from cron, or let the server do it when a
    device asks for the timestamp). Returns the files written."""
    repo = _Repo(rt)
    with repo.locked():
        config = repo.config()
        if repo.root() is None or repo.targets_md() is None:
            raise OtaRepositoryError("the repository has no signed root and targets yet",
                                     hint="import the signed staged metadata first")
        return _refresh(repo, config, force=force)


def import_metadata(rt: Runtime, data: bytes) -> Outcome:
    """Import a root or targets file signed offline: it replaces the staged one of the same
    version; what meets its threshold is published (with fresh snapshot and timestamp)."""
    repo = _Repo(rt)
    role = t.role_of(data)
    if role not in t.OFFLINE_ROLES:
        raise TufMetadataError(f"{role} metadata is signed online; only root and targets are "
                               "imported")
    md = t.load(data, role)
    with repo.locked():
        config = repo.config()
        staged = repo.staged / f"{md.signed.version}.{role}.json"
        if staged.exists():
            base = t.load(staged.read_bytes(), role)
            if base.signed_bytes != md.signed_bytes:
                raise TufMetadataError(f"the signed {role} differs from the staged version "
                                       f"{md.signed.version}", hint="sign the staged file as "
                                       "it is; any change needs a new staged version")
            for sig in md.signatures.values():
                base.signatures[sig.keyid] = sig
            md = base
        else:
            # Not staged here (or already published): it must stand on its own now.
            _import(repo, config, md, rt.now())
            outcome = _advance(repo, config)
            return Outcome((f"{md.signed.version}.{role}.json", *outcome.published),
                           outcome.staged)
        repo.write(staged, t.serialize(md))
        outcome = _advance(repo, config)
        waiting = dict(outcome.staged).get(str(staged))
        if waiting is not None:
            raise TufThresholdError(
                f"{role} metadata version {md.signed.version} is signed by {waiting}; the "
                "signatures given were kept with the staged file",
                hint="have more key holders sign it ('iotsec ota metadata sign') and import "
                "it again")
    rt.events.record(Event(rt.now(), "ota.repository", "success", subject=role,
                           detail={"action": "import", "published": list(outcome.published)}))
    return outcome


def rotate_keys(rt: Runtime, *, root_signers: Sequence[KeyFile] = (), online: bool = False,
                root_keys: Sequence[KeyFile] | None = None, root_threshold: int | None = None,
                targets_keys: Sequence[KeyFile] | None = None,
                targets_threshold: int | None = None) -> Outcome:
    """Stage the next root version: fresh online keys (``online``), other root or targets
    keys and thresholds. Signed with ``root_signers`` (old and new root keys, as many as
    the thresholds need), published when both thresholds are met, staged otherwise."""
    repo = _Repo(rt)
    with repo.locked():
        config = repo.config()
        if repo.staged_path(t.ROOT) is not None:
            raise ConflictError("a new root is already staged",
                                hint="sign and import it first, or remove tuf/staged/*.root.json")
        current = repo.trusted_root()
        replace: dict[str, list[Key]] = {}
        if online:
            labels = _new_online_keys(rt)
            config.pending_online[str(current.version + 1)] = labels
            replace.update(_online_keys(rt, labels))
        if root_keys is not None:
            replace[t.ROOT] = [k.public for k in root_keys]
        if targets_keys is not None:
            replace[t.TARGETS] = [k.public for k in targets_keys]
        if not replace and root_threshold is None and targets_threshold is None:
            raise InvalidInputError("nothing to rotate", hint="give --online, --root-key, "
                                    "--targets-key or a threshold")
        thresholds = {r: v for r, v in ((t.ROOT, root_threshold),
                                        (t.TARGETS, targets_threshold)) if v is not None}
        md = t.sign(t.next_root(current, now=rt.now(), expiry=config.expiry, replace=replace,
                                thresholds=thresholds), _signers(root_signers))
        repo.save_config(config)
        repo.write(repo.staged / f"{md.signed.version}.root.json", t.serialize(md))
        outcome = _advance(repo, config)
    rt.events.record(Event(rt.now(), "ota.repository", "success", subject="root",
                           detail={"action": "rotate", "roles": sorted(replace),
                                   "published": list(outcome.published)}))
    return outcome


def firmware_keys(rt: Runtime) -> list[TrustedKey]:
    return [TrustedKey.from_bytes(pem.encode()) for pem in _Repo(rt).config().firmware_keys]


def _copy_hashed(src: BinaryIO, size: int, repo: _Repo) -> tuple[Path, str]:
    staging = repo.targets / f".incoming.{os.getpid()}.{secrets.token_hex(4)}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    copied = 0
    with staging.open("wb") as out:
        while chunk := src.read(_CHUNK):
            copied += len(chunk)
            if copied > size:
                break
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if copied != size:
        staging.unlink()
        raise ConflictError("the image changed while it was being published",
                            hint="publish it again")
    return staging, digest.hexdigest()


def publish_image(rt: Runtime, path: Path, *, product: str, channel: str,
                  hardware: Sequence[str], targets_signers: Sequence[KeyFile] = (),
                  force: bool = False) -> Outcome:
    """Verify an image against the repository's image keys, copy it into the repository
    and list it in a new targets version (with the channel pointer moved to it). Signed
    and published at once when the targets keys were given, staged otherwise."""
    product = t.parse_name(product, "product")
    channel = t.parse_name(channel, "channel")
    hardware = tuple(sorted({t.parse_name(h, "hardware") for h in hardware}))
    if not hardware:
        raise InvalidInputError("name the hardware the image is built for",
                                hint="give --hardware REV (repeat for several)")
    repo = _Repo(rt)
    try:
        src = path.open("rb")
    except FileNotFoundError:
        raise NotFoundError(f"image {path} does not exist", hint="check the path") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a directory", hint="give an image file") from None
    with src, repo.locked():
        size = os.fstat(src.fileno()).st_size
        if size > MAX_IMAGE:
            raise InvalidInputError(f"the image is {size} bytes; the limit is {MAX_IMAGE}")
        config = repo.config()
        verified = verify_image(src, firmware_keys(rt), 0, max_image_size=size)
        staged_path = repo.staged_path(t.TARGETS)
        base_md = (t.load(staged_path.read_bytes(), t.TARGETS) if staged_path is not None
                   else repo.targets_md())
        base = base_md.signed if base_md is not None else None
        release = t.Release(product=product, version=verified.version,
                            security_counter=verified.security_counter, hardware=hardware,
                            channel=channel, target=t.image_path(product, verified.version),
                            image_hash=verified.digest.hex(), signed_by=verified.key.key_id,
                            published_at=ts(rt.now()))
        _check_channel(base, release, force)
        src.seek(0)
        incoming, sha256 = _copy_hashed(src, size, repo)
        existing = base.targets.get(release.target) if base is not None else None
        if existing is not None and existing.hashes.get("sha256") != sha256:
            incoming.unlink()
            raise ConflictError(f"{product} {verified.version} is already published with "
                                "other content", hint="give every build its own version")
        final = repo.target_file(release.target, sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(incoming, final)
        image: TargetFile = t.release_target(release, size, sha256)
        pointer, pointer_bytes = t.pointer_target(release)
        repo.write(repo.target_file(pointer.path, pointer.hashes["sha256"]), pointer_bytes)
        md = t.new_targets(base, now=rt.now(), expiry=config.expiry, add=[image, pointer])
        if base_md is not None and staged_path is not None:
            md.signed.version = base_md.signed.version  # replaces the unsigned staged draft
            staged_path.unlink()
        t.sign(md, _signers(targets_signers))
        repo.write(repo.staged / f"{md.signed.version}.targets.json", t.serialize(md))
        outcome = _advance(repo, config)
    rt.events.record(Event(rt.now(), "ota.publish", "success", subject=release.target,
                           detail={"product": product, "channel": channel,
                                   "version": str(release.version),
                                   "security_counter": release.security_counter,
                                   "staged": bool(outcome.staged)}))
    return Outcome(outcome.published, outcome.staged, release)


def _check_channel(base: Targets | None, release: t.Release, force: bool) -> None:
    head = t.channel_head(base, release.product, release.channel) if base else None
    if head is None or force:
        return
    older = release.version < head.version
    lower = (head.security_counter or 0) > (release.security_counter or 0)
    if older or lower:
        raise ReleaseDowngradeError(
            f"channel {release.channel} of {release.product} serves {head.version} (security "
            f"counter {head.security_counter}); {release.version} (security counter "
            f"{release.security_counter}) is older")
    if release.version == head.version:
        raise ConflictError(f"channel {release.channel} already serves {head.version}",
                            hint="publish a new version")


@dataclass(frozen=True)
class RoleStatus:
    role: str
    version: int | None
    expires: str | None
    threshold: int
    keys: tuple[str, ...]


@dataclass(frozen=True)
class RepoStatus:
    directory: str
    roles: tuple[RoleStatus, ...]
    staged: tuple[tuple[str, str], ...]
    releases: tuple[t.Release, ...]


def status(rt: Runtime) -> RepoStatus:
    repo = _Repo(rt)
    repo.config()
    root = repo.root()
    anchor: Root | None = root.signed if root is not None else None
    staged: list[tuple[str, str]] = []
    for role in t.OFFLINE_ROLES:
        path = repo.staged_path(role)
        if path is None:
            continue
        md = t.load(path.read_bytes(), role)
        if role == t.ROOT:
            count, need = t.signature_count(md.signed, role, md)
            if root is not None:
                old_count, old_need = t.signature_count(root.signed, role, md)
                count, need = min(count, old_count), max(need, old_need)
            anchor = anchor or md.signed
        elif anchor is not None:
            count, need = t.signature_count(anchor, role, md)
        else:
            staged.append((str(path), "waiting for the root"))
            continue
        staged.append((str(path), f"{count} of {need} signatures"))
    roles = []
    files = {t.ROOT: "root.json", t.TARGETS: "targets.json", t.SNAPSHOT: "snapshot.json",
             t.TIMESTAMP: "timestamp.json"}
    for role in t.ROLES:
        current = repo.read(files[role], role)
        spec = anchor.roles[role] if anchor is not None else None
        roles.append(RoleStatus(role, current.signed.version if current else None,
                                current.signed.expires.isoformat() if current else None,
                                spec.threshold if spec else 0,
                                tuple(k[:16] for k in spec.keyids) if spec else ()))
    targets = repo.targets_md()
    found = tuple(r for _, r in t.releases(targets.signed)) if targets is not None else ()
    return RepoStatus(str(repo.dir), tuple(roles), tuple(staged), found)


def metadata_file(rt: Runtime, name: str) -> Path:
    """The published metadata file ``name`` (e.g. ``3.root.json``, ``timestamp.json``) for
    serving; the timestamp is refreshed first when it is due."""
    if not _METADATA_NAME.fullmatch(name):
        raise NotFoundError(f"no metadata file {name[:80]!r}")
    repo = _Repo(rt)
    if name == "timestamp.json" and repo.exists:
        with contextlib.suppress(OtaRepositoryError):
            refresh(rt)
    path = repo.metadata / name
    if not path.is_file():
        raise NotFoundError(f"no metadata file {name}")
    return path


def target_file(rt: Runtime, path: str) -> Path:
    """A published target file (``PRODUCT/SHA256.NAME`` or under ``channels/``)."""
    directory, _, name = path.rpartition("/")
    hashed, _, base = name.partition(".")
    try:
        t.check_target_path(f"{directory}/{base}")
    except TufMetadataError:
        raise NotFoundError("no such target") from None
    repo = _Repo(rt)
    if len(hashed) != 64 or not all(c in "0123456789abcdef" for c in hashed):
        raise NotFoundError("no such target")
    found = repo.target_file(f"{directory}/{base}", hashed)
    if not found.is_file():
        raise NotFoundError("no such target")
    return found
